"""Scope resolution over a 1,000,000-record corpus vs ``pyarrow.json`` + ``pyarrow.compute``.

Contenders, interleaved round by round by :mod:`benchmarks.harness`, each in its own subprocess:
the resolver (all five sets, one subject request, ``parallel="auto"`` — what users get: on two
or more cores and this 447 MB corpus, one spawned worker process plus the driver); the peer —
``pyarrow.json.read_json`` shard by shard, the subject matched with ``pyarrow.compute``
(``subject_ids`` membership, RE2 word-bounded name in question/answer/text), only matching rows
kept (Arrow's thread pool uses every core); the resolver on a 10x smaller corpus (memory scaling),
once with the mode ``auto`` chose for the big one (``processes``) and once with ``auto`` itself
(in-process below 64 MiB of shards); and, with ``SCOPE_BENCH_PANDAS=1``, the old pandas
load-everything peer. Each child reports its wall time for the work (imports excluded) and its
peak RSS: ``VmHWM`` of ``/proc/self/status`` (the kernel's high-water mark of the child's own
address space) **plus the VmHWM of each of the resolver's worker processes**, which every worker
reads at the end of each call and returns with its result. The sum is a conservative upper bound
of the memory the resolver holds at once: pages shared between the processes (the interpreter,
numpy's and re2's libraries) are counted once per process, and the peaks need not coincide. The
harness adds the child's CPU seconds (the workers' included: they are the child's waited-for
descendants). ``os.wait4``'s ``ru_maxrss`` is recorded too, but on Linux it also counts the
parent's RSS inherited at fork/exec, so it is not the ratio's basis. The corpus (8 shards) is
generated once through the CLI and cached under ``benchmarks/.cache/`` (gitignored).

Targets (issue 15): resolver >= 1.0x the peer's records/s at <= 0.5x its peak RSS; 10x more
records -> <= 1.5x the resolver's peak RSS (same runner mode at both sizes; the step ``auto``
makes by starting a worker at 64 MiB is reported beside it).
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
#: the pandas peer (default JSON engine, regexes over all columns: ~90 s a round here) is opt-in
WITH_PANDAS = os.environ.get("SCOPE_BENCH_PANDAS", "") == "1"


def corpus(people: int) -> Path:
    """The cached benchmark corpus with ``people`` people (generated on first use, in a child)."""
    path = CACHE / f"scope-corpus-{people}-{SHARDS}"
    manifest = path / "manifest.json"
    if manifest.exists():
        args = json.loads(manifest.read_text())["args"]
        if args == {"people": people, "holdout": 10, "seed": 0, "shards": SHARDS}:
            return path
    print(f"generating {people} people into {path}", file=sys.stderr)
    from unlearnops.cli import command_line

    subprocess.run(command_line("benchmark", "generate", "--out", str(path), "--people", str(people),
                                "--holdout", "10", "--seed", "0", "--shards", str(SHARDS)),
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
def _child_resolver(path: str, subject: str, name: str, parallel: str = "auto") -> dict[str, Any]:
    from unlearnops.components.scope.resolve import resolve_scope

    from unlearnops.data.generate import subject_request

    request = subject_request([subject], [name], "bench-subject")
    workers: dict[int, int] = {}  # worker pid -> its VmHWM (KiB), reported with its results
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = resolve_scope([request], path, out, parallel=parallel, worker_peaks=workers)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": manifest.options["corpus_records"],
            "forget": manifest.sets["forget"].count, "parallel": manifest.options["parallel"],
            "workers": len(workers), "workers_peak_rss_mb": sum(workers.values()) / 1024}


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


def _child_pyarrow(path: str, subject: str, name: str) -> dict[str, Any]:
    """The columnar peer: ``pyarrow.json`` reads one shard at a time, ``pyarrow.compute`` matches.

    A record matches when its ``subject_ids`` list holds the subject or the name is in ``question``
    / ``answer`` / ``text`` between word boundaries (RE2 ``\\b``, case-insensitive); only the
    matching rows of each shard are kept. Arrow's own thread pool reads (its default)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as paj
    import re2

    start = time.perf_counter()
    pattern = rf"(?i)\b{re2.escape(name)}\b"
    records, kept = 0, []
    for shard in sorted(Path(path).glob("part-*.jsonl")):
        table = paj.read_json(shard)
        records += table.num_rows
        ids = table["subject_ids"]
        rows = pc.filter(pc.list_parent_indices(ids), pc.equal(pc.list_flatten(ids), subject))
        hit = pc.is_in(pa.array(range(table.num_rows), pa.int64()), value_set=rows.cast(pa.int64()))
        for column in ("question", "answer", "text"):
            if column in table.column_names:
                found = pc.match_substring_regex(table[column], pattern=pattern)
                hit = pc.or_(hit, pc.fill_null(found, False))
        kept.append(table.filter(hit))
        del table
    forget = sum(t.num_rows for t in kept)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "records": records, "forget": forget}


def _child_resolver_processes(path: str, subject: str, name: str) -> dict[str, Any]:
    return _child_resolver(path, subject, name, parallel="processes")


CHILDREN = {"resolver": _child_resolver, "resolver_processes": _child_resolver_processes,
            "pyarrow": _child_pyarrow, "pandas": _child_pandas}


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
    if "parallel" in c["runs"][0]:
        out["parallel"] = c["runs"][0]["parallel"]
    return out


def run() -> dict[str, Any]:
    big, small = corpus(BIG_PEOPLE), corpus(SMALL_PEOPLE)
    subject, name = _subject(big, BIG_PEOPLE)
    small_subject, small_name = _subject(small, SMALL_PEOPLE)
    contenders = {
        "resolver": lambda: _run_child("resolver", big, subject, name),
        "pyarrow": lambda: _run_child("pyarrow", big, subject, name),
        "resolver_small": lambda: _run_child("resolver_processes", small, small_subject, small_name),
        "resolver_small_auto": lambda: _run_child("resolver", small, small_subject, small_name),
    }
    if WITH_PANDAS:
        contenders["pandas"] = lambda: _run_child("pandas", big, subject, name)
    measured = harness.run_rounds(contenders, label="scope")
    got = {k: _summary(measured, k) for k in contenders}
    resolver, resolver_small = got["resolver"], got["resolver_small"]
    for peer in ("pyarrow", "pandas"):
        if peer in got and got[peer]["forget"] != resolver["forget"]:
            raise RuntimeError(f"resolver found {resolver['forget']} forget records, "
                               f"{peer} {got[peer]['forget']}")
    speed = resolver["records_per_s"] / got["pyarrow"]["records_per_s"]
    memory = resolver["peak_rss_mb"] / got["pyarrow"]["peak_rss_mb"]
    scaling = resolver["peak_rss_mb"] / resolver_small["peak_rss_mb"]
    auto_step = resolver["peak_rss_mb"] / got["resolver_small_auto"]["peak_rss_mb"]
    result: dict[str, Any] = {
        "name": "scope",
        "shards": SHARDS,
        "repeats": measured["repeats"],
        "measured": measured,
        **got,
        "peer": "pyarrow",
        "speed_ratio": speed,
        "memory_ratio": memory,
        "memory_scaling_10x": scaling,
        "memory_scaling_10x_auto": auto_step,
        "modes": {k: got[k].get("parallel") for k in contenders if k.startswith("resolver")},
        "targets": {"speed_ratio": ">= 1.0", "memory_ratio": "<= 0.5", "memory_scaling_10x": "<= 1.5"},
        "passed": {"speed_ratio": speed >= 1.0, "memory_ratio": memory <= 0.5,
                   "memory_scaling_10x": scaling <= 1.5},
    }
    if "pandas" in got:
        result["speed_ratio_vs_pandas"] = resolver["records_per_s"] / got["pandas"]["records_per_s"]
        result["memory_ratio_vs_pandas"] = resolver["peak_rss_mb"] / got["pandas"]["peak_rss_mb"]
    return result


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
    peer = result.get("peer", "pandas")  # results from before the pyarrow peer compared to pandas
    modes = result.get("modes", {})

    def mode(key: str, auto: bool) -> str:
        """The runner mode a resolver row ran with (``auto -> ...`` when auto chose it)."""
        if not modes.get(key):
            return ""
        return f", parallel={'auto -> ' if auto else ''}{modes[key]}"

    rows = [row(f"unlearnops resolve_scope (all five sets{mode('resolver', True)})", "resolver")]
    if "pyarrow" in result:
        rows.append(row("pyarrow.json shard by shard + pyarrow.compute match (forget only)", "pyarrow"))
    if "pandas" in result:
        rows.append(row("pandas read_json + concat + filter (forget only)", "pandas"))
    small = "unlearnops resolve_scope, 10x smaller corpus"
    rows.append(row(small + mode("resolver_small", False), "resolver_small"))
    if "resolver_small_auto" in result:
        rows.append(row(small + mode("resolver_small_auto", True), "resolver_small_auto"))
    target_mem = result["targets"]["memory_ratio"]
    extra = []
    if peer == "pyarrow" and "speed_ratio_vs_pandas" in result:
        extra = [f"Against pandas in the same rounds: {result['speed_ratio_vs_pandas']:.2f}x the speed at "
                 f"{result['memory_ratio_vs_pandas']:.3f} of its memory.", ""]
    return "\n".join([
        "## Scope resolution (`benchmarks/scope_bench.py`)",
        "",
        f"One subject request over a generated corpus in {result['shards']} JSONL shards; each contender "
        f"in its own subprocess; median (min–max) over rounds; peak RSS = the child's own VmHWM"
        + (" plus the VmHWM of each of the resolver's worker processes (an upper bound: pages shared "
           "between processes are counted once per process)" if modes else "")
        + "; CPU = the child's user + system seconds (process start and imports included"
        + (", workers too" if modes else "") + "). "
        + (harness.load_note(measured) if measured else f"Median of {result['repeats']} runs."),
        "",
        "| contender | records | forget | seconds | records/s | CPU s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "| measure | value | target | met |",
        "|---|---:|---|---|",
        f"| speed vs {peer} | {result['speed_ratio']:.2f}x | >= 1.0x | "
        f"{'yes' if ok['speed_ratio'] else 'no'} |",
        f"| peak memory vs {peer} | {result['memory_ratio']:.3f} | {target_mem} | "
        f"{'yes' if ok['memory_ratio'] else 'no'} |",
        f"| memory, 10x more records{' (same mode)' if modes else ''} | "
        f"{result['memory_scaling_10x']:.2f}x | <= 1.5x | {'yes' if ok['memory_scaling_10x'] else 'no'} |",
        *([f"| memory, 10x more records, auto at both sizes (a worker starts from 64 MiB) | "
           f"{result['memory_scaling_10x_auto']:.2f}x | (reported) | — |"]
          if "memory_scaling_10x_auto" in result else []),
        "",
        *extra,
    ])


def _child_main(argv: list[str]) -> int:
    kind, path, subject, name, out = argv
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    result = CHILDREN[kind](path, subject, name)
    result["own_peak_rss_mb"] = _peak_rss_mb()
    # the resolver's worker processes count too: their VmHWM summed with the child's own
    result["peak_rss_mb"] = result["own_peak_rss_mb"] + result.get("workers_peak_rss_mb", 0.0)
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2:]))
    print(json.dumps(run(), indent=2))
