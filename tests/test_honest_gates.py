"""Issue 10's v1 → v3 damage, reproduced on the tiny benchmark, and the default policy refusing it.

An over-forgetting NPO run (the session's ``npo_tiny``: the tiny-preset defaults, forgetting 10%
of the people) keeps every answer of the retain-train sample the objective saw, while people kept
*outside* that sample, neighbors and the forgotten people's answers all collapse. Measured on the
retain-eval sample the damage is visible, and the default policy fails it; the retain-only
reference model (exact unlearning) passes the same policy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from unlearnops.components.evaluate.evaluate import evaluate_model
from unlearnops.components.evaluate.metrics import EvalOptions
from unlearnops.components.scope.resolve import read_manifest, read_set
from unlearnops.components.unlearn.benchmark_models import exact_accuracy

from unlearnops import modelio

pytestmark = pytest.mark.slow  # builds the shared tiny models (~1 min) when first used


def _exact(model_dir: Path, records: list[dict]) -> float:
    return exact_accuracy(modelio.load_model(model_dir, "cpu"), modelio.load_tokenizer(model_dir), records)


def test_over_forgetting_damage_is_refused(tiny_models: Path, tiny_scope: Path, npo_tiny: Path,
                                           tmp_path: Path) -> None:
    base, reference = tiny_models / "base", tiny_models / "reference"
    manifest = read_manifest(str(tiny_scope))
    train, held = read_set(str(tiny_scope), "retain"), read_set(str(tiny_scope), "retain_eval")
    assert manifest.sets["retain_eval"].count == len(held) > 0
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    # v1 → v3: the retain sample the objective trained on looks untouched ...
    assert _exact(base, train) >= 0.95 and _exact(npo_tiny, train) >= 0.9
    # ... while kept people outside it lose their answers, and the forgotten people are gone
    assert _exact(npo_tiny, held) < 0.8 * _exact(base, held)
    assert _exact(npo_tiny, read_set(str(tiny_scope), "forget")) == 0.0

    options = EvalOptions(robustness=False)
    report = evaluate_model(str(npo_tiny), str(base), str(tiny_scope), str(tmp_path / "npo"),
                            reference_uri=str(reference), options=options, show_progress=False,
                            answer_examples=3)
    assert report.verdict is not None and not report.verdict.passed
    failed = {g.gate for g in report.verdict.gates if not g.passed}
    # held-out knowledge, neighbors, over-forgetting below the holdout level and the membership
    # signal it leaves are each caught
    assert {"kept-people-answers", "neighbor-answers", "mia-at-chance"} <= failed, failed
    assert report.candidate["utility.retention.retain"] < 0.9
    assert report.candidate["forget.holdout_ratio.prob"] < 0.2  # far below never-trained people
    skipped = {g.gate for g in report.verdict.gates if g.skipped}
    assert skipped == {"relearn-recovery", "quantization-robust"}  # shown, not "pass"
    md = (tmp_path / "npo" / "report.md").read_text()
    assert "| skipped |" in md and "| FAIL |" in md
    # base, reference and candidate answers side by side (opt-in: they are personal data)
    side = md.split("## Forget answers side by side")[1]
    assert "| record | base | reference | candidate |" in side and side.count("\n| ") >= 3

    # the gold standard passes the same default policy: the gates are reachable
    gold = evaluate_model(str(reference), str(base), str(tiny_scope), str(tmp_path / "ref"),
                          options=options, show_progress=False)
    assert gold.verdict is not None and gold.verdict.passed, gold.verdict.reasons
    assert "side by side" not in (tmp_path / "ref" / "report.md").read_text()  # off by default
