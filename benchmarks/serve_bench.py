"""Serving benchmark: ``unlearnops serve`` against ``mlflow models serve --env-manager local``, and promotion.

For each model size (``tiny``: hidden 16 / 2 layers; ``small``: random-init Llama hidden 512 /
8 layers) one version is registered in an embedded (sqlite) registry and served by both servers,
each in its own process with one torch thread. Ours runs with batching off (``--max-batch 1``) and
its request limits on (body size, prompts, context, queued tokens, deadline). A concurrent client
(``CONCURRENCY`` threads) sends MLflow-format ``/invocations`` bodies of mixed prompt lengths
(:data:`PROMPT_WORDS`, cycled) to each, in interleaved rounds (:mod:`benchmarks.harness`); we
report p50/p95 latency, requests/s and the server's CPU seconds (median, min and max over
rounds). Target: >= 1.0x mlflow's throughput at <= its p95.

Promotion: while two clients stream completions at our server, ``promote`` (then ``rollback``)
moves the champion; we time from the call's return until ``/version`` reports the new version,
and count failed requests during the switch (target 0).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks import harness

SIZES = {"tiny": {"hidden": 16, "layers": 2, "requests": 160},
         "small": {"hidden": 512, "layers": 8, "requests": 48}}
CONCURRENCY = 4
ROUNDS = int(os.environ.get("SERVE_BENCH_ROUNDS", "0")) or None  # None: the harness default
MAX_NEW_TOKENS = 8
PROMOTIONS = 2
BODY = {"inputs": ["Question: who is the cat\nAnswer:"], "params": {"max_new_tokens": MAX_NEW_TOKENS}}
PROMPT_WORDS = (6, 24, 60, 120)  # mixed prompt lengths (words; the tiny tokenizer is word-level)
BODIES = [{"inputs": [f"Question: {' '.join(['who is the cat'] * (n // 4))}\nAnswer:"],
           "params": {"max_new_tokens": MAX_NEW_TOKENS}} for n in PROMPT_WORDS]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path, url: str,
           timeout: float = 240) -> subprocess.Popen:
    proc = subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.post(url, json=BODY, timeout=30).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    _stop(proc)
    raise RuntimeError(f"{' '.join(args)} did not answer in {timeout}s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load_test(url: str, total: int, concurrency: int = CONCURRENCY) -> dict[str, float]:
    """``total`` requests from ``concurrency`` threads: p50/p95 latency (ms), requests/s, failures."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    per = total // concurrency

    def worker(offset: int) -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(per):
                t0 = time.perf_counter()
                ok = http.post(url, json=BODIES[(i + offset) % len(BODIES)]).status_code == 200
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    failures[0] += 0 if ok else 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"p50_ms": 1000 * latencies[len(latencies) // 2],
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
            "rps": len(latencies) / wall, "failures": failures[0]}


def _server_round(pid: int, port: int, total: int) -> dict[str, float]:
    """One load test of the server ``pid`` on ``port``, with the server's CPU seconds during it."""
    before = harness.pid_cpu_seconds(pid)
    got = load_test(f"http://127.0.0.1:{port}/invocations", total)
    return {**got, "server_cpu_s": harness.pid_cpu_seconds(pid) - before}


def _median(measured: dict[str, Any], contender: str) -> dict[str, float]:
    return {key: st["median"] for key, st in measured["contenders"][contender]["stats"].items()}


def promotion_test(base: str, promote: Callable[[], Any], expect: str) -> dict[str, float]:
    """Seconds from ``promote()`` returning to ``/version == expect``, and failures meanwhile."""
    stop = threading.Event()
    failures, sent = [0], [0]

    def stream() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                try:
                    body = {"question": "who is the cat", "max_new_tokens": 4}
                    ok = http.post(f"{base}/v1/completions", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                failures[0] += 0 if ok else 1
                sent[0] += 1

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    promote()
    t0 = time.perf_counter()
    while httpx.get(f"{base}/version", timeout=30).json()["version"] != expect:
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    return {"seconds": seconds, "failed_requests": failures[0], "requests": sent[0]}


def bench_size(size: str, root: Path, env: dict[str, str]) -> dict[str, Any]:
    from unlearnops.components.promote.promote import promote, rollback
    from unlearnops.components.register.register import register_model

    from tests.fixtures.mlflow_server import make_tiny_model

    spec = SIZES[size]
    name = f"bench-{size}"
    a = make_tiny_model(root / f"{size}-a", 0, hidden=spec["hidden"], layers=spec["layers"])
    b = make_tiny_model(root / f"{size}-b", 1, hidden=spec["hidden"], layers=spec["layers"])
    lineage = {"method": "bench", "parent": {"name": name, "version": "1"}}
    (b / "training.json").write_text(json.dumps(lineage))
    v1 = register_model(str(a), name).version
    promote(name, v1)
    v2 = register_model(str(b), name).version
    ours_port, peer_port = _free_port(), _free_port()
    bin_dir = Path(sys.executable).parent
    ours = _start([str(bin_dir / "unlearnops"), "serve", name, "--port", str(ours_port), "--threads", "1",
                   "--poll-seconds", "0.2", "--max-batch", "1"], env, root / f"ours-{size}.log",
                  f"http://127.0.0.1:{ours_port}/invocations")
    peer = None
    try:
        peer = _start([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}/{v1}",
                       "--env-manager", "local", "-h", "127.0.0.1", "-p", str(peer_port)], env,
                      root / f"mlflow-{size}.log", f"http://127.0.0.1:{peer_port}/invocations")
        served = {"ours": (ours, ours_port), "mlflow_models_serve": (peer, peer_port)}
        measured = harness.run_rounds(
            {key: partial(_server_round, proc.pid, port, spec["requests"])
             for key, (proc, port) in served.items()},
            ROUNDS, label=f"serve {size}")
        _stop(peer)
        peer = None
        base = f"http://127.0.0.1:{ours_port}"
        swaps = []
        for _ in range(PROMOTIONS):
            swaps.append(promotion_test(base, lambda: promote(name, v2), v2))
            swaps.append(promotion_test(base, lambda: rollback(name), v1))
    finally:
        _stop(ours)
        if peer is not None:
            _stop(peer)
    o, p = (_median(measured, key) for key in ("ours", "mlflow_models_serve"))
    return {"ours": o, "mlflow_models_serve": p, "throughput_ratio": o["rps"] / p["rps"],
            "p95_ratio": o["p95_ms"] / p["p95_ms"],
            "promotion": {"median_seconds_to_new_version": statistics.median(s["seconds"] for s in swaps),
                          "max_seconds_to_new_version": max(s["seconds"] for s in swaps),
                          "failed_requests": sum(s["failed_requests"] for s in swaps),
                          "requests_during_switches": sum(s["requests"] for s in swaps),
                          "switches": len(swaps)},
            "measured": measured}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "UNLEARNOPS_HOME": str(root / "home"), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
               "TOKENIZERS_PARALLELISM": "false",
               "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'home' / 'mlflow.db'}",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        for key in ("UNLEARNOPS_MLFLOW_TRACKING_URI", "UNLEARNOPS_STORAGE_ROOT", "UNLEARNOPS_CONFIG"):
            env.pop(key, None)
        saved = dict(os.environ)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("UNLEARNOPS_", "MLFLOW_", "HF_"))})
        for key in ("UNLEARNOPS_MLFLOW_TRACKING_URI", "UNLEARNOPS_STORAGE_ROOT", "UNLEARNOPS_CONFIG"):
            os.environ.pop(key, None)
        from unlearnops.settings import get_settings

        get_settings.cache_clear()
        try:
            sizes = {size: bench_size(size, root, env) for size in SIZES}
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()
    return {"sizes": sizes, "concurrency": CONCURRENCY, "rounds": ROUNDS or harness.repeats(),
            "max_new_tokens": MAX_NEW_TOKENS,
            "prompt_words": list(PROMPT_WORDS), "batching": "off (--max-batch 1), limits on",
            "target": ">= 1.0x mlflow models serve throughput at <= its p95; "
                      "0 failed requests during promotion"}


def summary_markdown(result: dict[str, Any]) -> str:
    lines = ["## serve — `unlearnops serve` vs `mlflow models serve --env-manager local`\n",
             f"Concurrency {result['concurrency']}, greedy {result['max_new_tokens']} new tokens, prompts of "
             f"{result.get('prompt_words', '?')} words cycled, ours with batching "
             f"{result.get('batching', 'on')}, one torch thread per server, median of {result['rounds']} "
             f"rounds. Target: {result['target']}.\n",
             "| model | ours p50 ms | ours p95 ms | ours req/s | mlflow p50 ms | mlflow p95 ms "
             "| mlflow req/s | throughput ratio | server CPU s ours / mlflow | target met "
             "| promote→new version s (median/max) | failed requests during switches |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for size, r in result["sizes"].items():
        o, p, s = r["ours"], r["mlflow_models_serve"], r["promotion"]
        met = r["throughput_ratio"] >= 1.0 and o["p95_ms"] <= p["p95_ms"]
        cpu = (f"{o['server_cpu_s']:.1f} / {p['server_cpu_s']:.1f}" if "server_cpu_s" in o else "—")
        lines.append(f"| {size} | {o['p50_ms']:.1f} | {o['p95_ms']:.1f} | {_rps(r, 'ours')} | "
                     f"{p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {_rps(r, 'mlflow_models_serve')} | "
                     f"{r['throughput_ratio']:.2f}x | {cpu} | {'yes' if met else 'no'} | "
                     f"{s['median_seconds_to_new_version']:.2f} / {s['max_seconds_to_new_version']:.2f} | "
                     f"{s['failed_requests']} of {s['requests_during_switches']} |")
        if "measured" in r:
            notes.append(f"{size}: {harness.load_note(r['measured'])}")
    return "\n".join([*lines, "", *notes]) + "\n"


def _rps(result: dict[str, Any], contender: str) -> str:
    """Requests/s as ``median (min–max)`` when the rounds are recorded."""
    if "measured" not in result:
        return f"{result[contender]['rps']:.1f}"
    return harness.spread(result["measured"], contender, "rps", ".1f")
