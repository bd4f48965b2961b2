"""Statutory response deadlines per regime, and their one extension.

- GDPR / UK GDPR (Art. 12(3)): one calendar month from receipt, extendable once by two further
  months with reasons. A month ends on the same day number of the next month, or on that
  month's last day when it has no such day (EU Regulation 1182/71, Art. 3(2)(c)): 31 January →
  28 (29) February.
- CCPA (Cal. Civ. Code §1798.130(a)(2)): 45 days from receipt, extendable once by 45 days.
- Other bases (copyright, safety, other) have no statutory clock: the requested deadline stands.

The expected completion of a request waiting for the batch (:func:`expected_completion`) is the
next run of the configured compliance-batch schedule, else the time given to ``request schedule --at``.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from . import cron
from .types import LegalBasis, RequestStatus

#: statuses a compliance-batch run picks up (``Ledger.pending_until``)
WAITING_FOR_BATCH = (RequestStatus.approved, RequestStatus.scheduled)

DUE_SOON = timedelta(days=7)


def add_months(when: datetime, months: int) -> datetime:
    """``when`` plus calendar months, clamped to the target month's last day."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def statutory_due(basis: LegalBasis, received: datetime, extended: bool = False) -> datetime | None:
    """The regime's due date for a request received at ``received`` (None: no statutory clock)."""
    if basis in (LegalBasis.gdpr_art17, LegalBasis.uk_gdpr):
        due = add_months(received, 1)
        return add_months(due, 2) if extended else due  # the earlier (safe) reading of "two further months"
    if basis == LegalBasis.ccpa:
        return received + timedelta(days=90 if extended else 45)
    return None


def effective_due(basis: LegalBasis, received: datetime, requested: datetime | None,
                  extended: bool = False) -> datetime | None:
    """The earlier of the statutory due date and the requested deadline (either may be absent)."""
    dates = [d for d in (statutory_due(basis, received, extended), requested) if d is not None]
    return min(dates) if dates else None


def can_extend(basis: LegalBasis) -> bool:
    return statutory_due(basis, datetime(2000, 1, 1)) is not None


def flag(due: datetime | None, now: datetime) -> str:
    """'overdue', 'due-soon' (within 7 days) or '' for a request due at ``due``."""
    if due is None:
        return ""
    if due < now:
        return "overdue"
    return "due-soon" if due - now <= DUE_SOON else ""


def days_left(due: datetime | None, now: datetime) -> int | None:
    """Whole days until ``due`` (negative when overdue)."""
    return None if due is None else (due - now) // timedelta(days=1)


def expected_completion(status: RequestStatus, scheduled_at: datetime | None, batch_cron: str | None,
                        now: datetime) -> datetime | None:
    """When the request should be completed: the batch schedule's next run after ``now`` for an
    approved or scheduled request (the run that will pick it up), else ``scheduled_at`` (``--at``)."""
    if batch_cron and status in WAITING_FOR_BATCH:
        return cron.next_run(batch_cron, now)
    return scheduled_at
