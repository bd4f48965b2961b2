"""Ledger updates made by the pipelines (pure functions; the KFP components in ``component.py`` wrap them).

Every update is idempotent: a request already ``unlearned`` is never touched again, a request
already in the target status is left as it is, so a retried task does not fail on a status move
it already made. Status moves follow :data:`unlearnops.types.STATUS_MOVES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from unlearnops import storage
from unlearnops.types import ForgetRequest, RequestStatus

ACTOR = "pipeline"
#: The reason written when a pipeline marks a request unlearned; :func:`unlearned_by` parses it back.
DONE_REASON = "unlearned by models:/{name}/{version} (run {run_id})"
_DONE = re.compile(r"unlearned by (models:/\S+)")
#: Which output each step leaves behind; the first one missing names the step that failed.
STEP_MARKERS: tuple[tuple[str, str], ...] = (
    ("resolve_scope", "scope/manifest.json"),
    ("unlearn", "model/training.json"),
    ("evaluate", "eval/report.json"),
)


@dataclass(frozen=True)
class RunPlan:
    """Where one pipeline run writes each step's output."""

    run_uri: str
    scope_uri: str
    model_uri: str
    eval_uri: str


def _ledger(url: str | None = None) -> Any:
    from unlearnops.ledger import Ledger

    return Ledger(url)


def _actor(run_id: str) -> str:
    return f"{ACTOR}:{run_id}" if run_id else ACTOR


def run_plan(run_root: str, run_id: str) -> RunPlan:
    """Output URIs of a run: ``RUN_ROOT/RUN_ID/{scope,model,eval}`` (RUN_ROOT defaults to STORAGE/runs)."""
    from unlearnops.settings import get_settings

    root = run_root or storage.join(get_settings().storage_root_uri, "runs")
    run_uri = storage.join(root, _safe_segment(run_id or "run"))
    return RunPlan(run_uri, storage.join(run_uri, "scope"), storage.join(run_uri, "model"),
                   storage.join(run_uri, "eval"))


def _safe_segment(value: str) -> str:
    """A run id as one path segment (placeholders that were not resolved become ``run``)."""
    if "{{" in value:
        return "run"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.")
    return cleaned or "run"


def unlearned_by(req: ForgetRequest) -> str:
    """The registry URI of the version that unlearned ``req`` ('' if it is not unlearned)."""
    if req.status != RequestStatus.unlearned:
        return ""
    for change in reversed(req.history):
        if change.status == RequestStatus.unlearned:
            match = _DONE.search(change.reason)
            return match.group(1) if match else (change.reason or "unknown version")
    return "unknown version"


def check_already_unlearned(request_ids: list[str], url: str | None = None) -> tuple[bool, str]:
    """(every request is already unlearned, comma-separated versions that did it). Unknown ids fail."""
    if not request_ids:
        raise ValueError("no request ids given; pass at least one filed request id")
    with _ledger(url) as ledger:
        versions = [unlearned_by(ledger.get(rid)) for rid in request_ids]
    done = all(versions)
    return done, ",".join(sorted(set(versions))) if done else ""


def resolve_champion(model_name: str) -> str:
    """``models:/NAME/VERSION`` of the current champion (the base every run unlearns from)."""
    from unlearnops import modelio

    resolved = modelio.resolve(f"models:/{model_name}@champion")
    assert resolved.ref is not None
    return f"models:/{model_name}/{resolved.ref.version}"


def _move(request_ids: list[str], status: RequestStatus, reason: str, run_id: str,
          url: str | None = None, only_from: set[RequestStatus] | None = None) -> list[str]:
    """Move each request to ``status`` (skipping unlearned ones and ones already there); ids moved."""
    moved: list[str] = []
    with _ledger(url) as ledger:
        for rid in request_ids:
            current = ledger.get(rid).status
            if current in (RequestStatus.unlearned, status):
                continue
            if only_from is not None and current not in only_from:
                continue
            ledger.set_status(rid, status, reason=reason, actor=_actor(run_id), expect=current)
            moved.append(rid)
    return moved


def mark_running(request_ids: list[str], run_id: str, url: str | None = None) -> list[str]:
    return _move(request_ids, RequestStatus.running, f"pipeline run {run_id} started", run_id, url)


def mark_done(request_ids: list[str], model_name: str, version: str, run_id: str,
              url: str | None = None) -> list[str]:
    reason = DONE_REASON.format(name=model_name, version=version, run_id=run_id)
    return _move(request_ids, RequestStatus.unlearned, reason, run_id, url)


def mark_failed(request_ids: list[str], reason: str, run_id: str, url: str | None = None) -> list[str]:
    """Mark still-running requests failed with ``reason`` (requests in other states are left)."""
    return _move(request_ids, RequestStatus.failed, reason, run_id, url, only_from={RequestStatus.running})


def running_by(run_id: str, url: str | None = None) -> list[str]:
    """Ids of requests still ``running`` whose last status change was made by this run."""
    actor = _actor(run_id)
    with _ledger(url) as ledger:
        running = ledger.list(RequestStatus.running)
    return [req.id for req in running if req.history and req.history[-1].actor == actor]


def failed_step(plan: RunPlan) -> str:
    """The first step whose output is missing (``register/promote`` when every output exists)."""
    for step, marker in STEP_MARKERS:
        if not storage.exists(storage.join(plan.run_uri, marker)):
            return step
    return "register/promote"


def exit_reason(state: str, plan: RunPlan, error: str = "") -> str:
    """The failure reason the exit handler records: final state, failing step, error message."""
    text = f"pipeline {state.lower()} at step {failed_step(plan)}"
    return f"{text}: {error}" if error else text


def pending_ids(cutoff: str = "", schedule_time: str = "", url: str | None = None) -> list[str]:
    """Ids of pending requests received up to the cutoff, oldest deadline first (none last).

    Received-by, not due-by: a nightly batch takes everything filed so far, so no request waits
    until its deadline has passed (``Ledger.pending_until`` selects by deadline). The cutoff is
    ``cutoff`` if given, else the run's schedule time, else now (an unresolved ``{{$.…}}``
    placeholder, as kfp.local leaves it, counts as not given).
    """
    chosen = next((v for v in (cutoff, schedule_time) if v and not v.startswith("{{")), "")
    when = parse_time(chosen) if chosen else datetime.now(UTC)
    with _ledger(url) as ledger:
        pending = ledger.list(RequestStatus.pending)
    far = datetime.max.replace(tzinfo=UTC)
    chosen_reqs = [r for r in pending if _utc(r.received_at) <= when]
    chosen_reqs.sort(key=lambda r: (_utc(r.deadline) if r.deadline else far, _utc(r.received_at), r.id))
    return [r.id for r in chosen_reqs]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_time(value: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (a trailing ``Z`` allowed); naive times are UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"cutoff {value!r} is not an ISO 8601 time such as 2026-01-31T00:00:00Z") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
