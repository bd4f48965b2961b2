"""Registration: lineage tags, run contents, export copy, idempotency (embedded registry, MLflow server)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from unlearnops.components.register import register as reg

from unlearnops import modelio, storage
from unlearnops.ledger import Ledger
from unlearnops.model_erasure import request_tokens, serves, tagged_requests
from unlearnops.types import (
    EvalReport,
    ForgetRequest,
    GateResult,
    GateVerdict,
    ScopeManifest,
    SetInfo,
    TrainingRecord,
)


def _verdict(passed: bool) -> GateVerdict:
    return GateVerdict(passed=passed, gates=[
        GateResult(gate="forget", metric="forget.prob", value=0.05, threshold="≤ 0.1", passed=True,
                   reason=""),
        GateResult(gate="utility", metric="utility.model_utility", value=0.81, threshold="≥ 0.8",
                   passed=passed, reason="" if passed else "utility.model_utility 0.81 < 0.9")])


def _report(folder: Path, passed: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    report = EvalReport(model_uri="m", base_uri="b", scope_uri="s", scope_sha256="f" * 64,
                        candidate={"forget.prob": 0.05, "utility.model_utility": 0.81, "note": None},
                        base={"forget.prob": 0.97, "utility.model_utility": 0.83, "bad": float("nan")},
                        verdict=_verdict(passed))
    (folder / "report.json").write_text(report.model_dump_json())
    (folder / "report.md").write_text("# report\n")
    (folder / "plots").mkdir(exist_ok=True)
    (folder / "plots" / "curve.png").write_bytes(b"\x89PNG fake")
    return folder


def _scope(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = ScopeManifest(request_ids=["r1"], selector_hashes={}, source=[], corpus_uri="mem://", seed=0,
                             sets={"forget": SetInfo(file="forget.jsonl", count=1, sha256="a" * 64)})
    (folder / "manifest.json").write_text(manifest.model_dump_json())
    (folder / "forget.jsonl").write_text('{"id": "secret"}\n')
    return folder, manifest.sha256


def _candidate(factory, tmp_path: Path, seed: int = 1, parent: str | None = "1", name: str = "m") -> Path:
    model = factory(tmp_path / f"cand{seed}", seed)
    (model / "training.json").write_text(json.dumps({
        "method": "npo", "params": {"beta": 0.1, "lr": 3e-4}, "seed": 0, "world_size": 2, "steps": 5,
        "tokens": 100, "wall_seconds": 1.5, "versions": {"torch": "2.13.0"},
        "parent": {"name": name, "version": parent} if parent else None}))
    return model


def test_report_helpers() -> None:
    report = EvalReport(model_uri="m", base_uri="b", scope_uri="s", scope_sha256="f" * 64,
                        candidate={"forget.prob": 0.1, "x": None}, base={"privacy.mia_auc.min_k": 0.9},
                        verdict=_verdict(False))
    assert reg.report_metrics(report) == {
        "candidate.forget.prob": 0.1, "base.privacy.mia_auc.min_k": 0.9, "gate.forget.value": 0.05,
        "gate.forget.passed": 1.0, "gate.utility.value": 0.81, "gate.utility.passed": 0.0}
    assert reg.report_gate(report) == "failed" and reg.report_gate(None) is None
    assert reg.gate_reason_tags(report) == {
        "unlearnops.gate_failed.utility": "utility.model_utility 0.81 < 0.9"}
    params = reg.training_params(TrainingRecord(method="npo", params={"beta": 0.1}, versions={"torch": "2"}))
    assert params == {"method": "npo", "params.beta": "0.1", "versions.torch": "2", "stopped_early": "False"}
    assert reg.fingerprint("w", "s", "1") != reg.fingerprint("w", "s", None)


def test_register_embedded(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    base = tiny_model_factory(tmp_path / "base", 0)
    ref = reg.register_model(str(base), "m")
    assert ref.version == "1"
    assert reg.register_model(str(base), "m").version == "1"  # idempotent
    cand = _candidate(tiny_model_factory, tmp_path)
    scope, scope_sha = _scope(tmp_path / "scope")
    ref2 = reg.register_model(str(cand), "m", report_uri=str(_report(tmp_path / "report")),
                              scope_uri=str(scope), request_ids=["r1", "r2"], kfp_run_id="kfp-1")
    assert ref2.version == "2"
    client = MlflowClient(tracking_uri=mlflow_embedded)
    mv = client.get_model_version("m", "2")
    tags = mv.tags
    assert tags["unlearnops.parent_version"] == "1"  # from training.json
    tokens = request_tokens(["r1", "r2"])  # request ids never in clear: keyed hashes
    assert tags["unlearnops.requests"] == ",".join(tokens) and tags["unlearnops.method"] == "npo"
    assert tags["unlearnops.scope_sha256"] == scope_sha and tags["unlearnops.gate"] == "passed"
    assert tags["unlearnops.kfp_run_id"] == "kfp-1"
    assert str(client.get_model_version_by_alias("m", "challenger").version) == "2"
    export = tags[modelio.EXPORT_TAG]
    assert export.endswith("registry/m/v2") and Path(export, "model.safetensors").is_file()
    run = client.get_run(tags["unlearnops.run_id"])
    assert run.data.params["method"] == "npo" and run.data.params["world_size"] == "2"
    assert run.data.params["params.beta"] == "0.1" and "library.torch" in run.data.params
    assert run.data.metrics["candidate.forget.prob"] == 0.05 and run.data.metrics["base.forget.prob"] == 0.97
    assert "base.bad" not in run.data.metrics and run.data.metrics["gate.utility.passed"] == 1.0
    assert run.info.run_name == f"register-m-npo-{tokens[0]}+1"
    assert f"npo unlearning of requests {tokens[0]}, {tokens[1]}" in mv.description
    texts = (mv.description, run.info.run_name, run.data.tags[reg.REQUESTS_TAG], tags[reg.REQUESTS_TAG])
    assert not any(r in text for r in ("r1", "r2") for text in texts)
    arts = {a.path for folder in ("report", "scope", "training")
            for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"report/report.json", "report/report.md", "scope/manifest.json", "training/training.json"} <= arts
    assert "scope/forget.jsonl" not in arts  # the scope's records hold personal data: never logged
    assert reg.register_model(str(cand), "m", report_uri=str(tmp_path / "report"), scope_uri=str(scope),
                              request_ids=["r1", "r2"]).version == "2"
    # registry URIs resolve to the exported copy
    assert modelio.resolve("models:/m/2").uri == export
    assert modelio.resolve("models:/m@challenger").ref.version == "2"
    with modelio.LocalModel("models:/m@challenger") as path:
        assert (path / "config.json").is_file()
    with pytest.raises(modelio.ModelError, match="not found"):
        modelio.resolve("models:/m/9")


def test_pyfunc_predicts(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    import mlflow.pyfunc

    from unlearnops.serving import generate_texts

    base = tiny_model_factory(tmp_path / "base", 0)
    reg.register_model(str(base), "pf")
    mlflow.set_tracking_uri(mlflow_embedded)
    model = mlflow.pyfunc.load_model("models:/pf/1")
    got = model.predict(["who is the cat", "what"], params={"max_new_tokens": 4})
    direct = generate_texts(modelio.load_model(base), modelio.load_tokenizer(base),
                            ["who is the cat", "what"], 4)
    assert list(got) == direct


def test_register_bad_input(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    base = tiny_model_factory(tmp_path / "base", 0)
    with pytest.raises(reg.RegistrationError, match="model name"):
        reg.register_model(str(base), "bad name'")
    with pytest.raises(reg.RegistrationError, match="gate"):
        reg.register_model(str(base), "m", gate="maybe")
    with pytest.raises(reg.RegistrationError, match="not registered"):
        reg.register_model(str(base), "m", parent_version="7")
    with pytest.raises(reg.RegistrationError, match="report.json"):
        reg.register_model(str(base), "m", report_uri=str(tmp_path / "nope"))
    with pytest.raises(modelio.ModelError):
        reg.register_model(str(tmp_path / "missing"), "m")


def test_register_op_component(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    from unlearnops.components.register.component import register_op

    base = tiny_model_factory(tmp_path / "base", 0)
    version = register_op.python_func(model_uri=str(base), name="kfp", gate="passed", request_ids=["a"],
                                      kfp_run_id="run-7")
    assert version == "1"


@pytest.mark.services
def test_register_on_server(mlflow_env: str, tiny_model_factory, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    base = tiny_model_factory(tmp_path / "base", 0)
    ref = reg.register_model(str(base), "srv")
    mv = MlflowClient(tracking_uri=mlflow_env).get_model_version("srv", ref.version)
    export = mv.tags[modelio.EXPORT_TAG]
    assert export.startswith("s3://") and storage.exists(storage.join(export, "model.safetensors"))
    assert reg.register_model(str(base), "srv").version == ref.version
    with modelio.LocalModel(f"models:/srv/{ref.version}") as path:
        assert reg.weights_sha256(path) == reg.weights_sha256(base)


@pytest.mark.services
def test_step_runs_nest_under_the_registration_run(mlflow_env: str, tiny_model_factory,
                                                   tmp_path: Path) -> None:
    """Issue 9: runs of the unlearn and evaluate steps, from training.json and report.json, are children
    of the registration run (mlflow.parentRunId) on a real MLflow server: params, curve, probes, gates."""
    from mlflow import MlflowClient

    cand = _candidate(tiny_model_factory, tmp_path, parent=None)
    training = json.loads((cand / "training.json").read_text())
    training.update(curve=[{"loss": 2.0 - i / 10, "lr": 1e-4} for i in range(5)],
                    probes=[{"step": 0, "forget_prob": 0.9}, {"step": 5, "forget_prob": 0.2}],
                    stopping={"mode": "fixed steps", "reason": "ran its steps"})
    (cand / "training.json").write_text(json.dumps(training))
    ref = reg.register_model(str(cand), "nest", report_uri=str(_report(tmp_path / "report", passed=False)),
                             request_ids=["r1"])
    client = MlflowClient(tracking_uri=mlflow_env)
    parent = client.get_run(client.get_model_version("nest", ref.version).tags[reg.RUN_TAG])
    children = {r.data.tags[reg.STEP_TAG]: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == {"unlearn", "evaluate"} and parent.data.tags[reg.STEP_TAG] == "register"
    unlearn, evaluate, token = children["unlearn"], children["evaluate"], request_tokens(["r1"])[0]
    assert (unlearn.info.run_name, evaluate.info.run_name) == (f"unlearn-nest-npo-{token}",
                                                               f"evaluate-nest-npo-{token}")
    assert unlearn.data.params["params.beta"] == "0.1" and unlearn.data.metrics["training.steps"] == 5
    assert unlearn.data.tags["unlearnops.stopping"] == "fixed steps: ran its steps"

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(unlearn.info.run_id, key))

    assert history("train.loss") == [(i + 1, pytest.approx(2.0 - i / 10)) for i in range(5)]
    assert history("probe.forget_prob") == [(0, 0.9), (5, 0.2)]
    assert evaluate.data.metrics["candidate.forget.prob"] == 0.05 and evaluate.data.params["device"] == "cpu"
    assert evaluate.data.metrics["gate.utility.passed"] == 0.0
    assert evaluate.data.tags[reg.GATE_TAG] == "failed"
    assert evaluate.data.tags["unlearnops.gate_failed.utility"] == "utility.model_utility 0.81 < 0.9"


def test_model_from_code_pinned(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    """Issue 12: the pyfunc is models-from-code (no pickle on load) with exactly pinned requirements."""
    import mlflow
    import yaml

    base = tiny_model_factory(tmp_path / "base", 0)
    reg.register_model(str(base), "code")
    mlflow.set_tracking_uri(mlflow_embedded)
    local = Path(mlflow.artifacts.download_artifacts("models:/code/1", dst_path=str(tmp_path / "dl")))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor.get("model_code_path") and not list(local.rglob("*.pkl"))
    reqs = [r for r in (local / "requirements.txt").read_text().splitlines() if r and not r.startswith("#")]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][^ ;,<>=]*", r) for r in reqs), reqs


def test_gate_override_only_from_report(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    """Issue 12: a verdict changes only from its report, by a named operator with a reason (tags)."""
    from typer.testing import CliRunner

    from unlearnops import cli

    cli._load_plugins()
    base = tiny_model_factory(tmp_path / "base", 0)
    failed = str(_report(tmp_path / "r-failed", passed=False))
    runner = CliRunner()
    bare = runner.invoke(cli.app, ["register", "--model", str(base), "--name", "g", "--gate", "passed"])
    assert bare.exit_code == 2 and "needs the evaluate report" in bare.output
    with pytest.raises(reg.RegistrationError, match="contradicts the report's verdict"):
        reg.register_model(str(base), "g", report_uri=failed, gate="passed")
    for bad, match in [(reg.GateOverride("passed", "", "legal approved it"), "--operator"),
                       (reg.GateOverride("passed", "ana", "ok"), "at least 10"),
                       (reg.GateOverride("failed", "ana", "no change at all"), "nothing to override")]:
        with pytest.raises(reg.RegistrationError, match=match):
            reg.register_model(str(base), "g", report_uri=failed, gate_override=bad)
    with pytest.raises(reg.RegistrationError, match="needs the report"):
        reg.register_model(str(base), "g",
                           gate_override=reg.GateOverride("passed", "ana", "legal approved it"))
    override = ["register", "--model", str(base), "--name", "g", "--report", failed, "--override-gate",
                "passed", "--operator", "ana.ops", "--reason", "MIA gap within noise; reviewed in INC-42"]
    unknown = runner.invoke(cli.app, [*override, "--request", "nope"])
    assert unknown.exit_code == 2 and "no request 'nope'" in unknown.output, unknown.output
    with Ledger() as ledger:
        ledger.file(ForgetRequest(id="r1", kind="subject", selectors={"subject_ids": ["p1"]},
                                  legal_basis="gdpr-art17", requester="dpo@example.org"), actor="clerk")
    out = runner.invoke(cli.app, [*override, "--request", "r1"])
    assert out.exit_code == 0, out.output
    tags = _tags_of("g", "1")
    assert tags[reg.GATE_TAG] == "passed" and tags[reg.REPORT_VERDICT_TAG] == "failed"
    detail = json.loads(tags[reg.OVERRIDE_TAG])
    assert detail["operator"] == "ana.ops" and detail["reason"].startswith("MIA gap")
    assert detail["report_uri"] == failed and detail["from"] == "failed"
    with Ledger() as ledger:  # the override is in the ledger's hash chain too
        last = ledger.get("r1").history[-1]
        assert (last.event, last.actor, last.code) == ("override", "ana.ops", "gate-override")
        assert last.reason.startswith("MIA gap") and ledger.verify_chain().ok


def test_override_of_an_already_registered_candidate_says_so(mlflow_embedded: str, tiny_model_factory,
                                                            tmp_path: Path) -> None:
    """Regression: --override-gate on a candidate registered before without it returned that version
    quietly (the override neither applied nor recorded); it now exits 2 with one line saying so."""
    from typer.testing import CliRunner

    from unlearnops import cli

    cli._load_plugins()
    base = tiny_model_factory(tmp_path / "base", 0)
    failed = str(_report(tmp_path / "r-failed", passed=False))
    assert reg.register_model(str(base), "o", report_uri=failed).version == "1"
    reason = "MIA gap within noise; reviewed in INC-42"
    args = ["register", "--model", str(base), "--name", "o", "--report", failed, "--override-gate", "passed",
            "--operator", "ana.ops", "--reason", reason]
    out = CliRunner().invoke(cli.app, args)
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "models:/o/1 already holds this candidate (gate failed" in said, said
    assert "--override-gate passed was not applied and nothing was recorded" in said
    tags = _tags_of("o", "1")
    assert tags[reg.GATE_TAG] == "failed" and reg.OVERRIDE_TAG not in tags
    other = tiny_model_factory(tmp_path / "other", 3)  # an override that was applied: a retry returns it
    override = reg.GateOverride("passed", "ana.ops", reason)
    assert reg.register_model(str(other), "o", report_uri=failed, gate_override=override).version == "2"
    assert reg.register_model(str(other), "o", report_uri=failed, gate_override=override).version == "2"


def test_requests_tag_holds_keyed_hashes(unlearnops_home: Path) -> None:
    """The requests tag lists request tokens; a version tagged in clear before still reads (hashed)."""
    tokens = request_tokens(["erase-1", "erase-2"])
    assert all(len(t) == 12 for t in tokens) and tokens != ["erase-1", "erase-2"]
    legacy = {reg.REQUESTS_TAG: "erase-1,erase-2"}
    assert tagged_requests({reg.REQUESTS_TAG: ",".join(tokens)}) == tagged_requests(legacy) == tokens
    assert serves(legacy, ["erase-2"]) and not serves(legacy, ["erase-3"]) and not serves({}, ["erase-1"])


def _tags_of(name: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    from unlearnops.settings import get_settings

    return dict(MlflowClient(tracking_uri=get_settings().tracking_uri).get_model_version(name, version).tags)


@pytest.mark.slow
def test_real_evaluate_report_reaches_the_mlflow_run(mlflow_embedded: str, tmp_path: Path) -> None:
    """The evaluate step's own report.json, registered: its metrics and gate values are on the run."""
    from mlflow import MlflowClient
    from unlearnops.components.evaluate.evaluate import evaluate_model
    from unlearnops.components.evaluate.metrics import EvalOptions

    from tests.eval_helpers import write_models, write_scope

    models, scope = write_models(tmp_path / "models"), write_scope(tmp_path / "scope")
    report = evaluate_model(str(models["candidate"]), str(models["base"]), str(scope), str(tmp_path / "eval"),
                            options=EvalOptions(robustness=False), show_progress=False)
    ref = reg.register_model(str(models["candidate"]), "evaluated", report_uri=str(tmp_path / "eval"),
                             scope_uri=str(scope), request_ids=["r1"])
    client = MlflowClient(tracking_uri=mlflow_embedded)
    run = client.get_run(client.get_model_version("evaluated", ref.version).tags["unlearnops.run_id"])
    assert report.candidate["forget.prob"] is not None and report.verdict is not None
    assert run.data.metrics["candidate.forget.prob"] == pytest.approx(report.candidate["forget.prob"])
    assert run.data.metrics["base.forget.prob"] == pytest.approx(report.base["forget.prob"])
    checked = [g for g in report.verdict.gates if not g.skipped]
    assert checked and all(run.data.metrics[f"gate.{g.gate}.passed"] == float(g.passed) for g in checked)
