"""``unlearnops request file|list|show``: the request ledger on the command line.

The ledger is the one named by settings (``UNLEARNOPS_LEDGER_URL``; default a SQLite file
under ``UNLEARNOPS_HOME``). A malformed request file exits 2 with a message naming the field,
and nothing is written: all requests of a file are filed in one transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .cli import EXIT_BAD_INPUT, EXIT_ERROR, fail, request_app
from .ledger import (
    DuplicateRequest,
    Ledger,
    LedgerError,
    RequestFileError,
    RequestNotFound,
    load_request_file,
)
from .settings import get_settings
from .types import ForgetRequest, RequestStatus

console = Console()


def _open_ledger() -> Ledger:
    try:
        return Ledger(get_settings().ledger_sqlalchemy_url)
    except Exception as err:  # a bad URL, an unreachable server, an unwritable folder
        raise fail(f"cannot open the ledger {get_settings().ledger_sqlalchemy_url!r}: {err}; "
                   "check UNLEARNOPS_LEDGER_URL", EXIT_ERROR) from err


def _when(value: datetime | None, fmt: str = "%Y-%m-%d") -> str:
    return value.strftime(fmt) if value else "-"


def _table(reqs: list[ForgetRequest], title: str) -> Table:
    table = Table(title=title, caption="dates in UTC", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("id", "kind", "status", "basis", "requester", "received", "deadline"):
        table.add_column(column, no_wrap=column != "requester", overflow="fold")
    for r in reqs:
        table.add_row(r.id, r.kind.value, r.status.value, r.legal_basis.value, r.requester,
                      _when(r.received_at), _when(r.deadline))
    return table


def _dump(reqs: list[ForgetRequest] | ForgetRequest) -> str:
    if isinstance(reqs, ForgetRequest):
        return reqs.model_dump_json(indent=2)
    return json.dumps([r.model_dump(mode="json") for r in reqs], indent=2)


@request_app.command("file")
def file_requests(
    path: Annotated[str, typer.Argument(
        help="YAML or JSON file (path, file:// or s3://): one request or a list")],
    json_out: Annotated[bool, typer.Option("--json", help="print the filed requests as JSON")] = False,
) -> None:
    """File forget requests from a YAML/JSON file into the ledger (all or none)."""
    try:
        reqs = load_request_file(path)
    except RequestFileError as err:
        raise fail(f"{err}\nnothing was filed; fix the file and run the command again",
                   EXIT_BAD_INPUT) from None
    with _open_ledger() as ledger:
        try:
            filed = ledger.file_many(reqs)
        except (DuplicateRequest, LedgerError) as err:
            raise fail(f"{path}: {err}\nnothing was filed", EXIT_BAD_INPUT) from None
    if json_out:
        typer.echo(_dump(filed))
        return
    console.print(_table(filed, f"filed {len(filed)} request(s)"))


@request_app.command("list")
def list_requests(
    status: Annotated[RequestStatus | None, typer.Option("--status", "-s", help="only this status")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the requests in the ledger (oldest first)."""
    with _open_ledger() as ledger:
        reqs = ledger.list(status)
    if json_out:
        typer.echo(_dump(reqs))
        return
    if not reqs:
        console.print(f"no requests{f' with status {status.value}' if status else ''} in the ledger")
        return
    console.print(_table(reqs, f"{len(reqs)} request(s)"))


@request_app.command("show")
def show_request(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="the request id")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Show one request: its selectors, legal basis, deadline and status history."""
    with _open_ledger() as ledger:
        try:
            req = ledger.get(request_id)
        except RequestNotFound as err:
            raise fail(f"{err}; see `unlearnops request list`", EXIT_ERROR) from None
    if json_out:
        typer.echo(_dump(req))
        return
    console.print(_table([req], f"request {req.id}"))
    selectors = {k: v for k, v in req.selectors.model_dump().items() if v}
    console.print(f"selectors: {json.dumps(selectors)}", highlight=False)
    console.print(f"received: {_when(req.received_at, '%Y-%m-%d %H:%M:%S')} UTC   "
                  f"deadline: {_when(req.deadline, '%Y-%m-%d %H:%M:%S')} UTC", highlight=False)
    if req.legal_basis_detail:
        console.print(f"legal basis detail: {req.legal_basis_detail}", highlight=False)
    history = Table(title="history")
    for column in ("at (UTC)", "status", "reason", "actor"):
        history.add_column(column)
    for change in req.history:
        history.add_row(change.at.strftime("%Y-%m-%d %H:%M:%S"), change.status.value,
                        change.reason, change.actor)
    console.print(history)
