"""The one measuring harness every benchmark uses: interleaved rounds, medians with min/max,
process CPU time, load average, and the machine the numbers come from.

:func:`run_rounds` runs every contender once per round, the order rotated by one each round (no
contender always runs first or last: warm caches and a neighbour's load fall on all of them),
``repeats`` rounds (default :data:`DEFAULT_REPEATS`, overridable with ``BENCH_REPEATS`` while
developing). For each run it records wall seconds and process CPU seconds — this process plus
its waited-for children (``getrusage`` ``RUSAGE_SELF`` + ``RUSAGE_CHILDREN`` deltas), so a
contender run in a subprocess is counted whole — beside the numbers the contender returns.
Each round records the 1-minute load average before and after; a round whose load exceeds
the core count is flagged ``loaded`` (the machine was shared while it ran). Summaries are the
median, min and max over rounds of every numeric value.
"""

from __future__ import annotations

import importlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from unlearnops.components.scope.pool import cores  # the cores this process may run on (affinity)

#: rounds per benchmark unless ``BENCH_REPEATS`` says otherwise (issue 15: at least 5).
DEFAULT_REPEATS = 5
#: packages whose versions every result records.
VERSIONED = ("torch", "transformers", "ray", "kfp", "mlflow", "pyarrow", "pandas", "psutil", "numpy")

Contender = Callable[[], Mapping[str, Any]]


def repeats(default: int = DEFAULT_REPEATS) -> int:
    """Rounds to run: ``BENCH_REPEATS`` if set (>= 1), else ``default``."""
    raw = os.environ.get("BENCH_REPEATS", "")
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"BENCH_REPEATS must be >= 1, got {raw!r}")
    return value


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that were waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pid_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of a running process and its live children (a server we did not wait for)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def load1() -> float:
    return os.getloadavg()[0]


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def stat(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    vals = list(values)
    return {"median": float(statistics.median(vals)), "min": float(min(vals)), "max": float(max(vals))}


def _timed(fn: Contender) -> dict[str, Any]:
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    got = dict(fn())
    got.setdefault("wall_s", time.perf_counter() - wall0)
    got.setdefault("cpu_s", cpu_seconds() - cpu0)
    return got


def run_rounds(contenders: Mapping[str, Contender], n: int | None = None, *,
               label: str = "") -> dict[str, Any]:
    """Run every contender once per round for ``n`` rounds (order rotated); runs, stats and load.

    Returns ``{"repeats", "cores", "rounds": [{"order", "load_before", "load_after", "loaded"}],
    "loaded_rounds", "contenders": {name: {"runs": [...], "stats": {key: stat}}}}``; a contender's
    own ``wall_s`` / ``cpu_s`` (e.g. measured inside a child) take precedence over the harness's.
    """
    if not contenders:
        raise ValueError("no contenders")
    n = repeats() if n is None else n
    names, ncores = list(contenders), cores()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    rounds = []
    for i in range(n):
        order = names[i % len(names):] + names[: i % len(names)]
        before = load1()
        for name in order:
            if label:
                print(f"[{label}] round {i + 1}/{n}: {name}", flush=True, file=sys.stderr)
            runs[name].append(_timed(contenders[name]))
        after = load1()
        rounds.append({"order": order, "load_before": before, "load_after": after,
                       "loaded": max(before, after) > ncores})
    return {
        "repeats": n, "cores": ncores, "rounds": rounds,
        "loaded_rounds": sum(r["loaded"] for r in rounds),
        "contenders": {name: {"runs": rs, "stats": summarise(rs)} for name, rs in runs.items()},
    }


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """:func:`stat` of every numeric key present in all ``runs``."""
    keys = [k for k, v in runs[0].items() if _numeric(v) and all(_numeric(r.get(k)) for r in runs)]
    return {k: stat(r[k] for r in runs) for k in keys}


def median(measured: Mapping[str, Any], contender: str, key: str) -> float:
    """The median of ``key`` for ``contender`` in a :func:`run_rounds` result."""
    return measured["contenders"][contender]["stats"][key]["median"]


def median_run(measured: Mapping[str, Any], contender: str, key: str) -> dict[str, Any]:
    """The run of ``contender`` whose ``key`` is the (lower) median — its own numbers, consistent
    with each other — plus ``stats`` over all runs."""
    c = measured["contenders"][contender]
    ordered = sorted(c["runs"], key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], "stats": c["stats"]}


def spread(measured: Mapping[str, Any], contender: str, key: str, fmt: str = ".2f") -> str:
    """``median (min–max)`` of ``key`` as text, for the markdown tables."""
    s = measured["contenders"][contender]["stats"][key]
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def load_note(measured: Mapping[str, Any]) -> str:
    """One sentence on the rounds, CPU load and flagged rounds of a :func:`run_rounds` result."""
    loads = [x for r in measured["rounds"] for x in (r["load_before"], r["load_after"])]
    flagged = measured["loaded_rounds"]
    return (f"{measured['repeats']} interleaved rounds; 1-min load average {min(loads):.1f}–{max(loads):.1f} "
            f"on {measured['cores']} cores; {flagged} round(s) with load above the core count"
            + (" (flagged: the machine was shared)" if flagged else "") + ".")


def machine() -> dict[str, Any]:
    """What the numbers were measured on: platform, cores, memory, Python and package versions."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "usable_cores": cores(),
        "memory_gib": _memory_gib(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for pkg in VERSIONED:
        try:
            info[pkg] = importlib.import_module(pkg).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            info[pkg] = "not installed"
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _memory_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None

