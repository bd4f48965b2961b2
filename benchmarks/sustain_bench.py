"""Sustainability (issue 10): four successive erasure requests, each unlearned from the champion.

On the ``tiny`` benchmark build of :mod:`benchmarks.methods_bench` (share 0.1: four forget people),
request i asks to forget forget-person i alone; its DataScope is resolved by the current scope code,
the pipeline's default method and recipe (:data:`unlearnops.pipelines.run_request.DEFAULT_METHOD`,
calibrated stopping) unlearns it from the current champion (the base at first, then the last
candidate that passed the gates — a refused candidate is never promoted), and the full evaluator
(robustness on, the retain-only reference given) judges it under the default policy. Utility and
neighbor retention are held-out metrics relative to the *original* base, so damage that accumulates
over requests shows. Set ``SUSTAIN_BENCH_SEEDS`` (default ``0``) to repeat the chain at more seeds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import load1
from benchmarks.methods_bench import SUSTAIN_REQUESTS, evaluate, prepare, threads

SHARE = 0.1


def seeds() -> list[int]:
    return [int(s) for s in os.environ.get("SUSTAIN_BENCH_SEEDS", "0").split(",") if s.strip()]


def unlearn_default(scope: str, champion: str, out: Path, seed: int) -> dict[str, Any]:
    """The default method and recipe (as ``unlearnops run`` uses it), in-process, world size 1."""
    from unlearnops.components.unlearn.runner import run_unlearning
    from unlearnops.pipelines.run_request import DEFAULT_METHOD, with_default_params

    from unlearnops.documents import read_training
    from unlearnops.types import UnlearnSpec

    started = time.perf_counter()
    spec = UnlearnSpec(method=DEFAULT_METHOD, params=with_default_params(DEFAULT_METHOD, {}), seed=seed,
                       compute={"torch_threads": threads()})
    run_unlearning(spec, scope, champion, str(out), local=True)  # calibrated stopping: the default
    summary = read_training(str(out))
    return {"wall_seconds": time.perf_counter() - started, "steps": summary.steps,
            "kept_step": summary.stopping.kept_step if summary.stopping else None}


def chain(seed: int, work: Path) -> list[dict[str, Any]]:
    """Four one-person requests in turn, each from the previous champion."""
    from unlearnops.components.scope.resolve import resolve_scope

    from unlearnops.data.generate import subject_request

    paths = prepare(SHARE)
    build = json.loads((Path(paths["root"]) / "build.json").read_text())
    champion, label, steps = paths["base"], "base", []
    for i, person in enumerate(sorted(build["forget_subject_ids"])[:SUSTAIN_REQUESTS], start=1):
        folder = work / f"seed{seed}-request{i}"
        scope = folder / "scope"
        resolve_scope([subject_request([person], request_id=f"sustain-{i}")], paths["corpus"], str(scope),
                      seed=0, parallel="local")
        trained = unlearn_default(str(scope), champion, folder / "model", seed)
        row = evaluate(paths, str(folder / "model"), folder / "eval", scope=str(scope))
        m = row["metrics"]
        steps.append({"seed": seed, "request": i, "from": label, "passed": row["passed"],
                      "failed_gates": row["failed_gates"], "skipped_gates": row["skipped_gates"],
                      "utility_x_base": m.get("utility.model_utility_x_base"),
                      "knowledge_retention": m.get("utility.knowledge_retention"),
                      "neighbor_retention": m.get("utility.neighbor_retention"),
                      "neighbor_answers": m.get("utility.retention.neighbor"),
                      "forget_rouge": m.get("forget.rouge_l"), "kept_step": trained["kept_step"],
                      "wall_seconds": trained["wall_seconds"], "load1": load1()})
        if row["passed"]:  # promoted: the next request starts from it
            champion, label = str(folder / "model"), f"request {i}"
    return steps


def run() -> dict[str, Any]:
    import tempfile

    import torch
    from unlearnops.pipelines.run_request import DEFAULT_METHOD, with_default_params

    torch.set_num_threads(threads())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sustain-bench-") as tmp:
        requests = [row for seed in seeds() for row in chain(seed, Path(tmp))]
    return {"preset": os.environ.get("METHODS_BENCH_PRESET", "tiny"), "method": DEFAULT_METHOD,
            "params": with_default_params(DEFAULT_METHOD, {}), "seeds": seeds(), "requests": requests,
            "wall_seconds": time.perf_counter() - started}


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary_markdown(result: dict[str, Any]) -> str:
    lines = [f"## Sustainability: four successive requests on the `{result['preset']}` model (`sustain`)\n",
             f"Four one-person erasure requests in turn (the four forget people of the share-0.1 build), "
             f"each unlearned from the current champion with the pipeline's default method "
             f"(`{result['method']}`, {json.dumps(result['params'], sort_keys=True)}, calibrated stopping) "
             "and judged by the default gate policy with the retain-only reference; a refused candidate "
             "is not promoted, so the next request starts from the last one that passed. Utility, kept "
             "answers and neighbors: held-out (retain-eval / neighbor sets), × the *original* base. "
             f"In-process, 1 torch thread, wall {result['wall_seconds'] / 60:.1f} min.\n",
             "| seed | request | unlearned from | verdict | utility × base | kept answers × base "
             "| neighbor ret. | neighbor answers | forget ROUGE | kept step | wall s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["requests"]:
        verdict = "pass" if s["passed"] else "FAIL: " + ", ".join(s["failed_gates"])
        lines.append(f"| {s['seed']} | {s['request']} | {s['from']} | {verdict} | "
                     f"{_fmt(s['utility_x_base'], '.2f')} | {_fmt(s['knowledge_retention'], '.2f')} | "
                     f"{_fmt(s['neighbor_retention'], '.2f')} | {_fmt(s['neighbor_answers'], '.2f')} | "
                     f"{_fmt(s['forget_rouge'], '.2f')} | {_fmt(s['kept_step'], 'd')} | "
                     f"{_fmt(s['wall_seconds'], '.1f')} | {_fmt(s['load1'], '.1f')} |")
    lines.append("")
    return "\n".join(lines)
