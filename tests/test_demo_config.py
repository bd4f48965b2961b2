"""The demo's unlearning configuration passes the default gate policy on the tiny benchmark model.

``make demo`` runs pipelines/demo.py's method and parameters on its erasure request (two people of
the tiny build's forget split; retain samples of DEMO_RETAIN_MULTIPLE x the forget set) and judges
the candidate with the default policy (components/evaluate/default_policy.yaml), robustness
included. This runs the same configuration
in-process (world size 1) on the same build and request, and checks every gate passes — the issue-10
claim that the demo promotes an honestly unlearned model rather than ending in a refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_configuration_passes_the_default_policy(bench_data: Path, tiny_models: Path,
                                                      tmp_path: Path) -> None:
    from unlearnops.components.evaluate.evaluate import evaluate_model
    from unlearnops.components.evaluate.metrics import EvalOptions
    from unlearnops.components.scope.resolve import resolve_scope
    from unlearnops.components.unlearn.runner import run_unlearning
    from unlearnops.pipelines.demo import DEMO_METHOD, DEMO_PARAMS, DEMO_RETAIN_MULTIPLE, demo_request

    from unlearnops import documents
    from unlearnops.data.generate import read_people
    from unlearnops.types import UnlearnSpec

    build = json.loads((tiny_models / "build.json").read_text())
    people = {p["subject_id"]: p for p in read_people(str(bench_data))}
    scope = str(tmp_path / "scope")
    resolve_scope([demo_request(build, people)], str(bench_data), scope, seed=0,
                  retain_multiple=DEMO_RETAIN_MULTIPLE)
    out = str(tmp_path / "candidate")
    run_unlearning(UnlearnSpec(method=DEMO_METHOD, params=DEMO_PARAMS, seed=0), scope,
                   str(tiny_models / "base"), out, local=True)  # calibrated stopping: the default
    stopping = documents.read_training(out).stopping
    assert stopping is not None and stopping.mode == "calibrated"
    report = evaluate_model(out, str(tiny_models / "base"), scope, str(tmp_path / "eval"),
                            reference_uri=str(tiny_models / "reference"),
                            options=EvalOptions(robustness=True), show_progress=False)
    assert report.verdict is not None
    failed = {g.gate: g.reason for g in report.verdict.gates if not g.passed}
    skipped = [g.gate for g in report.verdict.gates if g.skipped]
    assert report.verdict.passed and not failed, failed
    assert not skipped, skipped  # every gate computed, none waved through
    # what the neighbor gates measure is kept, and the forgotten answers are at the holdout level
    assert report.candidate["utility.neighbor_retention"] >= 0.9
    assert report.candidate["forget.holdout_excess.rouge_l"] <= 0.0
