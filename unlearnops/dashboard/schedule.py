"""The compliance batch's schedule: shown, edited by operators, run in process with the embedded stack.

The cron expression (6 fields, seconds first, UTC; :mod:`unlearnops.cron`) is kept in the ledger
(:meth:`Ledger.set_batch_cron`), so the CLI, the dashboard and every expected completion date read
the same one; until an operator sets it, the ``batch_cron`` setting applies. With the embedded
stack a scheduler thread triggers a dashboard run of every approved request at each firing; on a
cluster (``UNLEARNOPS_KFP_HOST``) the schedule is KFP's recurring run (``unlearnops schedule``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from .. import cron
from ..settings import get_settings
from ..types import utcnow
from .runs import RunDefaults, RunRefused, cluster_request, runnable_ids, trigger
from .store import Background, Store

SCHEDULER_ACTOR = "schedule:compliance-batch"


@dataclass
class ScheduleView:
    cron: str
    next_run: datetime | None
    backend: str  # embedded | kfp
    pending: int  # requests the next run would take


def view(store: Store) -> ScheduleView:
    expression = store.ledger.batch_cron() or ""
    nxt = cron.next_run(expression, utcnow()) if expression else None
    backend = "kfp" if get_settings().kfp_host else "embedded"
    return ScheduleView(expression, nxt, backend, len(runnable_ids(store.ledger)))


def set_schedule(store: Store, expression: str, actor: str, defaults: RunDefaults) -> ScheduleView:
    """Set (or with '' clear) the schedule; ValueError says what is wrong with the expression.

    On a cluster the compliance batch's KFP recurring run is created or replaced with it first
    (``pipelines.remote.schedule``; 6 fields), so the ledger never shows a schedule KFP refused."""
    host = get_settings().kfp_host
    if host and expression.strip():
        from unlearnops.pipelines.remote import RemoteError, schedule

        args = cluster_request(defaults, [], defaults.method, defaults.params, defaults.policy)
        try:
            schedule(host, args.arguments(batch=True), cron=cron.check(expression),
                     token=os.environ.get("KFP_TOKEN") or None)
        except RemoteError as err:
            raise ValueError(str(err)) from err
    store.ledger.set_batch_cron(expression, actor)
    return view(store)


class Scheduler(Background):
    """Fires the compliance batch at each time of the ledger's cron (embedded stack only)."""

    def __init__(self, store: Store, defaults: RunDefaults, poll_s: float = 5.0) -> None:
        super().__init__()
        self.store, self.defaults, self.poll_s = store, defaults, poll_s
        self.fired: list[str] = []  # run ids it started (for the page and tests)

    name = "unlearnops-scheduler"

    def loop(self) -> None:
        due: datetime | None = None
        seen = ""
        while not self.stop_event.is_set():
            expression = self.store.ledger.batch_cron() or ""
            if expression != seen:  # set or changed: the next firing from now
                seen, due = expression, cron.next_run(expression, utcnow()) if expression else None
            if due is not None and utcnow() >= due:
                self.fire()
                due = cron.next_run(expression, utcnow())
            self.stop_event.wait(self.poll_s)

    def fire(self) -> str:
        """Queue one run of every approved request now; '' when there is none."""
        ids = runnable_ids(self.store.ledger)
        if not ids:
            return ""
        try:
            run = trigger(self.store, SCHEDULER_ACTOR, ids, self.defaults)
        except RunRefused:
            return ""  # e.g. a run already covers them
        self.fired.append(run.id)
        return run.id
