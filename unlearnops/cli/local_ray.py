"""``unlearnops ray start|status|stop``: the long-lived local Ray runs attach to (:mod:`..local_ray`).

Exit codes: 0 ok (``start`` when one already runs, ``stop`` when none runs), 1 Ray failed to
start or stop, 2 ``status`` found none.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import local_ray
from . import EXIT_BAD_INPUT, EXIT_ERROR, app, fail

ray_app = typer.Typer(no_args_is_help=True,
                      help="A long-lived local Ray (own temp folder, dashboard off) runs attach to.")
app.add_typer(ray_app, name="ray")


def _export(found: local_ray.LocalRay) -> str:
    return f"export UNLEARNOPS_RAY_ADDRESS={found.address}"


@ray_app.command("start")
def start(num_cpus: Annotated[int | None, typer.Option(help="CPUs Ray may use (default: all cores)")] = None,
          timeout: Annotated[float, typer.Option(help="seconds to wait for the head")] = 120.0) -> None:
    """Start the local Ray (or report the running one) and print the line that attaches to it."""
    try:
        found, started = local_ray.start(num_cpus, timeout)
    except local_ray.LocalRayError as err:
        raise fail(str(err), EXIT_ERROR) from err
    typer.echo(f"# {'started' if started else 'already running'}: pid {found.pid}, temp {found.temp_dir}",
               err=True)
    typer.echo(_export(found))


@ray_app.command("status")
def status() -> None:
    """Print the running local Ray's address (exit 2 when none runs)."""
    found = local_ray.current()
    if found is None:
        raise fail("no local Ray is running (start one: unlearnops ray start)", EXIT_BAD_INPUT)
    typer.echo(f"# running: pid {found.pid}, temp {found.temp_dir}", err=True)
    typer.echo(_export(found))


@ray_app.command("stop")
def stop() -> None:
    """Stop the local Ray by its pid and remove its temp folder (nothing to do when none runs)."""
    try:
        found = local_ray.stop()
    except local_ray.LocalRayError as err:
        raise fail(str(err), EXIT_ERROR) from err
    typer.echo(f"stopped the local Ray (pid {found.pid})" if found else "no local Ray was running")
