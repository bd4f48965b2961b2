"""The ``unlearnops`` command line: one Typer app; step commands plug in by entry point.

The core's own commands live beside this file (:mod:`.data`); :mod:`.params` parses the
``KEY=VALUE`` options every command shares.

The core never imports ``unlearnops.components``: each step's ``cli.py`` registers its
commands on the apps here, and is found through the ``unlearnops.cli`` entry-point group.
Exit codes: 0 ok, 1 error, 2 bad usage/input, 3 gate failed.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import typer
from rich.console import Console
from rich.markup import escape

from ..masking import mask_secrets
from ..settings import apply_runtime_env

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_GATE_FAILED = 0, 1, 2, 3

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="unlearnops: make a language model forget, verifiably.")
request_app = typer.Typer(no_args_is_help=True, help="File and inspect forget requests (the ledger).")
benchmark_app = typer.Typer(no_args_is_help=True, help="The fictitious-people benchmark: data and models.")
scope_app = typer.Typer(no_args_is_help=True, help="Resolve requests to a DataScope.")
app.add_typer(request_app, name="request")
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(scope_app, name="scope")

err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``message`` to stderr and return the Exit to raise (``raise fail(...)``)."""
    message = escape(mask_secrets(message))  # user text is printed literally, never as markup
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


CORE_COMMANDS = ("local_ray",)  # core sub-apps registered here; steps come by entry point


def _load_plugins() -> None:
    from importlib import import_module

    for name in CORE_COMMANDS:
        import_module(f"{__name__}.{name}")
    for ep in sorted(entry_points(group="unlearnops.cli"), key=lambda e: e.name):
        ep.load()


def settings_problem() -> str:
    """What is wrong with the settings (environment, settings file), or '' when they load."""
    from pydantic import ValidationError

    from ..settings import SettingsFileError, get_settings

    try:
        get_settings()
    except SettingsFileError as err:
        return str(err)
    except ValidationError as err:
        return "; ".join(
            f"setting {'.'.join(map(str, e['loc']))} (UNLEARNOPS_{'__'.join(map(str, e['loc'])).upper()} "
            f"or the settings file): {e['msg'].removeprefix('Value error, ')}" for e in err.errors())
    return ""


def command_line(*args: str) -> list[str]:
    """``unlearnops ARGS…`` as a child process's argv: this interpreter, whatever the console
    script is named or wherever it is (the warm runner's fingerprint sees the same interpreter)."""
    return [sys.executable, "-c", "from unlearnops.cli import main; main()", *args]


#: the arguments :func:`main` was called with (a command may hand itself on as it was given)
invocation: list[str] = []


def main(argv: list[str] | None = None) -> None:
    """``unlearnops ARGS…`` (``argv``, default ``sys.argv[1:]``); exits with the command's status."""
    invocation[:] = sys.argv[1:] if argv is None else list(argv)
    apply_runtime_env()
    problem = settings_problem()
    if problem:
        sys.exit(fail(problem).exit_code)
    _load_plugins()
    try:
        app(args=list(invocation), prog_name="unlearnops")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
