"""Honest-gate metric functions on hand-made numbers (components/evaluate/metrics/calibration.py)."""

from __future__ import annotations

import math

import pytest
from unlearnops.components.evaluate.metrics.calibration import (
    auc_band,
    auc_null_sd,
    band_excess,
    exact_matches,
    is_broken,
    mean_gap_band,
)


def test_exact_matches_ignore_case_spacing_and_full_stop() -> None:
    got = exact_matches(["Korvix", " korvix. ", "Waffles", "was born in Westbrook"],
                        ["Korvix", "Korvix", "Korvix", "Westbrook"])
    assert got.tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(("text", "broken"), [
    ("Westbrook", False), ("He works at Korvix as an engineer.", False), ("", True),
    ("was born in was born in 1984. Wes works", True), ("the the the the", True),
])
def test_is_broken(text: str, broken: bool) -> None:
    assert is_broken(text) is broken


def test_auc_null_band_from_set_sizes() -> None:
    # Mann-Whitney: Var(AUC | H0) = (n1 + n2 + 1) / (12 n1 n2); 10 + 10 → sqrt(21/1200)
    assert auc_null_sd(10, 10) == pytest.approx(math.sqrt(21 / 1200))
    assert auc_band(10, 10) == pytest.approx(2.498 * 0.13229, rel=1e-3)  # ten answers: ±0.33
    assert auc_band(1000, 1000) < 0.035 and auc_band(0, 5) is None
    assert band_excess(0.8, 0.5, 0.2) == pytest.approx(0.1)
    assert band_excess(0.35, 0.5, 0.2) == 0.0 and band_excess(None, 0.5, 0.2) is None


def test_auc_null_sd_matches_permutations() -> None:
    """The formula agrees with the spread of AUCs of random labelings (no signal)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.normal(size=30)
    aucs = [roc_auc_score(rng.permutation([1] * 12 + [0] * 18), scores) for _ in range(3000)]
    assert float(np.std(aucs)) == pytest.approx(auc_null_sd(12, 18), rel=0.08)


def test_mean_gap_band_is_welch_standard_error() -> None:
    a, b = [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.5, 0.5]
    se = math.sqrt((1 / 3) / 4 + (1 / 12) / 4)  # sample variances 1/3 and 1/12
    assert mean_gap_band(a, b, z=2.0) == pytest.approx(2.0 * se)
    assert mean_gap_band([1.0], b) is None
