"""Calibrated stopping's target: the holdout level of the base model on the scope's holdout set."""

from __future__ import annotations

from pathlib import Path

import pytest
from unlearnops.components.unlearn import calibrate


def test_stop_when_is_a_band_around_the_holdout_level(mini_unlearn: dict[str, Path]) -> None:
    scope, model = str(mini_unlearn["scope"]), str(mini_unlearn["model"])
    level = calibrate.holdout_level(scope, model)
    assert level is not None and 0.0 < level < 1.0
    stop = calibrate.calibrated_stop_when(scope, model, band=3.0, retain_ratio=0.8)
    assert stop == {"forget_prob_max": pytest.approx(3.0 * level), "retain_prob_min_ratio": 0.8}


def test_no_holdout_no_calibration(mini_unlearn: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    scope = tmp_path / "scope"
    shutil.copytree(mini_unlearn["scope"], scope)
    (scope / "holdout.jsonl").write_text("")
    assert calibrate.calibrated_stop_when(str(scope), str(mini_unlearn["model"])) is None
