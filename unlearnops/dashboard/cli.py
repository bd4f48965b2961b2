"""``unlearnops dashboard serve | token create | token list | token revoke``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..cli import EXIT_BAD_INPUT, EXIT_ERROR, app, fail
from ..cli.params import absolute_uri, parse_assignments
from ..keyed_hash import current_actor
from ..pipelines.run_request import DEFAULT_METHOD

dashboard_app = typer.Typer(no_args_is_help=True, help="The web dashboard and REST API.")
token_app = typer.Typer(
    no_args_is_help=True, help="API tokens (roles viewer, requester, approver, operator)."
)
dashboard_app.add_typer(token_app, name="token")
app.add_typer(dashboard_app, name="dashboard")
console = Console()


def _store():  # type: ignore[no-untyped-def]
    from ..ledger import Ledger
    from ..settings import get_settings
    from .store import Store

    try:
        return Store(Ledger())
    except Exception as err:  # a bad URL, an unreachable server, an unwritable folder
        raise fail(
            f"cannot open the ledger {get_settings().ledger_sqlalchemy_url!r}: {err}; "
            "check UNLEARNOPS_LEDGER_URL",
            EXIT_ERROR,
        ) from err


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="who acts with it (the audit trail's actor)")],
    role: Annotated[str, typer.Option("--role", help="viewer, requester, approver or operator")],
) -> None:
    """Create a token and print it once (only its SHA-256 is stored)."""
    from .auth import create_token, parse_role

    try:
        parsed = parse_role(role)
        store = _store()
        token, info = create_token(store, name, parsed, current_actor())
    except ValueError as err:
        raise fail(str(err), EXIT_BAD_INPUT) from None
    store.record_action(current_actor(), "token-create", info.id, f"{info.name} ({info.role.value})")
    console.print(
        Text(f"token {info.id} for {info.name} ({info.role.value}); shown once, keep it secret:"),
        highlight=False,
    )
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    """Tokens: id, name, role, created, revoked (never the token)."""
    from .auth import list_tokens

    table = Table("id", "name", "role", "created", "by", "revoked")
    for t in list_tokens(_store()):
        table.add_row(
            t.id,
            Text(t.name),
            t.role.value,
            t.created_at[:19],
            Text(t.created_by),
            "yes" if t.revoked else "",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="the id `token list` shows")],
) -> None:
    """Revoke a token: its next request is refused (401)."""
    from .auth import revoke_token

    store = _store()
    if not revoke_token(store, token_id):
        raise fail(f"no live token {token_id!r}; see `unlearnops dashboard token list`")
    store.record_action(current_actor(), "token-revoke", token_id)
    typer.echo(f"token {token_id} revoked")


@dashboard_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8600,
    model_name: Annotated[str, typer.Option(help="registered model the runs unlearn")] = "unlearnops-model",
    corpus: Annotated[str | None, typer.Option(help="corpus URI (default STORAGE_ROOT/corpus)")] = None,
    reference: Annotated[str, typer.Option(help="retain-only reference model URI")] = "",
    method: Annotated[str, typer.Option(help="default unlearning method of a run")] = DEFAULT_METHOD,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="method parameter KEY=VALUE")
    ] = None,
    policy: Annotated[str, typer.Option(help="gate policy: default, strict, lenient or a file")] = "default",
) -> None:
    """Serve the dashboard and API (OpenAPI at /api/openapi.json) with the run worker and scheduler."""
    import uvicorn

    from .app import create_app
    from .runs import RunDefaults

    try:
        parse_assignments(param)  # malformed KEY=VALUE: exit 2 before anything starts
    except ValueError as err:
        raise fail(str(err)) from None
    params = dict(item.split("=", 1) for item in param or [])
    if Path(policy).is_file():  # `unlearnops run --policy FILE` reads it; a cluster run gets its text
        policy = str(Path(policy).absolute())
    defaults = RunDefaults(
        model_name=model_name,
        corpus_uri=absolute_uri(corpus) if corpus else "",
        reference_uri=absolute_uri(reference) if reference else "",
        method=method,
        params=params,
        policy=policy,
    )
    console.print(f"unlearnops dashboard on http://{host}:{port}/ (API: /api/v1, OpenAPI: /api/openapi.json)")
    uvicorn.run(create_app(defaults), host=host, port=port, log_level="warning", access_log=False)
