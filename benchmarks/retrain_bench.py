"""Approximate vs exact unlearning on the benchmark: each method's distance to the retrained model,
and the wall time of each path (issue 16).

On the benchmark builds of :mod:`benchmarks.methods_bench` (``RETRAIN_BENCH_PRESETS``, comma list,
default ``tiny``; ``small`` takes about an hour on 2 CPU cores; forget share ``RETRAIN_BENCH_SHARE``,
default 0.1), each in a private ``UNLEARNOPS_HOME``:

- **exact path**: the retrain step itself (components/retrain/retrain.py, in process, world size 1)
  fine-tunes the build's foundation with its recipe on the corpus minus the forget people, who are
  put on the suppression list first — the model the compliance_retrain pipeline would promote;
- **approximate path**: every registered method (``RETRAIN_BENCH_METHODS``; default all but
  ``finetune``) with calibrated stopping, the engine's default, from the base model, as
  ``unlearnops run`` trains it;
- **distance**: components/retrain/compare.py with the retrained model as the exact reference —
  forget quality against the true retrain (KS p-value), champion − retrained on forget probability,
  ROUGE-L, model utility and MIA AUC, greedy-answer agreement on forget and retain-eval sets.

Wall time: the exact path and the default method (the pipeline's
:data:`~unlearnops.pipelines.run_request.DEFAULT_METHOD`) are timed in interleaved rounds
(:func:`benchmarks.harness.run_rounds`, ``BENCH_REPEATS``); every other method's wall time is its one
run's. Distances come from the first round (every run is seeded).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.methods_bench import method_params, methods, prepare, threads

DISTANCE_KEYS = ("forget.prob", "forget.rouge_l", "utility.model_utility", "privacy.mia_auc")


def share() -> float:
    return float(os.environ.get("RETRAIN_BENCH_SHARE", "0.1"))


def suppress_forget_people(corpus: str, root: str) -> int:
    """Put every record of the build's forget people on the suppression list; how many records."""
    from unlearnops.components.scope.shards import iter_lines, list_shards, parse_record

    from unlearnops import storage, suppression

    forget = set(storage.read_json(str(Path(root) / "build.json"))["forget_subject_ids"])
    records = []
    for shard in list_shards(corpus):
        for lineno, line in iter_lines(shard):
            if line.strip():
                record = parse_record(line, shard, lineno)
                if forget & set(record.get("subject_ids") or []):
                    records.append(record)
    suppression.add_entry("retrain-bench", ["retrain-bench"], [], records)
    return len(records)


def retrain_exact(paths: dict[str, str], out: Path) -> dict[str, Any]:
    """The exact path: the retrain step on the corpus minus the suppression list (in process)."""
    from unlearnops.components.register.lineage import read_recipe
    from unlearnops.components.retrain.retrain import retrain

    root = Path(paths["root"])
    recipe = read_recipe(str(root / "recipe.json"))
    result = retrain(str(root / "foundation"), paths["corpus"], str(out), recipe,
                     request_ids=["retrain-bench"], local=True, threads=threads())
    return {"wall_seconds": result.wall_seconds, "steps": result.steps, "tokens": result.tokens,
            "records": result.lineage.corpus_records}


def unlearn_approx(paths: dict[str, str], method: str, out: Path, preset: str) -> dict[str, Any]:
    """The approximate path: ``method`` with calibrated stopping from the base model (in process)."""
    from unlearnops.components.unlearn.runner import run_unlearning

    from unlearnops.documents import read_training
    from unlearnops.types import UnlearnSpec

    started = time.perf_counter()
    spec = UnlearnSpec(method=method, params=method_params(method, "calibrated", preset), seed=0,
                       compute={"torch_threads": threads()})
    run_unlearning(spec, paths["scope"], paths["base"], str(out), local=True, calibrate=True)
    training = read_training(str(out))
    return {"wall_seconds": time.perf_counter() - started, "steps": training.steps,
            "tokens": int(training.tokens or 0)}


def distance(approx: Path, exact: Path, scope: str, out: Path) -> dict[str, Any]:
    """The approximate model against the retrained one (components/retrain/compare.py)."""
    from unlearnops.components.retrain.compare import compare

    doc = compare(str(approx), str(exact), scope, str(out))
    return doc.model_dump(include={"forget_quality", "difference", "approximate", "exact", "agreement",
                                   "answers_compared"})


def _private_home(tmp: Path) -> None:
    """Suppression list, key and store under ``tmp`` (never the user's home)."""
    from unlearnops.settings import get_settings

    os.environ["UNLEARNOPS_HOME"] = str(tmp / "home")
    os.environ.pop("UNLEARNOPS_STORAGE_ROOT", None)
    get_settings.cache_clear()


RESULT = Path(__file__).resolve().parent / "results" / "retrain.json"


def presets() -> list[str]:
    return [x.strip() for x in os.environ.get("RETRAIN_BENCH_PRESETS", "tiny").split(",") if x.strip()]


def _by_preset(result: dict[str, Any]) -> dict[str, Any]:
    """``{preset: result}`` of a result file (an older one holds a single preset)."""
    return dict(result["presets"]) if "presets" in result else {result["preset"]: result}


def run() -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads())
    kept = _by_preset(json.loads(RESULT.read_text())) if RESULT.exists() else {}
    return {"presets": {**kept, **{name: run_preset(name) for name in presets()}}}


def run_preset(preset: str) -> dict[str, Any]:
    """The exact path, the timed default method and every method's distance on one preset."""
    from unlearnops.pipelines.run_request import DEFAULT_METHOD

    started = time.perf_counter()
    paths = prepare(share(), preset_name=preset)  # before the suppression list: base/reference see all
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as tmp_name:
        tmp = Path(tmp_name)
        _private_home(tmp)
        suppressed = suppress_forget_people(paths["corpus"], paths["root"])
        exact = tmp / "exact-0"
        runs: dict[str, dict[str, Any]] = {}

        def exact_path() -> dict[str, Any]:
            out = tmp / f"exact-{len(runs.get('exact', {}))}"
            found = retrain_exact(paths, out)
            runs.setdefault("exact", {})[str(out)] = found
            return found

        def default_path() -> dict[str, Any]:
            out = tmp / f"{DEFAULT_METHOD}-{len(runs.get(DEFAULT_METHOD, {}))}"
            found = unlearn_approx(paths, DEFAULT_METHOD, out, preset)
            runs.setdefault(DEFAULT_METHOD, {})[str(out)] = found
            return found

        timed = harness.run_rounds({"exact_retrain": exact_path,
                                    f"approximate_{DEFAULT_METHOD}": default_path})
        rows = []
        for method in methods("RETRAIN_BENCH_METHODS"):
            out = tmp / f"{DEFAULT_METHOD}-0" if method == DEFAULT_METHOD else tmp / method
            try:
                trained = (next(iter(runs[DEFAULT_METHOD].values())) if method == DEFAULT_METHOD
                           else unlearn_approx(paths, method, out, preset))
                found = distance(out, exact, paths["scope"], tmp / f"cmp-{method}")
                row = {"method": method, **trained, **found}
            except Exception as err:  # noqa: BLE001 - one failing method is a row, not the end
                row = {"method": method, "error": f"{type(err).__name__}: {err}"}
            rows.append(row)
            _log(row)
            partial = Path(paths["root"]) / "retrain-rows.partial.json"  # what a cut-off run leaves
            partial.write_text(json.dumps({"timed": timed, "rows": rows}, default=str))
        reference = distance(Path(paths["reference"]), exact, paths["scope"], tmp / "cmp-reference")
    exact_wall = harness.median(timed, "exact_retrain", "wall_seconds")
    return {"preset": preset, "share": share(), "threads": threads(), "machine": harness.machine(),
            "suppressed_records": suppressed, "default_method": DEFAULT_METHOD, "timed": timed,
            "exact": next(iter(runs["exact"].values())), "exact_wall_median": exact_wall,
            "rows": rows, "build_reference": reference, "wall_seconds": time.perf_counter() - started}


def _log(row: dict[str, Any]) -> None:
    import sys

    if "error" in row:
        print(f"  {row['method']:>11} error {row['error']}", file=sys.stderr)
        return
    print(f"  {row['method']:>11} FQ vs retrain {row['forget_quality'] or 0:.3g} "
          f"agreement forget {row['agreement'].get('forget') or 0:.2f} wall {row['wall_seconds']:.1f}s",
          file=sys.stderr)


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary_markdown(result: dict[str, Any]) -> str:
    return "\n".join(preset_markdown(r) for r in _by_preset(result).values())


def preset_markdown(result: dict[str, Any]) -> str:
    timed = result["timed"]
    default = f"approximate_{result['default_method']}"
    exact_wall, exact_tokens = result["exact_wall_median"], result["exact"]["tokens"]
    lines = [f"## Approximate vs exact unlearning on the `{result['preset']}` benchmark model (`retrain`)\n",
             f"Forget share {result['share']:g} ({result['suppressed_records']} records on the "
             "suppression list). The exact path is the retrain step (the foundation fine-tuned with the "
             "build's recipe on the corpus minus the suppression list, in process); each method runs with "
             "calibrated stopping from the base model. Distance to the retrained model by "
             "`components/retrain/compare.py`: forget quality against the true retrain (KS p-value, high = "
             "indistinguishable), approximate − retrained on forget probability / ROUGE-L / model utility / "
             "MIA AUC, and the share of identical greedy answers. Ratios: the method's wall / the exact "
             "path's median wall, and its training tokens / the retrain's. The last row, the build's "
             "retain-only reference against the retrain step's model, checks that retraining is "
             "reproducible (same foundation, recipe and seed).\n",
             f"- exact path (retrain step): {harness.spread(timed, 'exact_retrain', 'wall_seconds', '.1f')} "
             f"s wall, {result['exact']['steps']} steps, {result['exact']['tokens']} tokens",
             f"- default method `{result['default_method']}`: "
             f"{harness.spread(timed, default, 'wall_seconds', '.1f')} s wall — "
             f"{harness.median(timed, default, 'wall_seconds') / exact_wall:.2f}× the exact path",
             f"- {harness.load_note(timed)} Measured {result.get('machine', {}).get('measured_at', '?')}, "
             f"{result.get('threads', 1)} torch thread(s).\n",
             "| method | FQ vs retrain | Δ forget prob | Δ forget ROUGE | Δ utility | Δ MIA AUC | "
             "agree forget | agree retain-eval | wall s | × exact wall | × exact tokens |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [*result["rows"], {"method": "retain-only reference (build)", **result["build_reference"],
                              "wall_seconds": None}]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['method']} | error: {row['error'][:80]} |" + " |" * 9)
            continue
        diff, agree = row["difference"], row["agreement"]
        wall, tokens = row.get("wall_seconds"), row.get("tokens")
        lines.append(
            f"| {row['method']} | {_fmt(row['forget_quality'], '.2g')} | "
            + " | ".join(_fmt(diff.get(k), "+.3f") for k in DISTANCE_KEYS)
            + f" | {_fmt(agree.get('forget'), '.2f')} | {_fmt(agree.get('retain_eval'), '.2f')} | "
            f"{_fmt(wall, '.1f')} | {_fmt(wall / exact_wall if wall else None, '.2f')} | "
            f"{_fmt(tokens / exact_tokens if tokens else None, '.3f')} |")
    return "\n".join(lines) + "\n"
