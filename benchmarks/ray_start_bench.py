"""Ray Train start (issue 15): a one-worker TorchTrainer run with a trivial loop, attached vs cold.

Target: one-worker Ray Train start attached to a running Ray ≤ 15 s, cold start reported apart.
A long-lived head is started once with :func:`unlearnops.local_ray.start` (what ``unlearnops ray
start`` runs); every run is a fresh driver process (``python -m benchmarks.ray_start_bench child``),
as a pipeline step is, that imports Ray Train, attaches (``ray.init(address)``), and fits a
TorchTrainer whose loop reports once. Its own clock splits the run: ``import_s`` (``ray`` +
``ray.train.torch``), ``init_s`` (``ray.init``), ``first_line_s`` (``trainer.fit()`` called → the
first line of the train loop runs, read from the loop's reported wall clock), ``fit_s``
(``fit()`` called → returned). Variants, interleaved round by round:

- ``runner``: as ``components/unlearn/runner.py`` fits — Ray Train V2 (the default), a job
  ``runtime_env`` with env_vars on ``ray.init`` and ``worker_runtime_env`` env_vars on the trainer,
  a checkpoint reported (a small folder), ``CheckpointConfig(num_to_keep=2)``, storage on local disk;
- ``v2-no-env``: the same without either runtime env (no runtime-env agent work);
- ``v2-bare``: no runtime env and no checkpoint;
- ``v1-bare``: ``RAY_TRAIN_V2_ENABLED=0``, no runtime env, no checkpoint;
- ``cold``: ``runner`` on a fresh local Ray (``ray.init`` starts the head: its own temp folder,
  dashboard off) — the cold start, reported apart.

Worker output goes to Ray's log files (``log_to_driver=False``, as the runner when not verbose), so
``RAY_DEDUP_LOGS`` has nothing to deduplicate and is not a variant.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import load_note, median, run_rounds, spread

TARGET_S = 15.0
ENV_VARS = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "UNLEARNOPS_BENCH": "1"}
VARIANTS: dict[str, dict[str, Any]] = {
    "runner": {"v2": True, "env": True, "checkpoint": True, "cold": False},
    "v2-no-env": {"v2": True, "env": False, "checkpoint": True, "cold": False},
    "v2-bare": {"v2": True, "env": False, "checkpoint": False, "cold": False},
    "v1-bare": {"v2": False, "env": False, "checkpoint": False, "cold": False},
    "cold": {"v2": True, "env": True, "checkpoint": True, "cold": True},
}


def _loop(config: dict[str, Any]) -> None:
    """The trivial train loop: note when it starts, report once (with a small checkpoint if asked)."""
    first = time.time()
    Path(config["stamp"]).write_text(repr(first))  # V2 keeps metrics only with a checkpoint
    import ray.train

    checkpoint = None
    if config["checkpoint"]:
        folder = tempfile.mkdtemp(prefix="uo-ck-")
        Path(folder, "weights.bin").write_bytes(b"\0" * 1024 * 1024)
        checkpoint = ray.train.Checkpoint.from_directory(folder)
    ray.train.report({"first_line": first}, checkpoint=checkpoint)


def child(variant: dict[str, Any], address: str) -> dict[str, float]:
    """One driver run of ``variant``; its phase times in seconds."""
    t0 = time.time()
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t1 = time.time()
    job_env = {"runtime_env": {"env_vars": ENV_VARS}} if variant["env"] else {}
    temp = tempfile.mkdtemp(prefix="uo-rb-", dir="/tmp") if variant["cold"] else None
    if temp:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _temp_dir=temp,
                 log_to_driver=False, **job_env)
    else:
        ray.init(address=address, log_to_driver=False, **job_env)
    t2 = time.time()
    storage = tempfile.mkdtemp(prefix="uo-rs-")
    run_kw: dict[str, Any] = {"name": "bench", "storage_path": storage,
                              "checkpoint_config": CheckpointConfig(num_to_keep=2)}
    if variant["env"]:
        run_kw["worker_runtime_env"] = {"env_vars": ENV_VARS}
    stamp = Path(storage) / "first-line"
    loop_config = {"checkpoint": variant["checkpoint"], "stamp": str(stamp)}
    trainer = TorchTrainer(_loop, train_loop_config=loop_config,
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=RunConfig(**run_kw))
    t3 = time.time()
    result = trainer.fit()
    t4 = time.time()
    if result.error is not None:
        raise result.error
    first = float(stamp.read_text())
    ray.shutdown()
    shutil.rmtree(storage, ignore_errors=True)
    if temp:
        shutil.rmtree(temp, ignore_errors=True)
    t5 = time.time()
    return {"import_s": t1 - t0, "init_s": t2 - t1, "first_line_s": first - t3, "fit_s": t4 - t3,
            "shutdown_s": t5 - t4, "driver_s": t5 - t0}


def _contender(name: str, address: str) -> Any:
    variant = VARIANTS[name]

    def go() -> dict[str, Any]:
        env = {**os.environ, "RAY_TRAIN_V2_ENABLED": "1" if variant["v2"] else "0"}
        env.pop("RAY_ADDRESS", None)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "benchmarks.ray_start_bench", "child", name, address],
                             env=env, capture_output=True, text=True, timeout=600, check=False)
        process_s = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"{name}: exit {out.returncode}: {out.stderr[-2000:]}")
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": process_s}

    return go


def run() -> dict[str, Any]:
    from unlearnops import local_ray

    with tempfile.TemporaryDirectory(prefix="uo-rbh-") as home:
        os.environ["UNLEARNOPS_HOME"] = home
        from unlearnops.settings import get_settings

        get_settings.cache_clear()
        t0 = time.perf_counter()
        head, _ = local_ray.start()
        head_s = time.perf_counter() - t0
        try:
            measured = run_rounds({name: _contender(name, head.address) for name in VARIANTS},
                                  label="ray_start")
        finally:
            local_ray.stop()
    attached = median(measured, "runner", "fit_s")
    best = min((n for n in VARIANTS if n != "cold"), key=lambda n: median(measured, n, "fit_s"))
    return {"target_s": TARGET_S, "head_start_s": head_s, "measured": measured,
            "attached_fit_s": attached, "best_attached": best,
            "best_attached_fit_s": median(measured, best, "fit_s"),
            "met": attached <= TARGET_S}


def summary_markdown(result: dict[str, Any]) -> str:
    m = result["measured"]
    lines = ["## Ray Train start: one worker, attached to a running Ray vs cold (`ray_start`)\n",
             "A fresh driver process per run (as a pipeline step) fits a one-worker TorchTrainer whose loop "
             "reports once; attached runs use one long-lived head (`unlearnops ray start`, up in "
             f"{result['head_start_s']:.1f} s). Seconds, median (min–max); *fit → first line*: "
             "`trainer.fit()` called → the loop's first line; *fit*: `fit()` called → returned. "
             f"Target: attached fit ≤ {result['target_s']:.0f} s — "
             f"**{'met' if result['met'] else 'not met'}** as the runner fits "
             f"({result['attached_fit_s']:.1f} s); fastest attached variant `{result['best_attached']}` "
             f"{result['best_attached_fit_s']:.1f} s. {load_note(m)}\n",
             "| variant | import ray.train | ray.init | fit → first line | fit | driver total | CPU s |",
             "|---|---|---|---|---|---|---|"]
    for name in m["contenders"]:
        lines.append(f"| `{name}` | {spread(m, name, 'import_s', '.1f')} | "
                     f"{spread(m, name, 'init_s', '.1f')} | "
                     f"{spread(m, name, 'first_line_s', '.1f')} | {spread(m, name, 'fit_s', '.1f')} | "
                     f"{spread(m, name, 'process_s', '.1f')} | {spread(m, name, 'cpu_s', '.1f')} |")
    lines.append("\n`runner`: V2, job + worker runtime env (env_vars), a checkpoint reported; "
                 "`v2-no-env`: no runtime env; `v2-bare`: neither runtime env nor checkpoint; "
                 "`v1-bare`: the same on "
                 "`RAY_TRAIN_V2_ENABLED=0`; `cold`: `runner` on a Ray the driver starts itself. CPU s is the "
                 "driver process only (the head's and the workers' CPU is not counted).\n")
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    print(json.dumps(child(VARIANTS[sys.argv[2]], sys.argv[3])), flush=True)
