"""The compliance_retrain pipeline (issue 16): its compiled golden YAML and DAG (fast), and the
done-when run on the tiny benchmark with kfp.local (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from unlearnops.pipelines.compile import COMPILED_DIR, compile_text

NAME = "compliance_retrain"
SIDE_EFFECTS = {"retrain-plan", "redact", "retrain", "register", "promote", "certify-retrained",
                "register-rejected", "record-failure", "approx-vs-exact", "run-inputs"}


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for comp in [spec["root"], *spec["components"].values()]:
        out.update((comp.get("dag") or {}).get("tasks", {}))
    return out


def test_golden_and_dag() -> None:
    text = compile_text(NAME)
    golden = COMPILED_DIR / f"{NAME}.yaml"
    assert text == golden.read_text(), f"{golden.name} is out of date: run `unlearnops compile`"
    spec = next(yaml.safe_load_all(text))
    tasks = _tasks(spec)
    conditions = [t["triggerPolicy"]["condition"] for t in tasks.values() if t.get("triggerPolicy", {}).get(
        "condition")]
    assert any("count" in c and "> 0" in c for c in conditions), conditions
    assert any("passed" in c and "true" in c for c in conditions), conditions
    assert tasks["exit-mark-failed-op"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    shown = {t["taskInfo"]["name"]: t.get("cachingOptions", {}).get("enableCache", False)
             for t in tasks.values() if not t["componentRef"]["name"].startswith(("comp-condition",
                                                                                  "comp-exit-handler"))}
    assert set(shown) == SIDE_EFFECTS | {"evaluate"}
    assert shown["evaluate"] and not any(shown[n] for n in SIDE_EFFECTS)  # only evaluate is cached
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert all(p.get("description") for p in params.values())
    assert {p["parameterType"] for p in params.values()} <= {"STRING", "NUMBER_INTEGER", "BOOLEAN"}
    assert params["promote_target"]["defaultValue"] == "kserve" and "defaultValue" not in params["model_name"]
    # the order the issue asks for: plan (before redaction) → redact → retrain → evaluate → register
    deps = {t["taskInfo"]["name"]: set(t.get("dependentTasks", [])) for t in tasks.values()}
    assert deps["has-covered-requests"] == {"retrain-plan-op"} and "redact-op" in deps["retrain"]
    assert "retrain-op" in deps["evaluate"] and "promote-op" in deps["certify-retrained"]


def test_schedule_retrain_creates_a_recurring_compliance_retrain(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tests.stubs.kfp_api import KfpApiStub
    from unlearnops.cli import _load_plugins, app

    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    _load_plugins()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("objective: finetune\nparams: {train: {lr: 0.00001, epochs: 2}}\nseed: 3\n")
    runner = CliRunner()
    with KfpApiStub() as stub:
        res = runner.invoke(app, ["schedule", "--host", stub.url, "--retrain", "--corpus", "s3://d/c",
                                  "--foundation", "s3://m/foundation", "--recipe", str(recipe)])
        assert res.exit_code == 0, res.output
        body = stub.calls("POST", "/recurringruns")[0].body
        assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 1 * *"}}  # monthly by default
        assert body["display_name"] == "compliance-retrain-monthly" and int(body["max_concurrency"]) == 1
        params = body["runtime_config"]["parameters"]
        assert params["foundation_uri"] == "s3://m/foundation" and params["corpus_uri"] == "s3://d/c"
        assert json.loads(params["recipe"]) == {"objective": "finetune", "seed": 3,
                                                "params": {"train": {"lr": 1e-05, "epochs": 2}}}
        version = stub.calls("POST", "/pipelines/upload_version")[0]
        assert b"compliance-retrain" in version.body
        for bad in (["--retrain"], ["--foundation", "s3://m/f"], ["--retrain", "--foundation", "s3://m/f"]):
            refused = runner.invoke(app, ["schedule", "--host", stub.url, "--corpus", "s3://d/c", *bad])
            assert refused.exit_code == 2 and "--foundation and --recipe" in refused.output
        recipe.write_text("objective: finetune\nparams: {train: {epochz: 1}}\n")
        refused = runner.invoke(app, ["schedule", "--host", stub.url, "--retrain", "--corpus", "s3://d/c",
                                      "--foundation", "s3://m/f", "--recipe", str(recipe)])
        assert refused.exit_code == 2 and "epochz" in refused.output
        assert len(stub.calls("POST", "/recurringruns")) == 1  # nothing bad reached the cluster


# ------------------------------------------------------------------ done when (slow, kfp.local)
MODEL = "people-qa-retrain"
LENIENT = yaml.safe_dump({"gates": [{"name": "forget-rouge", "metric": "forget.rouge_l", "max": 1.0}]})


def _client() -> Any:
    from mlflow import MlflowClient

    from unlearnops.settings import get_settings

    return MlflowClient(tracking_uri=get_settings().tracking_uri)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_compliance_retrain_covers_two_approximate_requests(
        unlearnops_home: Path, tiny_models: Path, bench_data: Path, tmp_path: Path) -> None:
    """Two requests unlearned approximately, then one retraining covering both: the retrained
    champion's forget metrics sit at the holdout level, both requests are at claim level
    "retrained", and the earlier versions are tagged superseded (and erased, so disposed of after
    the retention window)."""
    import shutil

    from unlearnops.components.promote.erasure import dispose_versions
    from unlearnops.components.promote.promote import promote
    from unlearnops.components.register.register import register_model
    from unlearnops.pipelines.compliance_retrain import build
    from unlearnops.pipelines.local_runner import run_local, run_pipeline
    from unlearnops.pipelines.options import CompileOptions
    from unlearnops.pipelines.run_request import RunRequest

    from unlearnops import certificates
    from unlearnops.documents import read_report
    from unlearnops.keyed_hash import request_tokens
    from unlearnops.ledger import Ledger
    from unlearnops.types import ForgetRequest, RequestKind, RequestStatus, Selectors

    corpus = tmp_path / "corpus"  # redaction rewrites the corpus: a copy of the session's
    shutil.copytree(bench_data, corpus)
    ref = register_model(str(tiny_models / "base"), MODEL)
    promote(MODEL, str(ref.version), expect_parent=False)
    subjects = json.loads((tiny_models / "forget-request.json").read_text())["selectors"]["subject_ids"]
    with Ledger() as ledger:
        for rid, who in (("erase-a", subjects[:2]), ("erase-b", subjects[2:4])):
            ledger.file(ForgetRequest(id=rid, kind=RequestKind.subject, selectors=Selectors(subject_ids=who),
                                      legal_basis="gdpr-art17", requester="test"), actor="filer")
            ledger.set_status(rid, RequestStatus.verified, "checked", actor="dpo")
            ledger.set_status(rid, RequestStatus.approved, "approved", actor="dpo")
    for rid in ("erase-a", "erase-b"):  # approximate unlearning, one request at a time
        run = run_local(RunRequest(request_ids=[rid], corpus_uri=str(corpus), model_name=MODEL, method="npo",
                                   policy=LENIENT, workers=1, method_params={"train": {"steps": 40}},
                                   promote_target="local"), console=None)
        assert run.exit_code == 0, (run.message, run.log_file.read_text()[-3000:])
    approx = str(_client().get_model_version_by_alias(MODEL, "champion").version)
    earlier = {rid: certificates.read_issued(rid) for rid in ("erase-a", "erase-b")}
    assert all(c is not None and c.certificate.claim_level == "unlearned" for c in earlier.values())

    recipe = json.loads((tiny_models / "recipe.json").read_text())
    run_root = str(unlearnops_home / "retrain-runs")
    pipeline = build(CompileOptions.local())
    _, log_file, _ = run_pipeline(pipeline, {
        "model_name": MODEL, "corpus_uri": str(corpus), "foundation_uri": str(tiny_models / "foundation"),
        "recipe": json.dumps(recipe), "policy": "default", "run_root": run_root, "promote_target": "local",
        "local_training": True}, console=None)
    client = _client()
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    assert int(champion) > int(approx), log_file.read_text()[-4000:]
    tags = client.get_model_version(MODEL, champion).tags
    assert tags["unlearnops.claim_level"] == "retrained" and tags["unlearnops.gate"] == "passed"
    assert set(tags["unlearnops.requests"].split(",")) == set(request_tokens(["erase-a", "erase-b"]))
    assert tags["unlearnops.foundation"] == str(tiny_models / "foundation")
    reports = list(Path(run_root).glob("*/eval/report.json"))
    assert len(reports) == 1
    report = read_report(str(reports[0].parent))
    gates = {g.gate: g for g in report.verdict.gates} if report.verdict else {}
    for gate in ("forget-at-holdout-level", "forget-prob-at-holdout-level", "mia-at-chance"):
        assert gates[gate].passed, gates[gate]  # the forget set of both requests at the holdout level
    comparison = json.loads((reports[0].parent / "approx-vs-exact.json").read_text())
    assert comparison["approximate_method"] == "npo" and comparison["retrain_cost"]["tokens"] > 0
    assert len(comparison["approximate_costs"]) == 2 and comparison["agreement"]["forget"] is not None
    for rid, old in earlier.items():
        cert = certificates.read_issued(rid)
        assert cert is not None and cert.certificate.claim_level == "retrained"
        assert old is not None and cert.certificate.supersedes is not None
        assert cert.certificate.supersedes.digest == old.digest
        assert cert.certificate.targets[0].version_after == champion
    with Ledger() as ledger:  # the upgrade is in each request's audit trail, and the chain holds
        for rid in earlier:
            req = ledger.get(rid)
            claim = req.history[-1]
            assert (claim.event, claim.code, req.status) == ("claim", "retrained", RequestStatus.completed)
            assert claim.model_uri == f"models:/{MODEL}/{champion}" and claim.actor.startswith("pipeline:")
        assert ledger.verify_chain().ok
    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{MODEL}'")}
    older = [v for v in versions if int(v) < int(champion)]
    assert older and all(versions[v].get("unlearnops.superseded_by") == champion for v in older)
    assert all(versions[v].get("unlearnops.erased_by") for v in older)
    disposed = dispose_versions(MODEL, retention_days=0)  # after the retention window
    assert {e.what for e in disposed.entries} == {"model-version"}
    assert not list(Path(run_root).glob("*/scope/forget.jsonl"))  # the run's scope sets were disposed of
