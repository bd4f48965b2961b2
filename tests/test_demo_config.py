"""The demo's unlearning configuration passes the default gate policy on the tiny benchmark model.

``make demo`` runs pipelines/demo.py's method and parameters on its erasure request (two people of
the tiny build's forget split; retain samples of DEMO_RETAIN_MULTIPLE x the forget set) and judges
the candidate with the default policy (components/evaluate/default_policy.yaml), robustness
included. This runs the same configuration in-process (world size 1) on the same build and
request, and checks every gate passes — the issue-10 claim that the demo promotes an honestly
unlearned model rather than ending in a refusal.
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


def test_demo_configuration_passes_with_avx2_kernels(tmp_path: Path) -> None:
    """The verdict above depends on the CPU's math kernels: at 2 x retain samples the demo passed
    with this machine's AVX-512 kernels and failed with the AVX2 kernels of CI's machines (3 of 20
    kept-people answers lost). So the test above runs again in a child with AVX2 kernels forced
    (torch's ATen, MKL and oneDNN), its models built there too, as such a machine builds them."""
    import os
    import subprocess
    import sys

    avx2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env = {**os.environ, **avx2}
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    capability = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                check=True, timeout=120).stdout.strip()
    if capability != "AVX2":
        pytest.skip(f"this CPU runs {capability} kernels when AVX2 is asked for: no AVX2 to test")
    test = f"{Path(__file__).resolve()}::test_demo_configuration_passes_the_default_policy"
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test,
                            "--basetemp", str(tmp_path / "avx2")], env=env, capture_output=True, text=True,
                           timeout=1200, cwd=Path(__file__).resolve().parent.parent, check=False)
    assert child.returncode == 0, child.stdout[-4000:]
