"""The request queue: filters, days left, on-time / due-soon / overdue, CSV export.

Sorted by days left to the effective deadline (:mod:`unlearnops.deadlines`; none last). Each row
shows the statutory (effective) due date and the internal one, ``dashboard.internal_margin_days``
earlier, so a team acts before the legal limit. Unverified (``received``) requests are hidden
unless asked for. A requester sees only the requests it filed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from .. import deadlines
from ..ledger import Ledger
from ..settings import get_settings
from ..types import FINAL_STATUSES, ForgetRequest, LegalBasis, RequestKind, RequestStatus, utcnow
from .auth import Principal


class QueueFilter(BaseModel):
    """What the queue shows; every field round-trips through the page's URL."""

    status: list[RequestStatus] = Field(default_factory=list, description="empty: every status")
    regime: list[LegalBasis] = Field(default_factory=list)
    kind: list[RequestKind] = Field(default_factory=list)
    overdue: bool = False
    q: str = Field("", max_length=128, description="id or external reference (substring)")
    unverified: bool = Field(False, description="include requests not yet verified (received)")
    page: int = Field(1, ge=1, le=100_000)

    def statuses(self) -> list[RequestStatus]:
        """The statuses asked for: received only when asked, never a final one when overdue."""
        chosen = list(self.status) or [s for s in RequestStatus
                                       if self.unverified or s != RequestStatus.received]
        return [s for s in chosen if not (self.overdue and s in FINAL_STATUSES)]

    def fetch(self, ledger: Ledger, who: Principal, now: datetime, limit: int,
              offset: int) -> tuple[list[ForgetRequest], int]:
        """The matching requests ``who`` may see, soonest deadline first, and how many in all."""
        return ledger.page(statuses=self.statuses(), regimes=[r.value for r in self.regime],
                           kinds=[k.value for k in self.kind], text=self.q,
                           due_before=now if self.overdue else None,
                           filed_by="" if who.sees_all else who.name, limit=limit, offset=offset)


@dataclass
class QueueRow:
    id: str
    status: str
    kind: str
    regime: str
    external_ref: str
    received_at: datetime
    due_at: datetime | None
    internal_due_at: datetime | None
    days_left: int | None
    flag: str  # on-time | due-soon | overdue | "" (final status or no deadline)
    expected_at: datetime | None
    filed_by: str


@dataclass
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int
    filters: QueueFilter
    counts: dict[str, int] = field(default_factory=dict)


def internal_due(due: datetime | None) -> datetime | None:
    return None if due is None else due - timedelta(days=get_settings().dashboard.internal_margin_days)


def row_of(req: ForgetRequest, now: datetime) -> QueueRow:
    final = req.status in FINAL_STATUSES
    flag = "" if final or req.due_at is None else (deadlines.flag(req.due_at, now) or "on-time")
    return QueueRow(req.id, req.status.value, req.kind.value, req.legal_basis.value, req.external_ref,
                    req.received_at, req.due_at, internal_due(req.due_at),
                    None if final else deadlines.days_left(req.due_at, now), flag, req.expected_at,
                    req.filed_by)


def queue_page(ledger: Ledger, filters: QueueFilter, who: Principal) -> QueuePage:
    """One page of the queue for ``who`` (a requester's view holds only what it filed)."""
    size = get_settings().dashboard.page_size
    now = utcnow()
    reqs, total = filters.fetch(ledger, who, now, size, (filters.page - 1) * size)
    rows = [row_of(r, now) for r in reqs]
    return QueuePage(rows, total, filters.page, max(1, -(-total // size)), filters)


CSV_COLUMNS = ("id", "status", "kind", "regime", "external_ref", "received_at", "due_at", "internal_due_at",
               "days_left", "flag", "expected_at")


def queue_csv(ledger: Ledger, filters: QueueFilter, who: Principal) -> Iterator[str]:
    """Every request matching ``filters`` as CSV (header first), a chunk per page of 500."""
    now, offset, chunk = utcnow(), 0, 500
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    while True:
        reqs, total = filters.fetch(ledger, who, now, chunk, offset)
        out.seek(0)
        out.truncate()
        for req in reqs:
            row = row_of(req, now)
            writer.writerow([_csv_cell(getattr(row, c)) for c in CSV_COLUMNS])
        yield out.getvalue()
        offset += chunk
        if offset >= total or not reqs:
            return


def _csv_cell(value: object) -> str:
    """A CSV cell; text that a spreadsheet would run as a formula is prefixed with a quote."""
    text = value.isoformat() if isinstance(value, datetime) else "" if value is None else str(value)
    formula = text[:1] in ("=", "+", "-", "@", "\t", "\r") and not text.lstrip("-").isdigit()
    return "'" + text if formula else text
