"""Scope resolution over a 1,000,000-record corpus vs a pandas load-everything-then-filter baseline.

Each contender runs in its own subprocess; its wall time for the work (imports excluded) and its
peak RSS (``VmHWM`` of ``/proc/self/status``: the kernel's high-water mark of the child's own
address space) are reported by the child. ``os.wait4``'s ``ru_maxrss`` of the child is recorded
too, but on Linux it also counts the parent's RSS inherited at fork/exec, so it is not the ratio's
basis. The corpus (8 shards) is generated once and cached under
``benchmarks/.cache/`` (gitignored). A 10x smaller corpus measures memory scaling.

Targets: resolver >= 1.0x pandas' records/s at <= 1/4 of its peak RSS; 10x more records ->
<= 1.5x the resolver's peak RSS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SHARDS = 8
BIG_PEOPLE = 111_112  # 8 QA + 1 biography each → 1,000,008 + 30 general records
SMALL_PEOPLE = BIG_PEOPLE // 10


def corpus(people: int) -> Path:
    """The cached benchmark corpus with ``people`` people (generated on first use, in a child)."""
    path = CACHE / f"scope-corpus-{people}-{SHARDS}"
    manifest = path / "manifest.json"
    if manifest.exists():
        args = json.loads(manifest.read_text())["args"]
        if args == {"people": people, "holdout": 10, "seed": 0, "shards": SHARDS}:
            return path
    print(f"generating {people} people into {path}", file=sys.stderr)
    # the installed CLI's own entry (``unlearnops.cli`` is a package without ``__main__``)
    subprocess.run([sys.executable, "-c", "from unlearnops.cli import main; main()", "benchmark", "generate",
                    "--out", str(path),
                    "--people", str(people), "--holdout", "10", "--seed", "0", "--shards", str(SHARDS)],
                   check=True, cwd=HERE.parent)
    return path


def _subject(path: Path, people: int) -> tuple[str, str]:
    """The middle training person of the corpus: (subject id, name) — streamed, the parent stays small."""
    with (path / "people.jsonl").open() as handle:
        for index, line in enumerate(handle):
            if index == people // 2:
                row = json.loads(line)
                return row["subject_id"], row["name"]
    raise RuntimeError(f"{path}: fewer than {people} people")


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ contenders (run in children)
def _child_resolver(path: str, subject: str, name: str) -> dict[str, Any]:
    from unlearnops.components.scope.resolve import resolve_scope

    from unlearnops.data.generate import subject_request

    request = subject_request([subject], [name], "bench-subject")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = resolve_scope([request], path, out, parallel="local")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": manifest.options["corpus_records"],
            "forget": manifest.sets["forget"].count}


def _child_pandas(path: str, subject: str, name: str) -> dict[str, Any]:
    import pandas as pd

    start = time.perf_counter()
    shards = sorted(Path(path).glob("part-*.jsonl"))
    frame = pd.concat([pd.read_json(s, lines=True, dtype=False) for s in shards], ignore_index=True)
    pattern = rf"(?<!\w){re.escape(name)}(?!\w)"
    hit = frame["subject_ids"].map(lambda ids: subject in ids)
    for column in ("question", "answer", "text"):
        hit |= frame[column].fillna("").str.contains(pattern, case=False, regex=True)
    forget = frame[hit]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": len(frame), "forget": len(forget)}


CHILDREN = {"resolver": _child_resolver, "pandas": _child_pandas}


def _run_child(kind: str, path: Path, subject: str, name: str) -> dict[str, Any]:
    """Run one contender in a subprocess; add its peak RSS (MiB) from ``os.wait4``."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.scope_bench", "--child", kind, str(path), subject, name,
               out.name]
        proc = subprocess.Popen(cmd, cwd=HERE.parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} child failed with exit code {proc.returncode}")
        result = json.loads(Path(out.name).read_text())
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB, includes the inherited parent RSS
    result["records_per_s"] = result["records"] / result["seconds"]
    return result


def _summary(measured: dict[str, Any], contender: str) -> dict[str, Any]:
    """A contender's medians (records/s, seconds, peak RSS, CPU) and its counts, checked stable."""
    c = measured["contenders"][contender]
    forget = {r["forget"] for r in c["runs"]}
    if len(forget) != 1:
        raise RuntimeError(f"{contender}: forget counts differ between rounds: {sorted(forget)}")
    out: dict[str, Any] = {k: v["median"] for k, v in c["stats"].items()}
    out.update({"records": c["runs"][0]["records"], "forget": forget.pop(), "stats": c["stats"]})
    return out


def run() -> dict[str, Any]:
    big, small = corpus(BIG_PEOPLE), corpus(SMALL_PEOPLE)
    subject, name = _subject(big, BIG_PEOPLE)
    small_subject, small_name = _subject(small, SMALL_PEOPLE)
    measured = harness.run_rounds({
        "resolver": lambda: _run_child("resolver", big, subject, name),
        "pandas": lambda: _run_child("pandas", big, subject, name),
        "resolver_small": lambda: _run_child("resolver", small, small_subject, small_name),
    }, label="scope")
    resolver, pandas, resolver_small = (_summary(measured, k)
                                        for k in ("resolver", "pandas", "resolver_small"))
    if resolver["forget"] != pandas["forget"]:
        raise RuntimeError(f"resolver found {resolver['forget']} forget records, pandas {pandas['forget']}")
    speed = resolver["records_per_s"] / pandas["records_per_s"]
    memory = resolver["peak_rss_mb"] / pandas["peak_rss_mb"]
    scaling = resolver["peak_rss_mb"] / resolver_small["peak_rss_mb"]
    return {
        "name": "scope",
        "shards": SHARDS,
        "repeats": measured["repeats"],
        "measured": measured,
        "resolver": resolver,
        "pandas": pandas,
        "resolver_small": resolver_small,
        "speed_ratio": speed,
        "memory_ratio": memory,
        "memory_scaling_10x": scaling,
        "targets": {"speed_ratio": ">= 1.0", "memory_ratio": "<= 0.25", "memory_scaling_10x": "<= 1.5"},
        "passed": {"speed_ratio": speed >= 1.0, "memory_ratio": memory <= 0.25,
                   "memory_scaling_10x": scaling <= 1.5},
    }


def summary_markdown(result: dict[str, Any]) -> str:
    measured = result.get("measured")

    def row(label: str, key: str) -> str:
        m = result[key]
        if measured is None:  # a result from before the harness: medians only
            return (f"| {label} | {m['records']:,} | {m['forget']} | {m['seconds']:.2f} | "
                    f"{m['records_per_s']:,.0f} | — | {m['peak_rss_mb']:.0f} |")
        return (f"| {label} | {m['records']:,} | {m['forget']} | "
                f"{harness.spread(measured, key, 'seconds')} | "
                f"{harness.spread(measured, key, 'records_per_s', ',.0f')} | "
                f"{harness.spread(measured, key, 'cpu_s', '.1f')} | "
                f"{harness.spread(measured, key, 'peak_rss_mb', '.0f')} |")

    ok = result["passed"]
    return "\n".join([
        "## Scope resolution (`benchmarks/scope_bench.py`)",
        "",
        f"One subject request over a generated corpus in {result['shards']} JSONL shards; each contender "
        f"in its own subprocess; median (min–max) over rounds; peak RSS = the child's own VmHWM; CPU = the "
        "child's user + system seconds (process start and imports included). "
        + (harness.load_note(measured) if measured else f"Median of {result['repeats']} runs."),
        "",
        "| contender | records | forget | seconds | records/s | CPU s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("unlearnops resolve_scope (all five sets)", "resolver"),
        row("pandas read_json + concat + filter (forget only)", "pandas"),
        row("unlearnops resolve_scope, 10x smaller corpus", "resolver_small"),
        "",
        "| measure | value | target | met |",
        "|---|---:|---|---|",
        f"| speed vs pandas | {result['speed_ratio']:.2f}x | >= 1.0x | "
        f"{'yes' if ok['speed_ratio'] else 'no'} |",
        f"| peak memory vs pandas | {result['memory_ratio']:.3f} | <= 0.25 | "
        f"{'yes' if ok['memory_ratio'] else 'no'} |",
        f"| memory, 10x more records | {result['memory_scaling_10x']:.2f}x | <= 1.5x | "
        f"{'yes' if ok['memory_scaling_10x'] else 'no'} |",
        "",
    ])


def _child_main(argv: list[str]) -> int:
    kind, path, subject, name, out = argv
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    result = CHILDREN[kind](path, subject, name)
    result["peak_rss_mb"] = _peak_rss_mb()
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2:]))
    print(json.dumps(run(), indent=2))
