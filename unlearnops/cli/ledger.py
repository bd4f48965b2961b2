"""``unlearnops request …`` and ``unlearnops audit verify``: the request ledger on the command line.

The ledger is the one named by settings (``UNLEARNOPS_LEDGER_URL``; default a SQLite file
under ``UNLEARNOPS_HOME``). Every command acts as the configured user (``UNLEARNOPS_ACTOR``) or
the OS user, recorded in the audit trail. A malformed request file exits 2 with a message naming
the field, and nothing is written (all requests of a file are filed in one transaction). A move
a guard refuses (self-approval, running unapproved, ...) exits 2 and changes nothing. User text
is always printed literally (never as rich markup).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import deadlines
from ..keyed_hash import current_actor, short
from ..ledger import (
    DuplicateRequest,
    Ledger,
    LedgerError,
    RequestFileError,
    RequestNotFound,
    StatusConflict,
    load_request_file,
)
from ..masking import mask_secrets
from ..settings import get_settings
from ..types import DENY_CODES, HOLD_CODES, ForgetRequest, RequestStatus, utcnow
from . import EXIT_BAD_INPUT, EXIT_ERROR, app, fail, request_app

console = Console()
audit_app = typer.Typer(no_args_is_help=True, help="The ledger's tamper-evident audit trail.")
app.add_typer(audit_app, name="audit")


def _open_ledger() -> Ledger:
    try:
        return Ledger(get_settings().ledger_sqlalchemy_url)
    except Exception as err:  # a bad URL, an unreachable server, an unwritable folder
        raise fail(mask_secrets(f"cannot open the ledger {get_settings().ledger_sqlalchemy_url!r}: {err}; "
                                "check UNLEARNOPS_LEDGER_URL"), EXIT_ERROR) from err


def _when(value: datetime | None, fmt: str = "%Y-%m-%d") -> str:
    return value.strftime(fmt) if value else "-"


def _due(req: ForgetRequest, now: datetime) -> Text:
    """Days left to the effective deadline, styled: red when overdue, yellow when due soon."""
    if req.status in (RequestStatus.completed, RequestStatus.denied, RequestStatus.cancelled):
        return Text("-")
    left, flag = deadlines.days_left(req.due_at, now), deadlines.flag(req.due_at, now)
    if left is None:
        return Text("-")
    return Text(f"{left}d {flag}".strip(), style={"overdue": "bold red", "due-soon": "yellow"}.get(flag, ""))


def _expected_source(req: ForgetRequest, batch_cron: str | None) -> str:
    """Where the expected completion date comes from (see deadlines.expected_completion)."""
    if batch_cron and req.status in deadlines.WAITING_FOR_BATCH:
        return f"next compliance-batch run, batch_cron {batch_cron!r}"
    return "request schedule --at"


def _table(reqs: list[ForgetRequest], title: str) -> Table:
    now = utcnow()
    table = Table(title=title, caption="dates in UTC; due = effective deadline (regime, extension); "
                                       "expected = next compliance-batch run (batch_cron) or --at",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    expected = any(r.expected_at for r in reqs)
    columns = ["id", "status", "basis", "ext. ref", "received", "due", "left"] + (["expected"] * expected)
    for column in columns:  # only free text folds; statuses, dates and flags stay on one line
        table.add_column(column, overflow="fold", no_wrap=column not in ("id", "ext. ref"))
    for r in reqs:  # Text(): user text is shown literally, never parsed as markup
        row = [Text(r.id), r.status.value, r.legal_basis.value, Text(r.external_ref or "-"),
               _when(r.received_at), _when(r.due_at), _due(r, now)]
        table.add_row(*row, *([_when(r.expected_at)] * expected))
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
    """File forget requests from a YAML/JSON file into the ledger as 'received' (all or none)."""
    try:
        reqs = load_request_file(path)
    except RequestFileError as err:
        raise fail(f"{err}\nnothing was filed; fix the file and run the command again",
                   EXIT_BAD_INPUT) from None
    with _open_ledger() as ledger:
        try:
            filed = ledger.file_many(reqs, actor=current_actor())
        except (DuplicateRequest, LedgerError) as err:
            raise fail(f"{path}: {err}\nnothing was filed", EXIT_BAD_INPUT) from None
    if json_out:
        typer.echo(_dump(filed))
        return
    console.print(_table(filed, f"filed {len(filed)} request(s)"))
    for r in filed:
        if r.duplicate_of:
            console.print(Text(f"note: {r.id} shares a selector with open request {r.duplicate_of} "
                               "(a possible duplicate); it needs its own verification"))


@request_app.command("list")
def list_requests(
    status: Annotated[RequestStatus | None, typer.Option("--status", "-s", help="only this status")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the requests (oldest first) with days left to the deadline; flags due-soon and overdue."""
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
    """Show one request: selector hashes, legal basis, deadlines and its audit trail."""
    with _open_ledger() as ledger:
        req = _get(ledger, request_id)
        batch_cron = ledger.batch_cron()  # the dashboard's schedule, else the setting
    if json_out:
        typer.echo(_dump(req))
        return
    console.print(_table([req], f"request {req.id}"))
    counts = {k: len(v) if isinstance(v, list) else 1 for k, v in req.selectors.model_dump().items() if v}
    selectors = "purged (final status)" if req.purged else json.dumps(counts)
    console.print(Text(f"requester: {req.requester}   filed by: {req.filed_by}   selectors: {selectors}"))
    console.print(Text(f"selector hashes: {', '.join(short(h) for h in req.selector_hashes)}"))
    console.print(Text(f"received: {_when(req.received_at, '%Y-%m-%d %H:%M')} UTC   due: "
                       f"{_when(req.due_at, '%Y-%m-%d %H:%M')} UTC{' (extended)' if req.extended else ''}"))
    if req.expected_at:
        console.print(Text(f"expected completion: {_when(req.expected_at, '%Y-%m-%d %H:%M')} UTC "
                           f"({_expected_source(req, batch_cron)})"))
    if req.legal_basis_detail:
        console.print(Text(f"legal basis detail: {req.legal_basis_detail}"))
    if req.duplicate_of:
        console.print(Text(f"possible duplicate of: {req.duplicate_of}"))
    history = Table(title="audit trail")
    for column in ("at (UTC)", "event", "status", "code", "reason", "actor", "model"):
        history.add_column(column)
    for c in req.history:
        reason = "; ".join([c.reason, *c.gate_reasons]) if c.gate_reasons else c.reason
        history.add_row(c.at.strftime("%Y-%m-%d %H:%M:%S"), c.event, c.status.value, Text(c.code),
                        Text(reason), Text(c.actor), Text(c.model_uri))
    console.print(history)


def _get(ledger: Ledger, request_id: str) -> ForgetRequest:
    try:
        return ledger.get(request_id)
    except RequestNotFound as err:
        raise fail(f"{err}; see `unlearnops request list`", EXIT_ERROR) from None


def _move(request_id: str, status: RequestStatus, reason: str, code: str = "",
          expected_at: datetime | None = None) -> None:
    """One status move as the current user; a refused move exits 2 and changes nothing."""
    with _open_ledger() as ledger:
        _get(ledger, request_id)
        try:
            req = ledger.set_status(request_id, status, reason, actor=current_actor(), code=code,
                                    expected_at=expected_at)
        except (LedgerError, StatusConflict) as err:
            raise fail(f"{err}\nnothing was changed", EXIT_BAD_INPUT) from None
    console.print(Text(f"{req.id}: {req.status.value}" + (" (raw selectors purged)" if req.purged else "")))


Reason = Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit trail)")]


@request_app.command("verify")
def verify_cmd(request_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason = "") -> None:
    """received → verified: the requester's identity (or authority) was checked."""
    _move(request_id, RequestStatus.verified, reason or "identity verified")


@request_app.command("approve")
def approve_cmd(request_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason = "") -> None:
    """verified → approved (never by the person who filed it); only approved requests run."""
    _move(request_id, RequestStatus.approved, reason or "approved")


def _coded_move(name: str, status: RequestStatus, codes: tuple[str, ...], doc: str) -> None:
    """Register ``request NAME ID --code CODE [-r REASON]``: a status move that needs a reason code."""
    def command(request_id: Annotated[str, typer.Argument(metavar="ID")],
                code: str = typer.Option(..., "--code", help=f"one of {', '.join(codes)}"),
                reason: Reason = "") -> None:
        _move(request_id, status, reason, code)

    command.__doc__ = doc
    request_app.command(name)(command)


_coded_move("deny", RequestStatus.denied, DENY_CODES,
            "Deny a request with a reason code (final: its raw selectors are purged).")


@request_app.command("cancel")
def cancel_cmd(request_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason = "") -> None:
    """Cancel a request (final: its raw selectors are purged); a reason is required."""
    _move(request_id, RequestStatus.cancelled, reason)


_coded_move("hold", RequestStatus.on_hold, HOLD_CODES,
            "Put a request on hold with a reason code; `resume` returns it to where it was.")


@request_app.command("resume")
def resume_cmd(request_id: Annotated[str, typer.Argument(metavar="ID")], reason: Reason = "") -> None:
    """Take a request off hold, back to the status it was held from."""
    with _open_ledger() as ledger:
        req = _get(ledger, request_id)
    held = [c for c in req.history if c.status == RequestStatus.on_hold]
    if req.status != RequestStatus.on_hold or not held:
        raise fail(f"request {request_id} is {req.status.value!r}, not on hold; nothing was changed")
    before = [c.status for c in req.history if c.event == "status" or c.event == "filed"]
    back = before[-2] if len(before) > 1 else RequestStatus.received
    _move(request_id, back, reason or "resumed")


@request_app.command("extend")
def extend_cmd(request_id: Annotated[str, typer.Argument(metavar="ID")],
               reason: Annotated[str, typer.Option("--reason", "-r",
                                                   help="why (told to the requester)")]) -> None:
    """Extend the statutory deadline once (GDPR/UK GDPR +2 months, CCPA +45 days), with a reason."""
    with _open_ledger() as ledger:
        _get(ledger, request_id)
        try:
            req = ledger.extend(request_id, reason, actor=current_actor())
        except LedgerError as err:
            raise fail(f"{err}\nnothing was changed", EXIT_BAD_INPUT) from None
    console.print(Text(f"{req.id}: due {_when(req.due_at)} (extended)"))


@request_app.command("schedule")
def schedule_cmd(request_id: Annotated[str, typer.Argument(metavar="ID")],
                 at: Annotated[datetime, typer.Option("--at", help="the batch run that will take it (UTC)")],
                 reason: Reason = "") -> None:
    """approved → scheduled for a batch run; the run time is the expected completion date."""
    _move(request_id, RequestStatus.scheduled, reason or "scheduled", expected_at=at)


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit trail's hash chain: exit 0 if intact, 1 naming each broken event."""
    with _open_ledger() as ledger:
        report = ledger.verify_chain()
    if not report.ok:
        for problem in report.problems:
            console.print(Text(f"✗ {problem}"))
        raise fail(f"audit trail broken: {len(report.problems)} problem(s) in {report.events} event(s)",
                   EXIT_ERROR)
    console.print(f"audit trail intact: {report.events} event(s), head {report.head[:16]}")
