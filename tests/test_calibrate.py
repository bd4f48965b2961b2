"""Calibrated stopping (the default): unlearn to the holdout level of the scope, not to zero."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from unlearnops.components.unlearn import calibrate

from unlearnops import documents


def test_nothing_to_calibrate_on_an_untrained_model(mini_unlearn: dict[str, Path]) -> None:
    scope, model = str(mini_unlearn["scope"]), str(mini_unlearn["model"])
    level = calibrate.holdout_level(scope, model)
    assert level is not None and 0.0 < level < 1.0
    found = calibrate.calibration(scope, model)  # random weights: forget set already at the level
    assert found["stop_when"] is None and "already at the holdout level" in found["reason"]


def test_no_holdout_no_calibration(mini_unlearn: dict[str, Path], tmp_path: Path) -> None:
    scope = tmp_path / "scope"
    shutil.copytree(mini_unlearn["scope"], scope)
    (scope / "holdout.jsonl").write_text("")
    assert calibrate.calibrated_stop_when(str(scope), str(mini_unlearn["model"])) is None


@pytest.mark.slow
def test_default_run_stops_at_the_holdout_level(tiny_models: Path, tiny_scope: Path, tmp_path: Path) -> None:
    from unlearnops.components.unlearn.benchmark_models import unlearn_defaults
    from unlearnops.components.unlearn.runner import run_unlearning

    from unlearnops.types import UnlearnSpec

    base = str(tiny_models / "base")
    found = calibrate.calibration(str(tiny_scope), base, band=3.0, retain_ratio=0.8)
    assert found["forget_level"] > 0.9 > 0.3 > found["holdout_level"] > 0.0  # memorised vs never seen
    assert found["stop_when"] == {"forget_prob_max": pytest.approx(3.0 * found["holdout_level"]),
                                  "forget_prob_min": pytest.approx(calibrate.FLOOR * found["holdout_level"]),
                                  "retain_prob_min_ratio": 0.8}
    params = unlearn_defaults("npo")
    params["train"].update(lr=3e-4, probe_every=2)
    run_unlearning(UnlearnSpec(method="npo", params=params), str(tiny_scope), base, str(tmp_path / "out"),
                   local=True)  # no stop_when: calibrated by default
    stopping = documents.read_training(str(tmp_path / "out")).stopping  # the trainer's record, validated
    assert stopping is not None and stopping.mode == "calibrated" and stopping.stop_when is not None
    assert stopping.stop_when["forget_prob_max"] < 0.3
    assert stopping.kept_step is not None and stopping.last_step is not None
    assert stopping.kept_step <= stopping.last_step and stopping.kept_why
    # the evaluation report says which checkpoint was kept and why
    from unlearnops.components.evaluate.evaluate import evaluate_model
    from unlearnops.components.evaluate.metrics import EvalOptions

    report = evaluate_model(str(tmp_path / "out"), base, str(tiny_scope), str(tmp_path / "eval"),
                            options=EvalOptions(robustness=False), show_progress=False)
    assert any(n.startswith("candidate: calibrated stopping; kept step") for n in report.notes), report.notes
