"""A request's timeline: status changes, approvals, runs, gate results and comments, merged by time.

The staff view shows everything, actors included. The requester view (:attr:`Principal.sees_all`
false) shows the request's status changes without staff names or internal reasons, comments
marked visible to the requester, and its runs' outcomes without the other requests they covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select

from ..types import MAX_TEXT, ForgetRequest
from .auth import Principal
from .runs import list_runs
from .store import Store, comments_table, now_naive

VISIBILITIES = ("internal", "requester")


@dataclass
class Entry:
    at: datetime
    kind: str  # filed | status | extended | override | purged | scheduled | run | gates | comment
    title: str
    detail: str
    actor: str
    visibility: str = "internal"  # internal | requester


def add_comment(store: Store, request_id: str, actor: str, text: str, visibility: str) -> None:
    text = text.strip()
    if not text:
        raise ValueError("a comment needs text")
    if len(text) > MAX_TEXT:
        raise ValueError(f"a comment holds at most {MAX_TEXT} characters")
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}")
    if "\x00" in text:
        raise ValueError("a comment must not contain NUL characters")
    store.execute(insert(comments_table).values(request_id=request_id, at=now_naive(), actor=actor,
                                                visibility=visibility, text=text))


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def timeline(store: Store, req: ForgetRequest, who: Principal) -> list[Entry]:
    """Every event of ``req`` that ``who`` may see, oldest first."""
    staff = who.sees_all
    entries: list[Entry] = []
    for change in req.history:
        title = {"filed": "filed", "status": f"status → {change.status.value}",
                 "extended": "deadline extended", "purged": "selectors purged", "scheduled": "scheduled",
                 "override": "gate override",
                 "claim": "erasure claim upgraded"}.get(change.event, change.event)
        if not staff and change.event == "override":
            continue
        detail = " · ".join(x for x in (change.code, change.reason if staff else "") if x)
        if staff and change.gate_reasons:
            detail += (" · " if detail else "") + "failed gates: " + "; ".join(change.gate_reasons)
        if staff and change.model_uri:
            detail += (" · " if detail else "") + change.model_uri
        entries.append(Entry(_aware(change.at), change.event, title, detail, change.actor if staff else "",
                             "requester"))
    for row in store.rows(select(comments_table).where(comments_table.c.request_id == req.id)
                          .order_by(comments_table.c.id)):
        if staff or row.visibility == "requester":
            entries.append(Entry(_aware(row.at), "comment", "comment", row.text, row.actor if staff else "",
                                 row.visibility))
    for run in list_runs(store, request_id=req.id):
        others = len(run.request_ids) - 1
        scope = f" with {others} other request(s)" if others else ""
        detail = (f"{run.method}{scope}: {run.message}" if staff else run.status)
        title = f"run {run.id} {run.status}" if staff else f"run {run.status}"
        entries.append(Entry(_aware(run.created_at), "run", title, detail, run.actor if staff else "",
                             "requester"))
    return sorted(entries, key=lambda e: e.at)
