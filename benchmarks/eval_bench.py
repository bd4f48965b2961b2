"""Evaluation speed: the full metric suite vs "the floor" — the bare model passes it needs.

Setup: the generated benchmark corpus, a DataScope resolved from it (forget = the first 10% of
people, as build-models splits them), and two models of the ``small`` preset's architecture
(Llama, hidden 512, 8 layers, ~25M parameters) with the corpus' BPE tokenizer. Training the
``small`` models takes far longer than a benchmark may run here, so the models are randomly
initialised (seeds 0 = base, 1 = candidate): pass costs depend on shapes, not weights, and a
random model never stops early at EOS, so generation runs to its full token budget (the worst case).

Measured in the same process through :mod:`benchmarks.harness` (floor and suite interleaved
round by round, median with min/max; ``EVAL_BENCH_REPEATS`` or ``BENCH_REPEATS`` rounds):
- floor: for each model, every teacher-forced pass the suite plans (one per set × question
  variant: answers, paraphrased questions, perturbed answers) as a bare batched forward
  (``model(...)``, nothing kept) and one bare batched greedy ``generate`` per generated set,
  with the same batch size and length sorting. ``floor_sets`` is the stricter subset: one
  teacher-forced pass per set + one generation per set.
- suite: the same passes through the shared scorer plus every core metric for both models
  (probabilities, ROUGE-L, truth ratios, extraction strength, exact memorization, MIA scores and
  AUCs, utility, fluency) — what ``evaluate_model`` does between loading and writing the report.
- robustness (reported separately): relearning fine-tune + re-measure, 4-bit rounding +
  re-measure, prefixed prompts.
Target: suite / floor <= 1.3.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import harness

PRESET = os.environ.get("EVAL_BENCH_PRESET", "small")
REPEATS = int(os.environ.get("EVAL_BENCH_REPEATS", "0")) or None  # None: the harness default
THREADS = int(os.environ.get("EVAL_BENCH_THREADS", "2"))
TARGET = 1.3


def _setup(root: Path) -> dict[str, Any]:
    from unlearnops.components.evaluate.evaluate import build_contexts, default_device, load_scope
    from unlearnops.components.evaluate.metrics import EvalOptions
    from unlearnops.components.evaluate.scoring import ModelScorer
    from unlearnops.components.scope.resolve import resolve_scope
    from unlearnops.components.unlearn.benchmark_models import (
        forget_split,
        new_model,
        read_training_records,
        train_tokenizer,
        training_people,
    )

    from unlearnops.data.generate import generate_benchmark, subject_request

    corpus, scope = str(root / "corpus"), str(root / "scope")
    generate_benchmark(corpus)
    records = read_training_records(corpus)
    forget = forget_split(training_people(corpus, records), 0.1, 0)
    resolve_scope([subject_request([p["subject_id"] for p in forget])], corpus, scope)
    tok = train_tokenizer(records)
    device = default_device()
    options = EvalOptions()
    data, _ = load_scope(scope, options)

    class Loaded:
        def __init__(self, role: str, seed: int) -> None:
            model = new_model(tok, PRESET, seed).to(device)
            self.role, self.path, self.training = role, None, None
            self.scorer = ModelScorer(model, tok, device, options.batch_size, name=role)

    models = {"candidate": Loaded("candidate", 1), "base": Loaded("base", 0)}
    params = sum(p.numel() for p in models["base"].scorer.model.parameters())
    return {"data": data, "models": models, "device": device, "params": params,
            "build": lambda: build_contexts(models, data)}  # type: ignore[arg-type]


@torch.inference_mode()
def _floor(env: dict[str, Any]) -> dict[str, float]:
    """Bare passes; seconds per pass kind (tf main / tf other variants / gen)."""
    from unlearnops.components.evaluate.evaluate import core_metrics
    from unlearnops.components.evaluate.metrics import pairs_for, plan
    from unlearnops.components.evaluate.scoring import target_tokens

    from unlearnops import textformat

    data = env["data"]
    out = {"tf_main": 0.0, "tf_variants": 0.0, "gen": 0.0}
    for loaded in env["models"].values():
        s = loaded.scorer
        pad = s.tokenizer.pad_token_id
        for p in plan(core_metrics()):
            records = data.sets.get(p.set) or []
            if not records:
                continue
            t = time.perf_counter()
            if p.kind == "tf":
                enc = [textformat.encode(s.tokenizer, a, b) for a, b in pairs_for(records, p.variant)]
                enc.sort(key=lambda e: len(e.input_ids))
                for i in range(0, len(enc), s.batch_size):
                    batch = textformat.collate(enc[i:i + s.batch_size], pad)
                    s.model(input_ids=batch["input_ids"].to(s.device),
                            attention_mask=batch["attention_mask"].to(s.device)).logits.sum().item()
                out["tf_main" if p.variant == "main" else "tf_variants"] += time.perf_counter() - t
            else:
                pairs = pairs_for(data.qa(p.set), p.variant)
                longest = target_tokens(s.tokenizer, [b for _, b in pairs])
                budget = min(data.options.max_new_tokens, longest + 4)
                enc = [textformat.encode(s.tokenizer, a, "", add_eos=False) for a, _ in pairs]
                enc.sort(key=lambda e: len(e.input_ids))
                for i in range(0, len(enc), s.batch_size):
                    batch = textformat.collate(enc[i:i + s.batch_size], pad, left_pad=True)
                    s.model.generate(input_ids=batch["input_ids"].to(s.device),
                                     attention_mask=batch["attention_mask"].to(s.device),
                                     max_new_tokens=budget, do_sample=False, num_beams=1,
                                     pad_token_id=pad, eos_token_id=s.tokenizer.eos_token_id).cpu()
                out["gen"] += time.perf_counter() - t
    return out


def _suite(env: dict[str, Any], robustness: bool) -> float:
    from unlearnops.components.evaluate.evaluate import (
        compute,
        core_metrics,
        robustness_metrics,
        run_passes,
    )

    for loaded in env["models"].values():
        loaded.scorer.cache.clear()
    contexts = env["build"]()
    t = time.perf_counter()
    names = core_metrics()
    run_passes(contexts, names)
    compute(contexts, names)
    core = time.perf_counter() - t
    if not robustness:
        return core
    t = time.perf_counter()
    compute(contexts, robustness_metrics())
    return time.perf_counter() - t


def run() -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        env = _setup(Path(tmp))
        _suite(env, robustness=False)  # warm-up (imports, allocator, rouge stemmer)
        measured = harness.run_rounds({"floor": lambda: _floor_run(env),
                                       "suite": lambda: {"seconds": _suite(env, robustness=False)}},
                                      REPEATS, label="eval")
        counts = {k: len(v) for k, v in env["data"].sets.items() if v}
        robust = _suite(env, robustness=True)
    floor, suite = harness.median(measured, "floor", "seconds"), harness.median(measured, "suite", "seconds")
    floor_sets = harness.median(measured, "floor", "sets_seconds")
    return {
        "preset": PRESET, "params": env["params"], "device": env["device"], "threads": THREADS,
        "repeats": measured["repeats"], "models": 2, "counts": counts, "measured": measured,
        "floor_seconds": floor, "floor_sets_seconds": floor_sets,
        "floor_parts": {k: harness.median(measured, "floor", k) for k in ("tf_main", "tf_variants", "gen")},
        "suite_seconds": suite, "ratio": suite / floor, "ratio_vs_floor_sets": suite / floor_sets,
        "target": TARGET, "met": suite / floor <= TARGET, "robustness_seconds": robust,
    }


def _floor_run(env: dict[str, Any]) -> dict[str, float]:
    """One floor measurement: its parts, their sum and the stricter per-set floor."""
    parts = _floor(env)
    return {**parts, "seconds": sum(parts.values()), "sets_seconds": parts["tf_main"] + parts["gen"]}


def _spread_lines(result: dict[str, Any]) -> list[str]:
    """Min–max, CPU seconds and load of the harness rounds (results from before it have none)."""
    m = result.get("measured")
    if not m:
        return []
    return [f"Floor {harness.spread(m, 'floor', 'seconds')} s, "
            f"suite {harness.spread(m, 'suite', 'seconds')} s "
            f"(median (min–max)); CPU s floor {harness.spread(m, 'floor', 'cpu_s', '.1f')}, suite "
            f"{harness.spread(m, 'suite', 'cpu_s', '.1f')}. {harness.load_note(m)}", ""]


def summary_markdown(result: dict[str, Any]) -> str:
    parts = result.get("floor_parts", {})
    return "\n".join([
        "## Evaluation suite vs the floor (`eval`)\n",
        f"Full core metric suite for 2 models (candidate + base) of the `{result['preset']}` architecture "
        f"({result['params'] / 1e6:.1f}M parameters, random init — see benchmarks/eval_bench.py) on "
        f"{result['device']} with {result['threads']} threads; sets {result['counts']}.\n",
        "| measure | seconds (median) |", "|---|---|",
        f"| floor: bare passes (teacher-forced per set × question variant + generation per set) | "
        f"{result['floor_seconds']:.2f} |",
        f"| — of which teacher-forced answers / variants / generation | {parts.get('tf_main', 0):.2f} / "
        f"{parts.get('tf_variants', 0):.2f} / {parts.get('gen', 0):.2f} |",
        "| stricter floor: one teacher-forced pass + one generation per set | "
        f"{result['floor_sets_seconds']:.2f} |",
        f"| **suite** (shared passes + every core metric) | **{result['suite_seconds']:.2f}** |",
        f"| robustness re-runs (relearn, 4-bit, prefixes), separately | {result['robustness_seconds']:.2f} |",
        "",
        *_spread_lines(result),
        f"Ratio suite / floor: **{result['ratio']:.2f}x** (target <= {result['target']}x: "
        f"{'met' if result['met'] else 'NOT met'}); vs the stricter per-set floor "
        f"{result['ratio_vs_floor_sets']:.2f}x (the truth-ratio passes over paraphrased questions and "
        "perturbed answers are the extra work).",
        *[f"\nSame benchmark on {o['device']} ({o.get('where', '')}): floor {o['floor_seconds']:.2f} s, "
          f"suite {o['suite_seconds']:.2f} s, ratio **{o['ratio']:.2f}x**, "
          f"robustness {o['robustness_seconds']:.2f} s."
          for o in result.get("other_runs", [])],
    ])
