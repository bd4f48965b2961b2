"""Erasure evidence: the run's exit path disposes of working data and issues signed certificates.

Fast: a fake run folder (scope manifest, candidate model, Ray checkpoints, report) stands in for
a pipeline run; the slow pipeline tests run the real thing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner
from unlearnops.components.ledger import finish, updates

import unlearnops.cli.erasure  # noqa: F401 - registers the certificate commands
from unlearnops import certificates, disposition, storage
from unlearnops.cli import app
from unlearnops.ledger import Ledger
from unlearnops.suppression import SuppressionList
from unlearnops.suppression import root as suppression_root
from unlearnops.types import EvalReport, ForgetRequest, GateResult, GateVerdict, ScopeManifest, SetInfo

NAME = "Ada Quill"


@pytest.fixture
def finished_run(unlearnops_home: Path, tmp_path: Path) -> dict[str, object]:
    """A request completed by run 'run-1' whose folder holds every kind of working data."""
    with Ledger() as ledger:
        ledger.file(ForgetRequest(id="erase-1", kind="subject", legal_basis="gdpr-art17", requester="subject",
                                  external_ref="DSAR-77", selectors={"subject_ids": ["p-1"], "names": [NAME]},
                                  received_at=datetime.now(UTC) - timedelta(days=3)), actor="clerk")
        ledger.set_status("erase-1", "verified", actor="dpo")
        ledger.set_status("erase-1", "approved", actor="dpo")
    plan = updates.run_plan(str(tmp_path / "runs"), "run-1")
    manifest = ScopeManifest(request_ids=["erase-1"], selector_hashes={"erase-1": ["ab" * 32]},
                             sets={"forget": SetInfo(file="forget.jsonl", count=3, sha256="0" * 64)},
                             source=[], corpus_uri="c", seed=0)
    storage.write_text(storage.join(plan.scope_uri, "forget.jsonl"), json.dumps({"answer": NAME}) + "\n")
    storage.write_text(storage.join(plan.scope_uri, "manifest.json"), manifest.model_dump_json())
    storage.write_json(storage.join(plan.model_uri, "training.json"),
                       {"method": "npo", "params": {"beta": 0.1}, "seed": 0, "steps": 5, "device": "cpu",
                        "parent": {"name": "m", "version": "1"}, "wall_seconds": 2.5})
    storage.write_bytes(storage.join(plan.model_uri, "model.safetensors"), b"weights")
    prefix = disposition.checkpoint_prefix(plan.model_uri)
    ckpt = storage.join(disposition.checkpoint_root(), f"{prefix}npo-x")
    storage.write_bytes(storage.join(ckpt, "checkpoint_000001", "optimizer.pt"), b"state")
    other = storage.join(disposition.checkpoint_root(), "unlearn-someone-else")
    storage.write_bytes(storage.join(other, "x"), b"keep")
    verdict = GateVerdict(passed=True, gates=[GateResult(gate="forget", metric="forget.rouge_l", value=0.2,
                                                         threshold="<= 0.3", passed=True, reason="")])
    report = EvalReport(model_uri=plan.model_uri, base_uri="b", scope_uri=plan.scope_uri, scope_sha256="s",
                        candidate={}, base={}, verdict=verdict)
    storage.write_text(storage.join(plan.eval_uri, "report.json"), report.model_dump_json())
    updates.mark_running(["erase-1"], "run-1")
    updates.mark_done(["erase-1"], "m", "2", "run-1")
    done = finish.finish_run(plan, "run-1")
    return {"plan": plan, "ckpt": ckpt, "other": other, **done}


def test_exit_path_disposes_and_certifies(finished_run: dict[str, object]) -> None:
    plan = finished_run["plan"]
    assert isinstance(plan, updates.RunPlan)
    assert not storage.exists(plan.scope_uri) and not storage.exists(plan.model_uri)
    assert not storage.exists(str(finished_run["ckpt"])) and storage.exists(str(finished_run["other"]))
    assert storage.exists(plan.eval_uri)  # the report is evidence (no personal data): kept
    record = finished_run["disposition"]
    assert isinstance(record, disposition.DispositionRecord)
    assert {(e.what, e.action) for e in record.entries} == {
        ("scope-sets", "deleted"), ("model-copy", "deleted"), ("checkpoints", "deleted")}
    stored = disposition.read_record(record.run_id)
    assert stored is not None and stored.entries == record.entries
    listed = SuppressionList.load()  # the data layer: the erased record is never used again
    assert listed.suppressed({"id": "any", "answer": NAME})  # the forget record's content digest
    assert listed.suppressed({"id": "q", "subject_ids": ["p-1"]})  # the request's subject id
    assert not listed.suppressed({"id": "q", "answer": "someone else"})
    entries = storage.list_files(suppression_root())
    assert entries and all(NAME not in storage.read_text(f.uri) for f in entries)

    path = finished_run["certificates"]["erase-1"]  # type: ignore[index]
    cert = certificates.verify(storage.read_bytes(path))
    c = cert.certificate
    assert c.request.external_ref == "DSAR-77" and c.request.outcome == "completed"
    assert c.targets[0].version_before == "1" and c.targets[0].version_after == "2"
    assert c.method is not None and c.method.objective == "npo" and c.method.seed == 0
    assert [g.gate for g in c.verification] == ["forget"]
    assert c.performer == "pipeline:run-1" and c.approver == "dpo"
    assert any("tokenizer vocabulary" in x for x in c.limitations)
    text = storage.read_text(path)
    assert NAME not in text and "p-1" not in text  # keyed hashes only
    assert "no longer exists in the model" not in text.replace("does not certify that the data no longer "
                                                              "exists in the model", "")
    folder = Path(path).parent
    requester = certificates.verify((folder / "requester-copy.json").read_bytes())
    assert requester.certificate.edition == "requester"
    assert "run-1" not in (folder / "requester-copy.json").read_text()  # no internal URIs or run ids
    assert "<h1>Certificate of unlearning</h1>" in (folder / "certificate.html").read_text()


def test_a_changed_byte_fails_verification(finished_run: dict[str, object], tmp_path: Path) -> None:
    good = Path(finished_run["certificates"]["erase-1"]).read_text()  # type: ignore[index]
    tampered = {"content": good.replace('"outcome": "completed"', '"outcome": "completeD"'),
                "digest": _flip_field(good, "digest"), "signature": _flip_signature(good)}
    for kind, text in tampered.items():
        assert text != good, kind
        with pytest.raises(certificates.CertificateError, match="digest|signature"):
            certificates.verify(text)
    runner = CliRunner()
    ok = runner.invoke(app, ["certificate", "verify", finished_run["certificates"]["erase-1"]])  # type: ignore[index]
    assert ok.exit_code == 0 and "valid" in ok.stdout and "this installation's key" in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(tampered["content"])
    result = runner.invoke(app, ["certificate", "verify", str(bad)])
    assert result.exit_code == 1 and "altered after signing" in " ".join(result.stderr.split())
    shown = runner.invoke(app, ["certificate", "show", finished_run["certificates"]["erase-1"]])  # type: ignore[index]
    assert shown.exit_code == 0 and "v1 → v2" in shown.stdout


def _flip_field(text: str, name: str) -> str:
    doc = json.loads(text)
    value = doc[name] if name in doc else doc["signature"][name]
    flipped = ("1" if value[0] != "1" else "2") + value[1:]
    return text.replace(value, flipped, 1)


def _flip_signature(text: str) -> str:
    value = json.loads(text)["signature"]["value"]
    flipped = ("A" if value[0] != "A" else "B") + value[1:]
    return text.replace(value, flipped, 1)


def test_retention_keeps_then_disposes(unlearnops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    monkeypatch.setenv("UNLEARNOPS_RETENTION_DAYS", "2")
    get_settings.cache_clear()
    folder = storage.join(get_settings().storage_root_uri, "runs", "r", "scope")
    storage.write_text(storage.join(folder, "forget.jsonl"), "x\n")
    entries = disposition.dispose([("scope-sets", folder)])
    assert entries[0].action == "retained" and storage.exists(folder)
    disposition.write_record(disposition.DispositionRecord(run_id="r", entries=entries))
    assert disposition.dispose_due() == [] and storage.exists(folder)
    done = disposition.dispose_due(now=datetime.now(UTC) + timedelta(days=3))
    assert [e.action for e in done] == ["deleted"] and not storage.exists(folder)
    record = disposition.read_record("r")
    assert record is not None and record.pending == []


# ------------------------------------------------------------------ claim levels (issue 16)
def _old_style(body: certificates.CertificateBody) -> str:
    """A certificate as issued before claim levels existed: no claim_level, no supersedes, signed."""
    import base64
    import hashlib

    raw = body.model_dump(mode="json")
    del raw["claim_level"], raw["supersedes"]
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    digest = hashlib.sha256(text).hexdigest()
    key = certificates.signing_key()
    public = certificates._raw_public(key.public_key())
    return json.dumps({"certificate": raw, "digest": digest, "signature": {
        "algorithm": "Ed25519", "key_id": certificates.key_id(public),
        "public_key": base64.b64encode(public).decode(),
        "value": base64.b64encode(key.sign(bytes.fromhex(digest))).decode()}})


def test_claim_levels_old_certificates_verify_retrained_references_earlier(
        finished_run: dict[str, object]) -> None:
    issued = finished_run["certificates"]
    assert isinstance(issued, dict)
    earlier = certificates.read_issued("erase-1")
    assert earlier is not None and earlier.certificate.claim_level == "unlearned"
    signed = json.loads(certificates.canonical(earlier.certificate))
    assert "claim_level" not in signed and "supersedes" not in signed  # the default is left out
    old = certificates.verify(_old_style(earlier.certificate))  # issued before claim levels: still valid
    assert old.certificate.claim_level == "unlearned" and old.digest == earlier.digest
    target = certificates.CertTarget(model="m", version_before="2", version_after="5")
    method = certificates.CertMethod(objective="finetune", params_sha256="0" * 64, code_version="t",
                                     run_id="r")
    gate = GateResult(gate="forget_at_holdout", metric="privacy.mia_auc", value=0.5, threshold="<= 0.6",
                      passed=True, reason="")
    body = certificates.retrained_body(earlier, targets=[target], method=method, verification=[gate],
                                       performer="pipeline:retrain-1", approver="dpo")
    stored = certificates.issue(body)
    text = storage.read_text(stored["certificate"])
    cert = certificates.verify(text)
    assert cert.certificate.claim_level == "retrained" and cert.certificate.supersedes is not None
    assert cert.certificate.supersedes.id == earlier.certificate.id
    assert cert.certificate.supersedes.digest == earlier.digest
    assert cert.certificate.request == earlier.certificate.request
    assert not any(x.startswith("Approximate") for x in cert.certificate.limitations)
    assert "supersedes certificate" in storage.read_text(stored["certificate"].replace(".json", ".html"))
    requester = certificates.verify(storage.read_text(stored["requester-copy"]))
    assert requester.certificate.claim_level == "retrained"
    kept = storage.join(certificates.certificates_root(), "erase-1", "superseded", earlier.certificate.id,
                        "certificate.json")
    assert certificates.verify(storage.read_text(kept)).digest == earlier.digest  # the earlier one kept
    for field, value in (("claim_level", "unlearned"), ("supersedes", None)):
        raw = json.loads(text)
        raw["certificate"][field] = value
        with pytest.raises(certificates.CertificateError, match="altered"):
            certificates.verify(json.dumps(raw))
    raw = json.loads(storage.read_text(kept))
    raw["certificate"]["claim_level"] = "retrained"  # an upgrade claimed without signing it
    with pytest.raises(certificates.CertificateError, match="altered"):
        certificates.verify(json.dumps(raw))
