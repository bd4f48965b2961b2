"""``run_unlearning``: a DataScope + a base model → an unlearned model folder with ``training.json``.

Runs the loop of :mod:`.loop` in a Ray Train V2 ``TorchTrainer`` (``ScalingConfig(num_workers,
use_gpu)``; gloo on CPU, NCCL on GPU; ``compute.strategy="fsdp"`` shards with FSDP2), checkpointing
every ``train.checkpoint_every`` steps under ``<storage root>/ray/<run name>`` and surviving
``train.max_failures`` worker deaths by resuming from the last checkpoint. ``local=True`` runs the
same loop in this process (world size 1, no Ray) — the default for one worker when there is no Ray
to attach to (:func:`in_process`).

Ray: attaches to ``settings.ray_address`` / ``RAY_ADDRESS`` or an already initialised Ray;
otherwise starts a local one (dashboard on 127.0.0.1, temp dir under /tmp — Ray's socket paths
must be short) and shuts down only what it started.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from unlearnops import modelio, storage
from unlearnops.disposition import checkpoint_prefix
from unlearnops.documents import TRAINING_FILE, DocumentError, read_manifest
from unlearnops.settings import get_settings, runtime_env
from unlearnops.types import ModelRef, ScopeManifest, TrainingRecord, UnlearnResult, UnlearnSpec

from .job import StepHook, TrainConfig, TrainJob, check_params
from .loop import RUN_FILE, train_local, train_loop_per_worker
from .probes import check_stop_when
from .progress import CONFIG_KEY as PROGRESS_KEY
from .progress import driver_progress


class UnlearnError(ValueError):
    """Bad input to an unlearning run (the message says what is wrong and what to do)."""


# ---------------------------------------------------------------- input checks
def check_inputs(spec: UnlearnSpec, scope_uri: str, stop_when: Mapping[str, Any] | None
                 ) -> tuple[Any, TrainConfig, ScopeManifest]:
    """Validate method, parameters, train config, stop_when and the scope before any work starts."""
    method, cfg = check_params(spec.method, spec.params)
    try:
        check_stop_when(stop_when)
    except ValueError as err:
        raise UnlearnError(str(err)) from None
    try:
        manifest = read_manifest(scope_uri)
    except DocumentError as err:
        raise UnlearnError(f"{scope_uri}: not a DataScope folder ({err})") from None
    counts = {name: info.count for name, info in manifest.sets.items()}
    if not counts.get("forget"):
        raise UnlearnError(f"{scope_uri}: the forget set is empty — nothing to unlearn")
    if method.uses_retain and not counts.get("retain"):
        raise UnlearnError(f"method {spec.method!r} needs a retain set but {scope_uri} has an empty "
                           "retain set: re-resolve the scope with retain_multiple > 0, or set alpha=0")
    if spec.compute.workers > 1 and cfg.batch_size % (spec.compute.workers * cfg.grad_accum):
        raise UnlearnError(f"train.batch_size={cfg.batch_size} must be a multiple of workers x grad_accum "
                           f"= {spec.compute.workers * cfg.grad_accum}")
    return method, cfg, manifest


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "ray", "peft", "tokenizers", "unlearnops"):
        with contextlib.suppress(Exception):
            out[pkg] = importlib.import_module(pkg).__version__
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        out["unlearnops"] = version("unlearnops")
    return out


# ---------------------------------------------------------------- Ray
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _passthrough_env() -> dict[str, str]:
    """UNLEARNOPS_* / AWS_* / MLFLOW_* settings the workers need, never a secret.

    ``runtime_env`` is readable from the Ray dashboard: credentials (and URLs that may embed one)
    reach workers through their own environment — inherited from this process for a local Ray,
    set on the cluster's pods (Kubernetes ``secretKeyRef``) for an attached one.
    """
    from unlearnops.masking import holds_secret

    keep = ("UNLEARNOPS_", "AWS_", "MLFLOW_")
    return {k: v for k, v in os.environ.items() if k.startswith(keep) and not holds_secret(k, v)}


def worker_env() -> dict[str, str]:
    return {**runtime_env(), **_passthrough_env()}


def verbose() -> bool:
    """``--verbose`` (``UNLEARNOPS_VERBOSE=1``): Ray's own logs and worker output on the terminal."""
    return os.environ.get("UNLEARNOPS_VERBOSE", "") in ("1", "true", "yes")


class RayRunError(RuntimeError):
    """A Ray run failed; the message is the root error in one line and where Ray's logs are."""


def _one_line(err: BaseException) -> str:
    """The root error of a (multi-line, worker-traceback) Ray failure, on one line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith(" ")]
    return (lines[-1] if lines else type(err).__name__)[:400]


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[str]:
    """Use a running / configured Ray, or start a local one for the duration and shut it down after.

    Unless :func:`verbose`, Ray's logs and worker output stay in Ray's log files (not the terminal);
    a failure is raised once as :class:`RayRunError` (one line + the log folder, which is kept).
    """
    import logging

    import ray

    log_to_driver, level = verbose(), logging.INFO if verbose() else logging.ERROR
    if ray.is_initialized():
        yield "attached"
        return
    address = get_settings().ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": worker_env()}, log_to_driver=log_to_driver,
                 logging_level=level)
        try:
            yield address
        except Exception as err:
            raise RayRunError(f"{_one_line(err)} (worker logs: the Ray cluster at {address}, "
                              "/tmp/ray/session_latest/logs on its nodes)") from err
        finally:
            ray.shutdown()
        return
    temp = tempfile.mkdtemp(prefix="uo-ray-", dir="/tmp")
    failed = False
    try:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=_free_port(), _temp_dir=temp,
                 runtime_env={"env_vars": worker_env()}, log_to_driver=log_to_driver, logging_level=level)
        try:
            yield "local"
        except Exception as err:
            failed = True
            raise RayRunError(f"{_one_line(err)} (Ray logs: {temp}/session_latest/logs)") from err
        finally:
            ray.shutdown()
    finally:
        if not failed:
            shutil.rmtree(temp, ignore_errors=True)


def storage_location(run_name: str) -> tuple[str, Any]:
    """(storage_path, pyarrow filesystem or None) of Ray Train's checkpoints: ``<root>/ray``."""
    return storage.arrow_location(storage.join(get_settings().storage_root_uri, "ray"))


def run_ray(job: TrainJob, cfg: TrainConfig, run_name: str, dest: Path) -> None:
    """Fit a TorchTrainer on ``job``; copy worker 0's final checkpoint (model + run.json) to ``dest``.

    On a terminal (and unless ``job.quiet``) the driver shows a progress bar with the loss, fed by
    rank 0 through a small actor (:mod:`.progress`): Ray's worker output itself stays in its logs.
    """
    with (contextlib.nullcontext(None) if job.quiet else driver_progress(job.spec.method)) as board:
        _fit_ray(job, cfg, run_name, dest, board)


def _fit_ray(job: TrainJob, cfg: TrainConfig, run_name: str, dest: Path, board: str | None) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    compute = job.spec.compute
    resources: dict[str, float] = {"CPU": compute.cpus_per_worker}
    if compute.use_gpu:
        resources["GPU"] = 1
    storage_path, filesystem = storage_location(run_name)
    config = job.model_dump(mode="json")
    if board:
        config[PROGRESS_KEY] = board
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if compute.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=compute.workers, use_gpu=compute.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            # Ray Train V2's RunConfig (the default); mypy reads ray.train's static V1 import
            worker_runtime_env={"env_vars": worker_env()},  # type: ignore[call-arg]
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray run {run_name} ended without a final checkpoint")
    with result.checkpoint.as_directory() as folder:
        if not (Path(folder) / RUN_FILE).is_file():
            raise RuntimeError(f"Ray run {run_name}: the last checkpoint is not the final model")
        shutil.copytree(folder, dest)


# ---------------------------------------------------------------- the step
def _stopping(scope_uri: str, model_uri: str, stop_when: Mapping[str, Any] | None,
              calibrate: bool) -> dict[str, Any]:
    """How the run stops: an expert ``stop_when``, calibrated (the default), or the fixed steps."""
    if stop_when:
        return {"mode": "stop_when", "stop_when": dict(stop_when)}
    if not calibrate:
        return {"mode": "fixed steps", "stop_when": None}
    from .calibrate import calibration

    found = calibration(scope_uri, model_uri)
    return {"mode": "calibrated" if found["stop_when"] else "fixed steps", **found}


def kept_why(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Which step's weights were saved, and why (from the loop's run summary)."""
    kept, last = int(meta.get("selected_step", meta["steps"])), int(meta["steps"])
    if not meta.get("stop_when"):
        why = "the configured steps ran; the last weights"
    elif meta.get("stopped_early"):
        why = "the first probe meeting the stop condition (stopped early)"
    elif kept != last:
        why = ("no probe met the stop condition; the probe closest to the forget band "
               "keeping the retain side")
    else:
        why = "no probe met the stop condition or kept the retain side better; the last weights"
    return {"kept_step": kept, "last_step": last, "kept_why": why}


def in_process(spec: UnlearnSpec) -> bool:
    """Whether a run with no explicit backend trains in this process rather than on Ray Train.

    One worker with no Ray to attach to (``settings.ray_address`` / ``RAY_ADDRESS``, or an
    initialised Ray) trains here: the same loop at world size 1, without a Ray start (~20 s of
    actors for one worker, issue 15). Several workers, or a Ray to attach to, use Ray Train.
    """
    if spec.compute.workers > 1 or get_settings().ray_address or os.environ.get("RAY_ADDRESS"):
        return False
    ray = sys.modules.get("ray")  # an initialised Ray was imported first
    return not (ray is not None and ray.is_initialized())


def run_unlearning(spec: UnlearnSpec, scope_uri: str, base_model_uri: str, out_uri: str, *,
                   stop_when: Mapping[str, Any] | None = None, local: bool | None = None,
                   run_name: str | None = None, step_hooks: list[StepHook] | None = None,
                   calibrate: bool = True) -> UnlearnResult:
    """Unlearn the scope's forget set from the base model; write model + training.json to ``out_uri``.

    ``spec.params`` holds the method's hyper-parameters and, under ``"train"``, a
    :class:`~.loop.TrainConfig`. By default (no ``stop_when``, ``calibrate``) stopping is
    calibrated (:mod:`.calibrate`): stop once the forget set reaches the holdout level, not zero.
    An expert ``stop_when`` (e.g. ``{"forget_prob_max": 0.05, "retain_prob_min_ratio": 0.9}``)
    replaces it; either stops at the first probe meeting it, otherwise the best probe point meeting
    its retain side is kept. training.json's ``stopping`` says which step was kept and why.
    ``step_hooks`` run on every worker before each step (e.g. the resilience drills of :mod:`.drills`).
    ``local``: True trains in this process, False on Ray Train, None decides by :func:`in_process`.
    """
    started = time.perf_counter()
    if local is None:
        local = in_process(spec)
    _, cfg, manifest = check_inputs(spec, scope_uri, stop_when)
    resolved = modelio.resolve(base_model_uri)
    if not storage.is_s3(resolved.uri):
        with modelio.LocalModel(resolved.uri) as path:
            resolved_uri = str(path.absolute())
    else:
        resolved_uri = resolved.uri
    stopping = _stopping(scope_uri, resolved_uri, stop_when, calibrate)
    stop_when = stopping.get("stop_when") or None
    # the prefix derives from out_uri: the run's disposition finds (and deletes) these checkpoints
    name = run_name or f"{checkpoint_prefix(out_uri)}{spec.method}-{uuid.uuid4().hex[:6]}"
    job = TrainJob(spec=spec, scope_uri=scope_uri, model_uri=resolved_uri, stop_when=dict(stop_when or {}),
                   step_hooks=list(step_hooks or []))
    with tempfile.TemporaryDirectory(prefix="unlearnops-out-") as tmp:
        folder = Path(tmp) / "model"
        if local:
            folder.mkdir()
            train_local(job.model_copy(update={"out_dir": str(folder)}))
        else:
            with ray_session(max(spec.compute.workers * spec.compute.cpus_per_worker, os.cpu_count() or 1)):
                run_ray(job, cfg, name, folder)
        meta = storage.read_json(str(folder / RUN_FILE))
        (folder / RUN_FILE).unlink()
        parent = resolved.ref.model_copy(update={"alias": None}) if resolved.ref else None
        meta.update({
            "run_name": name, "wall_seconds": round(time.perf_counter() - started, 3),
            "versions": versions(), "parent": parent.model_dump() if parent else None,
            "base_model_uri": base_model_uri, "resolved_base_uri": resolved.uri, "scope_uri": scope_uri,
            "scope_sha256": manifest.sha256, "request_ids": manifest.request_ids, "backend":
                "local" if local else "ray",
            "stopping": {**stopping, **kept_why(meta)},
        })
        record = TrainingRecord.model_validate(meta)  # the document the other steps read back
        storage.write_text(str(folder / TRAINING_FILE), record.model_dump_json(indent=2) + "\n")
        storage.upload_dir(folder, out_uri)
    return UnlearnResult(
        model_uri=out_uri, training_uri=storage.join(out_uri, TRAINING_FILE), method=spec.method,
        steps=int(meta["steps"]), stopped_early=bool(meta["stopped_early"]),
        worker_seconds=float(meta["worker_seconds"]), tokens=int(meta["tokens"]),
        wall_seconds=float(meta["wall_seconds"]), parent=ModelRef(**parent.model_dump()) if parent else None,
    )
