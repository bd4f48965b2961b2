"""The end of every pipeline run (its exit path): suppress, dispose of the working data, certify.

Called by the exit handler whatever the outcome. It reads what the certificates need from the
run folder (scope manifest and forget records, ``training.json``, the evaluation report, the
candidate's weight digest); adds the completed requests' records to the suppression list
(:mod:`unlearnops.suppression`); disposes of the run's working data (scope sets, the candidate
model copy, Ray checkpoints: :mod:`unlearnops.disposition`) and writes the disposition record;
and issues one signed certificate per request this run completed (:mod:`unlearnops.certificates`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from unlearnops import certificates, disposition, storage, suppression
from unlearnops.documents import DocumentError, find_manifest, find_report, find_training, read_scope_set
from unlearnops.keyed_hash import request_tokens
from unlearnops.types import EvalReport, ForgetRequest, RequestStatus, ScopeManifest, TrainingRecord

from .updates import RunPlan, _ledger, _safe_segment, pipeline_actor

D = TypeVar("D")


@dataclass
class RunEvidence:
    """What the run folder says, read before the folder is disposed of."""

    manifest: ScopeManifest | None = None
    training: TrainingRecord | None = None
    report: EvalReport | None = None
    weights_sha256: str = ""
    forget: list[dict[str, Any]] = field(default_factory=list)


def _readable(read: Callable[[str], D | None], uri: str) -> D | None:
    """A document through its reader; an unreadable one counts as absent (said on stdout), so the
    exit path still disposes of the working data whatever a failed step left behind."""
    try:
        return read(uri)
    except DocumentError as err:
        print(f"evidence not used: {err}")
        return None


def read_evidence(plan: RunPlan) -> RunEvidence:
    """The run folder's documents, each through its reader; what is absent or unreadable (a failed
    run) stays empty."""
    manifest = _readable(find_manifest, plan.scope_uri)
    evidence = RunEvidence(manifest, _readable(find_training, plan.model_uri),
                           _readable(find_report, plan.eval_uri))
    if manifest and "forget" in manifest.sets and storage.exists(
            storage.join(plan.scope_uri, manifest.sets["forget"].file)):
        evidence.forget = read_scope_set(plan.scope_uri, "forget", manifest)
    if storage.list_files(plan.model_uri, suffixes=(".safetensors",)):
        from unlearnops.components.register.register import weights_sha256

        with storage.local_dir(plan.model_uri) as folder:
            evidence.weights_sha256 = weights_sha256(folder)
    return evidence


def record_id(plan: RunPlan, run_id: str) -> str:
    """A file-safe id of this run (the run id, plus a digest of its folder: kfp.local ids repeat)."""
    return f"{_safe_segment(run_id or 'run')}-{hashlib.sha256(plan.run_uri.encode()).hexdigest()[:10]}"


def touched_by(run_id: str, url: str | None = None) -> list[ForgetRequest]:
    """Requests with an audit event made by this run."""
    with _ledger(url) as ledger:
        return ledger.acted_on_by(pipeline_actor(run_id))


def dispose_run(plan: RunPlan, run_id: str, request_ids: list[str]) -> disposition.DispositionRecord:
    """Delete (or retain, per ``retention_days``) the run's working data; store the record."""
    items: list[tuple[disposition.What, str]] = [("scope-sets", plan.scope_uri),
                                                  ("model-copy", plan.model_uri)]
    items += [("checkpoints", uri) for uri in disposition.checkpoint_dirs(plan.model_uri)]
    record = disposition.DispositionRecord(run_id=record_id(plan, run_id),
                                           request_hashes=request_tokens(request_ids),
                                           entries=disposition.dispose(items))
    if any(e.action != "absent" for e in record.entries):
        disposition.write_record(record)
    return record


def certificate_body(req: ForgetRequest, run_id: str, evidence: RunEvidence,
                     record: disposition.DispositionRecord) -> certificates.CertificateBody:
    """The certificate of one completed request (keyed hashes and counts only)."""
    done = next(c for c in reversed(req.history)
                if c.status == RequestStatus.completed and c.event == "status")
    approvals = [c.actor for c in req.history if c.status == RequestStatus.approved]
    m = evidence.manifest
    t = evidence.training or TrainingRecord(method="")  # none: nothing known of the run
    parent = t.parent.version or "" if t.parent else ""
    name, _, after = done.model_uri.removeprefix("models:/").rpartition("/")
    params = json.dumps(t.params, sort_keys=True, separators=(",", ":"))
    return certificates.CertificateBody(
        request=certificates.CertRequest(
            request_id=req.id, external_ref=req.external_ref, regime=req.legal_basis.value,
            received_at=req.received_at, due_at=req.due_at, completed_at=done.at,
            subject_hashes=req.selector_hashes, outcome="completed"),
        scope=certificates.CertScope(manifest_sha256=m.sha256, counts={k: v.count for k, v in m.sets.items()})
        if m else None,
        targets=[certificates.CertTarget(model=name, version_before=str(parent), version_after=after,
                                         weights_sha256_after=evidence.weights_sha256,
                                         uri_after=done.model_uri)],
        method=certificates.CertMethod(
            objective=t.method, params_sha256=hashlib.sha256(params.encode()).hexdigest(),
            seed=t.seed, code_version=f"unlearnops {certificates.__version__}", run_id=run_id,
            hardware=t.model_dump(include={"device", "world_size", "strategy", "backend"}, exclude_none=True),
            duration_seconds=t.wall_seconds, steps=t.steps),
        verification=list(evidence.report.verdict.gates)
        if evidence.report and evidence.report.verdict else [],
        disposition=[certificates.CertDisposal(what=e.what, action=e.action, at=e.at, files=e.files,
                                               digest=e.digest, uri=e.uri) for e in record.entries],
        performer=done.actor, approver=approvals[-1] if approvals else "",
    )


def finish_run(plan: RunPlan, run_id: str, url: str | None = None) -> dict[str, Any]:
    """Suppress, dispose of the working data, certify the requests it completed (the exit path)."""
    evidence = read_evidence(plan)
    touched = touched_by(run_id, url)
    completed = [r for r in touched if r.status == RequestStatus.completed and _completed_by(r, run_id)]
    if completed:  # the data layer: erased records are never used again
        suppression.add_entry(record_id(plan, run_id), [r.id for r in completed],
                              {h for r in completed for h in r.selector_hashes}, evidence.forget)
    record = dispose_run(plan, run_id, [r.id for r in touched])
    issued = {r.id: certificates.issue(certificate_body(r, run_id, evidence, record))["certificate"]
              for r in completed}
    return {"disposition": record, "certificates": issued}


def _completed_by(req: ForgetRequest, run_id: str) -> bool:
    last = next((c for c in reversed(req.history) if c.event == "status"), None)
    return last is not None and last.status == RequestStatus.completed and last.run_id == run_id
