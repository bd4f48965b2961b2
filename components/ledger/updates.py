"""Ledger updates made by the pipelines (pure functions; the KFP components in ``component.py`` wrap them).

Every update is idempotent: a request already ``completed`` is never touched again, a request
already in the target status is left as it is, so a retried task does not fail on a status move
it already made. The ledger's guards apply: a request that is not approved never runs. Outcomes
are typed fields of the audit event (``model_uri``, ``code``, ``gate_reasons``), never prose
parsed back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from unlearnops import storage
from unlearnops.types import ForgetRequest, RequestStatus

ACTOR = "pipeline"
#: The ``code`` of a failure: the gates refused the candidate, or the pipeline itself failed.
GATES_FAILED, PIPELINE_FAILED = "gates-failed", "pipeline-failed"
#: Statuses a pipeline run may start from (the ledger refuses any other).
RUNNABLE = {RequestStatus.approved, RequestStatus.scheduled, RequestStatus.failed}
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


def pipeline_actor(run_id: str) -> str:
    """The ledger actor of a pipeline run's writes: ``pipeline:RUN_ID``."""
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


def completed_by(req: ForgetRequest) -> str:
    """The registry URI of the version that completed ``req`` ('' if it is not completed)."""
    if req.status != RequestStatus.completed:
        return ""
    uris = [c.model_uri for c in req.history if c.status == RequestStatus.completed and c.model_uri]
    return uris[-1] if uris else "unknown version"


def check_already_unlearned(request_ids: list[str], url: str | None = None) -> tuple[bool, str]:
    """(every request is already completed, comma-separated versions that did it). Unknown ids fail."""
    if not request_ids:
        raise ValueError("no request ids given; pass at least one filed request id")
    with _ledger(url) as ledger:
        versions = [completed_by(ledger.get(rid)) for rid in request_ids]
    done = all(versions)
    return done, ",".join(sorted(set(versions))) if done else ""


def resolve_champion(model_name: str) -> str:
    """``models:/NAME/VERSION`` of the current champion (the base every run unlearns from)."""
    from unlearnops import modelio

    resolved = modelio.resolve(f"models:/{model_name}@champion")
    assert resolved.ref is not None
    return f"models:/{model_name}/{resolved.ref.version}"


def _move(request_ids: list[str], status: RequestStatus, run_id: str, url: str | None = None,
          only_from: set[RequestStatus] | None = None, **event: Any) -> list[str]:
    """Move each request to ``status`` (skipping completed ones and ones already there); ids moved."""
    moved: list[str] = []
    with _ledger(url) as ledger:
        for rid in request_ids:
            current = ledger.get(rid).status
            if current in (RequestStatus.completed, status):
                continue
            if only_from is not None and current not in only_from:
                continue
            ledger.set_status(rid, status, actor=pipeline_actor(run_id), expect=current, run_id=run_id,
                              **event)
            moved.append(rid)
    return moved


def mark_running(request_ids: list[str], run_id: str, url: str | None = None) -> list[str]:
    """approved/scheduled/failed → running; any other status is refused by the ledger's guards."""
    return _move(request_ids, RequestStatus.running, run_id, url, reason=f"pipeline run {run_id} started")


def mark_done(request_ids: list[str], model_name: str, version: str, run_id: str,
              url: str | None = None) -> list[str]:
    """running → completed, recording ``models:/NAME/VERSION`` (a typed field) as the version."""
    return _move(request_ids, RequestStatus.completed, run_id, url, only_from={RequestStatus.running},
                 reason="unlearned; candidate promoted", model_uri=f"models:/{model_name}/{version}")


def mark_failed(request_ids: list[str], reason: str, run_id: str, url: str | None = None, *,
                code: str = PIPELINE_FAILED, gate_reasons: list[str] | None = None,
                model_uri: str = "") -> list[str]:
    """Mark still-running requests failed (requests in other states are left)."""
    return _move(request_ids, RequestStatus.failed, run_id, url, only_from={RequestStatus.running},
                 reason=reason, code=code, gate_reasons=gate_reasons or [], model_uri=model_uri)


def running_by(run_id: str, url: str | None = None) -> list[str]:
    """Ids of requests still ``running`` whose last status change was made by this run."""
    actor = pipeline_actor(run_id)
    with _ledger(url) as ledger:
        touched = ledger.acted_on_by(actor)
    return [r.id for r in touched if r.status == RequestStatus.running and r.history[-1].actor == actor]


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
    """Ids of the requests ready to run up to the cutoff, earliest effective deadline first.

    One meaning with :meth:`unlearnops.ledger.Ledger.pending_until`: approved (or scheduled)
    requests received up to the cutoff — a nightly batch takes everything approved so far, so no
    request waits until its deadline has passed. The cutoff is ``cutoff`` if given, else the
    run's schedule time, else now (an unresolved ``{{$.…}}`` placeholder, as kfp.local leaves
    it, counts as not given).
    """
    chosen = next((v for v in (cutoff, schedule_time) if v and not v.startswith("{{")), "")
    when = parse_time(chosen) if chosen else datetime.now(UTC)
    with _ledger(url) as ledger:
        return [r.id for r in ledger.pending_until(when)]


def parse_time(value: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (a trailing ``Z`` allowed); naive times are UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise ValueError(f"cutoff {value!r} is not an ISO 8601 time such as 2026-01-31T00:00:00Z") from err
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
