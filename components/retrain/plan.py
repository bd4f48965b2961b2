"""The compliance-retrain run's own steps: what it covers, what it is evaluated on, how it ends.

- :func:`covered_requests`: every request completed by a version of the model (approximately
  unlearned so far) — the retraining covers them all, because the corpus it trains on no longer
  holds any of their data (the suppression list, and ``corpus redact``).
- :func:`evaluation_scope`: the DataScope the retrained model is gated on — its forget set is
  every corpus record on the suppression list (the erased records of every covered request),
  with holdout, retain-eval, neighbor and paraphrase sets resolved as for any request. It is
  written before the corpus is redacted, into the run folder, and disposed of when the run ends
  (the exit handler, components/ledger/finish.py), like every run's scope.
- :func:`finish_retrain`: after promotion, every older version is tagged ``superseded_by`` and each
  covered request gets a ``retrained`` certificate referencing its earlier ``unlearned`` one
  (:func:`unlearnops.certificates.retrained_body`), and a ``claim`` audit event in the ledger
  (:meth:`unlearnops.ledger.Ledger.record_claim_upgrade`: the run, the model, both certificate ids).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from unlearnops import certificates, storage
from unlearnops.types import ForgetRequest, RequestKind, RequestStatus, Selectors

SUPERSEDED_TAG, SUPERSEDED_AT_TAG = "unlearnops.superseded_by", "unlearnops.superseded_at"


def covered_requests(model_name: str) -> list[str]:
    """Ids of the requests completed by a version of ``model_name``, oldest completion first."""
    from unlearnops.components.ledger.updates import completed_by

    from unlearnops.ledger import Ledger

    prefix = f"models:/{model_name}/"
    with Ledger() as ledger:
        done = [r for r in ledger.list(RequestStatus.completed) if completed_by(r).startswith(prefix)]
    return [r.id for r in sorted(done, key=lambda r: (r.history[-1].at if r.history else r.received_at,
                                                       r.id))]


def erased_records(corpus_uri: str) -> list[dict[str, Any]]:
    """The corpus's training records that are on the suppression list (before redaction)."""
    from unlearnops.components.scope.shards import iter_lines, list_shards, parse_record

    from unlearnops.suppression import SuppressionList

    listed = SuppressionList.load()
    out = []
    for shard in list_shards(corpus_uri):
        for lineno, line in iter_lines(shard):
            if line.strip():
                record = parse_record(line, shard, lineno)
                if listed.suppressed(record):
                    out.append(record)
    return out


def evaluation_scope(corpus_uri: str, out_uri: str, run_id: str, seed: int = 0) -> int:
    """Write the evaluation DataScope (forget = the erased records) to ``out_uri``; its forget count.

    The forget set goes to scope resolution as an ``examples`` request (a temporary file, removed
    afterwards); the request is the run's own, never filed in the ledger.
    """
    from unlearnops.components.scope.resolve import resolve_scope

    records = erased_records(corpus_uri)
    if not records:
        return 0
    fd, path = tempfile.mkstemp(prefix="retrain-forget-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in records)
        tag = hashlib.sha256(run_id.encode()).hexdigest()[:10]
        request = ForgetRequest(id=f"retrain-{tag}", kind=RequestKind.examples,
                                selectors=Selectors(examples_uri=path), legal_basis="other",
                                requester="unlearnops compliance-retrain")
        manifest = resolve_scope([request], corpus_uri, out_uri, seed=seed, allow_large_scope=True)
    finally:
        os.unlink(path)
    return manifest.sets["forget"].count


def supersede(model_name: str, version: str) -> list[str]:
    """Tag every version older than ``version`` as superseded by it; the versions tagged."""
    import mlflow

    from unlearnops.settings import get_settings
    from unlearnops.types import utcnow

    client = mlflow.MlflowClient(tracking_uri=get_settings().tracking_uri)
    now, tagged = utcnow().isoformat(), []
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        if int(mv.version) < int(version) and (mv.tags or {}).get(SUPERSEDED_TAG) != version:
            client.set_model_version_tag(model_name, str(mv.version), SUPERSEDED_TAG, version)
            client.set_model_version_tag(model_name, str(mv.version), SUPERSEDED_AT_TAG, now)
            tagged.append(str(mv.version))
    return sorted(tagged, key=int)


def _method(model_uri: str, run_id: str) -> certificates.CertMethod:
    """The certificate's method section from the retrained model's training.json and lineage.json."""
    from unlearnops.components.register.lineage import LINEAGE_FILE, Lineage

    from unlearnops.documents import read_training

    training = read_training(model_uri)
    lineage = Lineage.model_validate_json(storage.read_text(storage.join(model_uri, LINEAGE_FILE)))
    return certificates.CertMethod(
        objective=f"retrain:{training.method}", params_sha256=lineage.recipe.sha256(), seed=training.seed,
        code_version=f"unlearnops {certificates.__version__}", run_id=run_id,
        hardware=training.model_dump(include={"device", "world_size", "strategy", "backend"},
                                     exclude_none=True),
        duration_seconds=training.wall_seconds, steps=training.steps)


def finish_retrain(model_name: str, version: str, request_ids: Sequence[str], run_id: str,
                   previous_version: str = "", eval_uri: str = "") -> dict[str, Any]:
    """Supersede the older versions; issue each covered request's ``retrained`` certificate.

    A request without an earlier certificate gets none here (nothing to upgrade); the others keep
    their earlier certificate under ``superseded/``. Returns the versions tagged and the certificates.
    """
    from unlearnops.components.register.register import weights_sha256

    from unlearnops import modelio
    from unlearnops.documents import find_report

    tagged = supersede(model_name, version)
    uri = f"models:/{model_name}/{version}"
    exported = modelio.resolve(uri).uri
    with modelio.LocalModel(uri) as folder:
        digest = weights_sha256(folder)
    method = _method(exported, run_id)
    report = find_report(eval_uri) if eval_uri else None
    gates = list(report.verdict.gates) if report and report.verdict else []
    issued: dict[str, str] = {}
    upgrades: dict[str, dict[str, str]] = {}
    for rid in request_ids:
        earlier = certificates.read_issued(rid)
        if earlier is None:
            continue
        target = certificates.CertTarget(model=model_name, version_before=previous_version,
                                         version_after=version, weights_sha256_after=digest, uri_after=uri)
        body = certificates.retrained_body(earlier, targets=[target], method=method, verification=gates,
                                           performer=f"pipeline:{run_id}",
                                           approver=earlier.certificate.approver)
        issued[rid] = certificates.issue(body)["certificate"]
        upgrades[rid] = {"run_id": run_id, "model_uri": uri, "certificate": body.id,
                         "supersedes": earlier.certificate.id}
    _record_upgrades(upgrades, run_id)
    return {"superseded": tagged, "certificates": issued}


def _record_upgrades(upgrades: dict[str, dict[str, str]], run_id: str) -> None:
    """One ``claim`` audit event per request whose certificate was raised to ``retrained``."""
    from unlearnops.components.ledger.updates import pipeline_actor

    from unlearnops.ledger import Ledger

    if not upgrades:
        return
    with Ledger() as ledger:
        for rid, details in upgrades.items():
            ledger.record_claim_upgrade([rid], actor=pipeline_actor(run_id), claim_level="retrained",
                                        details=details)


def approximate_trainings(model_name: str, request_ids: Sequence[str]) -> list[Any]:
    """training.json of every registered version that approximately unlearned one of the requests
    (passed its gates; read from its exported copy — absent once disposed of)."""
    import mlflow

    from unlearnops.documents import find_training
    from unlearnops.model_erasure import serves
    from unlearnops.modelio import EXPORT_TAG
    from unlearnops.settings import get_settings

    client = mlflow.MlflowClient(tracking_uri=get_settings().tracking_uri)
    out = []
    for mv in sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version)):
        tags = mv.tags or {}
        if tags.get("unlearnops.gate") != "passed" or not serves(tags, request_ids) or tags.get(
                "unlearnops.claim_level") == "retrained" or not tags.get(EXPORT_TAG):
            continue
        training = find_training(tags[EXPORT_TAG])  # None once the copy is disposed of
        if training is not None:
            out.append(training)
    return out
