"""The evaluate step end to end: report folder, CLI exit codes, the KFP component, and an
NPO-unlearned tiny benchmark model against the lenient and strict policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner
from unlearnops.components.evaluate import cli as _cli  # noqa: F401  (registers `evaluate`)
from unlearnops.components.evaluate.evaluate import evaluate_model
from unlearnops.components.evaluate.gates import GatePolicy

from tests.eval_helpers import write_models, write_scope
from unlearnops.cli import app
from unlearnops.types import EvalReport

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    paths = write_models(root / "models")
    paths["scope"] = write_scope(root / "scope")
    return paths


def _args(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(setup["candidate"]), "--base", str(setup["base"]),
            "--scope", str(setup["scope"]), "--out", str(out), *extra]


# ------------------------------------------------------------------ bad input (fast)
def test_cli_bad_policy_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("gates:\n  - metric: forget.rougel\n    max: 0.3\n")
    result = runner.invoke(app, ["evaluate", "--model", "m", "--base", "b", "--scope", "s",
                                 "--out", str(tmp_path / "o"), "--policy", str(bad)])
    assert result.exit_code == 2
    assert "unknown metric 'forget.rougel'" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_missing_scope_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--model", "m", "--base", "b", "--scope",
                                 str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a DataScope folder" in result.output


@pytest.mark.slow
def test_cli_bad_model_exits_2(setup: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "empty"), "--base", str(setup["base"]),
                                 "--scope", str(setup["scope"]), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "candidate model" in result.output and "config.json" in result.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the step on synthetic models
@pytest.fixture(scope="module")
def full_report(setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalReport, Path]:
    out = tmp_path_factory.mktemp("report") / "out"
    report = evaluate_model(str(setup["candidate"]), str(setup["base"]), str(setup["scope"]), str(out),
                            reference_uri=str(setup["reference"]), show_progress=False)
    return report, out


@pytest.mark.slow
def test_report_folder(full_report: tuple[EvalReport, Path]) -> None:
    report, out = full_report
    saved = EvalReport.model_validate_json((out / "report.json").read_text())
    assert saved.verdict is not None and saved.verdict == report.verdict
    for name in ("forget.prob", "forget.rouge_l", "utility.model_utility", "privacy.mia_auc.min_k",
                 "robustness.relearn_recovery", "forget.forget_quality", "cost.worker_seconds"):
        assert saved.candidate[name] is not None, name
    for name in ("forget.prob", "utility.model_utility", "privacy.mia_auc", "robustness.quant4.rouge_l"):
        assert saved.base[name] is not None and saved.reference and saved.reference[name] is not None
    # the candidate forgot: lower forget probability than the base, utility kept
    assert saved.candidate["forget.prob"] < saved.base["forget.prob"]
    assert saved.reference["privacy.privleak"] == pytest.approx(0.0)
    assert saved.counts["forget_quality_n_candidate"] == saved.counts["forget_quality_n_reference"] > 0
    md = (out / "report.md").read_text()
    assert "## Gates" in md and "## Forget" in md and "| forget.rouge_l |" in md
    assert {"plots/forget.png", "plots/mia_roc.png"} <= set(saved.plots)
    for plot in saved.plots:
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.parent.glob("*.tmp*"))


@pytest.mark.slow
def test_cli_lenient_passes_strict_fails(setup: dict[str, Path], tmp_path: Path) -> None:
    ok = runner.invoke(app, _args(setup, tmp_path / "lenient", "--policy", "lenient", "--no-robustness"))
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.output and (tmp_path / "lenient" / "report.json").is_file()
    bad = runner.invoke(app, _args(setup, tmp_path / "strict", "--policy", "strict",
                                   "--reference", str(setup["reference"]), "--no-robustness"))
    assert bad.exit_code == 3, bad.output
    report = EvalReport.model_validate_json((tmp_path / "strict" / "report.json").read_text())
    assert report.verdict is not None and not report.verdict.passed
    skipped = [g for g in report.verdict.gates if g.metric.startswith("robustness.")]
    assert skipped and all(g.passed and "skipped" in g.reason for g in skipped)
    assert "forget-prob: forget.prob" in bad.output  # 0.1+ > 0.05


@pytest.mark.slow
def test_component_python_func(setup: dict[str, Path], tmp_path: Path) -> None:
    from kfp.dsl import Metrics
    from unlearnops.components.evaluate.component import evaluate_op

    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    policy = (Path(__file__).parents[1] / "components/evaluate/policies/strict.yaml").read_text()
    out = evaluate_op.python_func(model_uri=str(setup["candidate"]), base_uri=str(setup["base"]),
                                  scope_uri=str(setup["scope"]), out_uri=str(tmp_path / "out"),
                                  metrics=metrics, policy_yaml=policy, robustness=False)
    assert out.passed is False and "forget.prob" in out.reasons
    assert out.report_uri.endswith("report.json") and Path(out.report_uri).is_file()
    assert metrics.metadata["forget.prob"] == pytest.approx(
        json.loads(Path(out.report_uri).read_text())["candidate"]["forget.prob"])


# ------------------------------------------------------------------ the benchmark's NPO model
@pytest.mark.slow
def test_npo_tiny_lenient_passes_strict_fails(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    try:
        models, scope, npo = (request.getfixturevalue(n) for n in ("tiny_models", "tiny_scope", "npo_tiny"))
    except pytest.FixtureLookupError:
        pytest.skip("shared fixtures tiny_models/tiny_scope/npo_tiny not defined")
    base, reference = str(Path(models) / "base"), str(Path(models) / "reference")
    report = evaluate_model(str(npo), base, str(scope), str(tmp_path / "out"), reference_uri=reference,
                            policy=GatePolicy.load("lenient"), show_progress=False)
    assert report.verdict is not None and report.verdict.passed, report.verdict
    strict = GatePolicy.load("strict")
    verdict = strict.evaluate(report.candidate, report.base, report.reference)
    assert not verdict.passed
    for gate, result in zip(strict.gates, verdict.gates, strict=True):
        value = report.candidate[gate.metric]
        scale = report.base[gate.metric] if gate.relative_to == "base" else 1.0
        inside = value is not None and scale is not None \
            and (gate.min is None or value >= gate.min * scale) \
            and (gate.max is None or value <= gate.max * scale)
        assert result.passed == inside, result
        if not result.passed:
            assert gate.metric in result.reason and f"{value:.4g}" in result.reason
    # NPO drives the forget set far below the reference: what the strict policy catches is
    # over-forgetting (neighbors, a low-likelihood membership signal, forget quality)
    failed = {g.gate for g in verdict.gates if not g.passed}
    assert failed & {"neighbor-retention", "mia-auc", "forget-quality"}, failed
    assert report.candidate["forget.prob"] < report.base["forget.prob"]
    # the shipped default policy refuses this over-forgetting run (tests/test_honest_gates.py)
    default = GatePolicy.default().evaluate(report.candidate, report.base, report.reference)
    assert not default.passed
