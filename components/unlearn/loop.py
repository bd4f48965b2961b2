"""The training loop: one function run in-process (world size 1) or in every Ray Train worker.

Per optimizer step each worker draws ``grad_accum`` micro-batches of forget (and retain)
examples from its own shard (:mod:`.data`), back-propagates ``method.loss / grad_accum``,
averages gradients across workers with one all-reduce (gloo on CPU, NCCL on GPU) — or lets FSDP2
reduce-scatter them — clips, and steps AdamW under a linear warm-up + cosine schedule
(to ``min_lr_ratio`` of the peak rate). Reference-model values a method can cache
(``Method.reference_cache``, e.g. NPO's ``log π_ref(y|x)``) are computed once per example before
training instead of by a reference forward pass every step.

Determinism: every step re-seeds torch from (seed, step, rank) and the data streams are pure
functions of the step count, so the same seed and world size give the same weights, and a run
resumed from a checkpoint replays the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import resource
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnops.textformat import collate
from unlearnops.types import UnlearnSpec

from . import probes as probe_lib
from .data import (
    RETAIN,
    ShardStream,
    TrainData,
    build_batch,
    context_length,
    count_tokens,
    prepare_data,
    read_scope_sets,
    split_batch,
    to_device,
)

STATE_FILE = "state.pt"
RUN_FILE = "run.json"


class TrainConfig(BaseModel):
    """Optimiser and schedule of an unlearning (or fine-tuning) run: ``spec.params["train"]``.

    Defaults suit the benchmark's ``tiny`` model (NPO recipe of STACK-NOTES: lr 3e-4,
    32 forget + 32 retain examples per step, 100 steps); real models want ``lr`` ~1e-5.
    """

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW)")
    steps: int | None = Field(None, ge=1, description="optimizer steps (default 100 unless epochs is set)")
    epochs: float | None = Field(None, gt=0, description="passes over the forget set (instead of steps)")
    batch_size: int = Field(32, ge=1, description="forget examples per optimizer step, all workers together")
    retain_batch_size: int | None = Field(
        None, ge=1, description="retain examples per step (default: batch_size)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of lr (cosine/linear)")
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = Field(1.0, description="clip the global gradient norm (None: off)")
    checkpoint_every: int = Field(0, ge=0, description="Ray checkpoint every N steps (0: only the final)")
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept in storage")
    max_failures: int = Field(2, ge=0, description="worker failures survived (resume from checkpoint)")
    probe_every: int = Field(10, ge=0, description="probe every N steps (0: only at start and end)")
    probe_size: int = Field(16, ge=0, description="examples per probe slice (forget and retain)")
    probe_holdout_forget: bool = False
    cache_reference: bool = Field(True, description="cache per-example reference values once")
    autocast: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 autocast on GPU only")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype the weights are loaded in")
    compile: bool = Field(False, description="torch.compile the policy model")
    eval_batch_size: int = Field(64, ge=1)


def method_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The method's own hyper-parameters: ``spec.params`` without the ``train`` section."""
    return {k: v for k, v in params.items() if k != "train"}


def train_config(params: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig.model_validate(params.get("train") or {})


def total_steps(cfg: TrainConfig, n_forget: int) -> int:
    """``steps``, or ``ceil(epochs · n_forget / batch_size)``, or 100."""
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * n_forget / cfg.batch_size))
    return 100


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine (or linear) decay to ``min_lr_ratio`` at the last step."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


# ---------------------------------------------------------------- where the loop runs
class Context:
    """In-process run: rank 0 of 1, no checkpoints."""

    rank = 0
    world_size = 1

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        return None

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        yield None


class RayContext(Context):
    """Inside a Ray Train worker: rank, world, device and checkpoints from ``ray.train``."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as folder:
            yield Path(folder)


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _seed_all(*parts: int) -> None:
    seed = int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    on = cfg.autocast == "bf16" or (cfg.autocast == "auto" and device.type == "cuda")
    if on and cfg.dtype == "float32":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------- model set-up
def load_models(job: Mapping[str, Any], method: Any, cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """(policy, frozen reference or None, tokenizer) from ``job`` objects or the model URI."""
    if job.get("model") is not None:
        model, tokenizer = job["model"], job["tokenizer"]
    else:
        from unlearnops.modelio import LocalModel, load_model, load_tokenizer

        dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        with LocalModel(job["model_uri"]) as path:
            tokenizer = load_tokenizer(path)
            model = load_model(path, "cpu", dtype)
    ref = None
    if method.needs_reference:
        from .methods import frozen_copy

        ref = frozen_copy(model)
    return model, ref, tokenizer


def select_weights(model: Any, spec: UnlearnSpec, method: Any) -> Any:
    """Apply the trainable selection (spec or method) and optional LoRA; returns the model to train."""
    patterns = list(spec.trainable) or list(method.trainable_patterns(model))
    if patterns:
        from .weights import select_trainable

        select_trainable(model, patterns)
    if spec.lora is not None:
        from .weights import apply_lora

        model = apply_lora(model, spec.lora)
    return model


def _shard_fsdp(model: Any) -> Any:
    """FSDP2: shard every decoder layer, then the root (parameters become DTensors)."""
    from torch.distributed.fsdp import fully_shard

    from .methods.base import unwrap

    inner = unwrap(model)
    layers = getattr(getattr(inner, "model", inner), "layers", [])
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


# ---------------------------------------------------------------- the run
class Run:
    """State of one worker's training run (kept small so checkpoints are easy to reason about)."""

    def __init__(self, job: Mapping[str, Any], ctx: Context):
        self.job, self.ctx = job, ctx
        self.spec = UnlearnSpec.model_validate(job["spec"])
        self.cfg = train_config(self.spec.params)
        self.stop_when = probe_lib.check_stop_when(job.get("stop_when"))
        self.hooks: dict[str, Any] = dict(job.get("hooks") or {})
        self.started = time.perf_counter()
        torch.set_num_threads(self.spec.compute.torch_threads)
        _seed_all(self.spec.seed, 0, 0)
        from .methods import get_method

        self.method = get_method(self.spec.method, method_params(self.spec.params))
        model, self.ref, self.tokenizer = load_models(job, self.method, self.cfg)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                          else self.tokenizer.eos_token_id)
        records = job.get("records") or read_scope_sets(job["scope_uri"], ["forget", "retain"])
        self.data: TrainData = prepare_data(
            records, self.tokenizer, views=self.method.views, needs_retain=self.method.uses_retain,
            max_length=context_length(model.config), probe_size=self.cfg.probe_size,
            probe_holdout_forget=self.cfg.probe_holdout_forget, seed=self.spec.seed)
        self.model = select_weights(model, self.spec, self.method)
        self._place()
        world, accum = ctx.world_size, self.cfg.grad_accum
        self.f_micro = split_batch(self.cfg.batch_size, world, accum, "train.batch_size")
        self.r_micro = split_batch(self.cfg.retain_batch_size or self.cfg.batch_size, world, accum,
                                   "train.retain_batch_size") if RETAIN in self.data.views else 0
        self.total = total_steps(self.cfg, self.data.n_forget)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("no trainable parameters: the trainable selection matched nothing")
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.lr, betas=self.cfg.betas,
                                           weight_decay=self.cfg.weight_decay,
                                           fused=self.ctx.device.type == "cuda" or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total, self.cfg))
        self.autocast = _autocast(self.cfg, ctx.device)
        self.step = 0
        self.curve: list[dict[str, float]] = []
        self.probes: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.tokens = 0
        self.stopped_early = False
        self.seconds_before = 0.0
        self.compute_seconds = 0.0  # reference caching + optimizer steps (no probes, no I/O)

    # -------------------------------------------------------- placement
    def _place(self) -> None:
        device = self.ctx.device
        self.fsdp = self.spec.compute.strategy == "fsdp" and _dist() is not None
        if self.fsdp:
            self.model.to(device)
            self.model = _shard_fsdp(self.model)
            if self.ref is not None:
                self.ref.to(device)
                self.ref = _shard_fsdp(self.ref)
        else:
            self.model.to(device)
            if self.ref is not None:
                self.ref.to(device)
        self.model.train()
        if self.ref is not None:
            self.ref.eval()
            self.ref.requires_grad_(False)
        self.forward_model = torch.compile(self.model) if self.cfg.compile else self.model

    # -------------------------------------------------------- streams and caches
    def _streams(self) -> None:
        seed, rank, world = self.spec.seed, self.ctx.rank, self.ctx.world_size
        self.f_stream = ShardStream(self.data.n_forget, rank=rank, world=world, seed=seed, salt=1)
        self.r_stream = ShardStream(self.data.n_retain, rank=rank, world=world, seed=seed, salt=2)
        drawn = self.step * self.cfg.grad_accum
        self.f_stream.position = drawn * self.f_micro
        self.r_stream.position = drawn * self.r_micro

    @torch.no_grad()
    def _caches(self) -> dict[str, dict[int, dict[str, torch.Tensor]]]:
        """Reference values per example of this worker's shard, for the views the method caches."""
        caches: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
        if self.ref is None or not self.cfg.cache_reference:
            return caches
        for name, examples in self.data.views.items():
            shard = self.r_stream.shard if name == RETAIN else self.f_stream.shard
            rows: dict[int, dict[str, torch.Tensor]] = {}
            for start in range(0, len(shard), self.cfg.eval_batch_size):
                idx = shard[start:start + self.cfg.eval_batch_size]
                part = {k: v.to(self.ctx.device) for k, v in collate([examples[i] for i in idx],
                                                                      self.pad_id).items()}
                with self.autocast:
                    got = self.method.reference_cache(self.ref, name, part)
                if got is None:
                    break
                for j, i in enumerate(idx):
                    rows[i] = {k: v[j].detach().cpu() for k, v in got.items()}
            if len(rows) == len(shard) and rows:
                caches[name] = rows
        return caches

    @torch.no_grad()
    def _drop_reference_if_cached(self, caches: Mapping[str, Any]) -> None:
        """Free the reference model when the cached values are all the objective needs from it.

        Tried on one example per view with ``ref_model=None``: a method that still needs the
        reference (e.g. ``kl`` on retain logits) raises ``MethodError`` and the reference stays.
        Training then holds one model copy less (the peak-memory half of the caching trick).
        """
        if self.ref is None or not caches or self.fsdp:
            return
        from .methods import MethodError

        f_one, r_one = self.f_stream.shard[:1], self.r_stream.shard[:1]
        batch = to_device(build_batch(self.data, f_one, r_one, self.pad_id, caches), self.ctx.device)
        try:
            with self.autocast:
                self.method.loss(self.forward_model, None, batch)
        except MethodError:
            return
        self.ref = None
        import gc

        gc.collect()

    # -------------------------------------------------------- probes
    def probe(self) -> dict[str, float]:
        score = {}
        for name, examples in (("forget", self.data.probe_forget), ("retain", self.data.probe_retain)):
            got = probe_lib.answer_scores(self.forward_model, examples, self.pad_id, self.ctx.device,
                                          self.cfg.eval_batch_size, self.autocast)
            score[f"{name}_prob"], score[f"{name}_logprob"] = got["prob"], got["logprob"]
        return {"step": float(self.step), **score}

    def _after_probe(self, point: dict[str, float]) -> bool:
        """Record a probe point, keep the best weights; True when ``stop_when`` is met."""
        self.probes.append(point)
        if not self.stop_when:
            return False
        base = self.probes[0]
        if probe_lib.better(point, self.best, base, self.stop_when):
            self.best = point
            self.best_state = self._full_state()
        return probe_lib.should_stop(point, base, self.stop_when, self.step)

    # -------------------------------------------------------- state
    def _full_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on CPU (gathered from FSDP shards on every rank)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _optim_state(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def _write_state(self, folder: Path) -> None:
        model_state, optim_state = self._full_state(), self._optim_state()
        if self.ctx.rank != 0:
            return
        torch.save({
            "model": model_state, "optimizer": optim_state, "scheduler": self.scheduler.state_dict(),
            "step": self.step, "tokens": self.tokens, "curve": self.curve, "probes": self.probes,
            "best": self.best, "best_state": self.best_state,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
        }, folder / STATE_FILE)

    def restore(self, folder: Path) -> None:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, state["model"], options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=opts)
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.curve, self.probes = list(state["curve"]), list(state["probes"])
        self.best, self.best_state = state["best"], state["best_state"]
        self.seconds_before = float(state["seconds"]) / max(1, self.ctx.world_size)

    def checkpoint(self) -> None:
        with tempfile.TemporaryDirectory(prefix="unlearnops-ckpt-") as tmp:
            self._write_state(Path(tmp))
            self.ctx.report({"step": self.step, "tokens": self.tokens},
                            Path(tmp) if self.ctx.rank == 0 else None)

    # -------------------------------------------------------- one optimizer step
    def _sync_grads(self) -> None:
        dist = _dist()
        if dist is None or self.fsdp:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.ctx.world_size
        offset = 0
        for p, g in zip(self.params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def _kill_hook(self) -> None:
        """Test-only: SIGKILL this worker once at ``hooks.kill_at_step`` (marker file = already done)."""
        at, marker = self.hooks.get("kill_at_step"), self.hooks.get("marker")
        if at is None or self.step != int(at) or self.ctx.rank != int(self.hooks.get("rank", 0)):
            return
        if marker and not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    def train_step(self, caches: Mapping[str, Any]) -> dict[str, float]:
        _seed_all(self.spec.seed, self.step + 1, self.ctx.rank)
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.cfg.grad_accum
        totals: dict[str, float] = {"loss": 0.0}
        tokens_before, tick = self.tokens, time.perf_counter()
        for micro in range(accum):
            f_idx, r_idx = self.f_stream.take(self.f_micro), self.r_stream.take(self.r_micro)
            batch = to_device(build_batch(self.data, f_idx, r_idx, self.pad_id, caches), self.ctx.device)
            self.tokens += count_tokens(batch)
            if self.fsdp:
                self.model.set_requires_gradient_sync(micro == accum - 1)
            with self.autocast:
                out = self.method.loss(self.forward_model, self.ref, batch)
            (out.loss / accum).backward()
            totals["loss"] += float(out.loss.detach()) / accum
            for key, value in out.parts.items():
                totals[key] = totals.get(key, 0.0) + float(value) / accum
        self._sync_grads()
        if self.cfg.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
            totals["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        totals["lr"] = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        totals["tokens"] = float(self.tokens - tokens_before)
        totals["step_s"] = time.perf_counter() - tick
        return self._mean_over_workers(totals)

    def _mean_over_workers(self, values: dict[str, float]) -> dict[str, float]:
        dist = _dist()
        keys = sorted(values)
        if dist is not None:
            tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(tensor)
            values = dict(zip(keys, (tensor / self.ctx.world_size).tolist(), strict=True))
        return {"step": float(self.step), **{k: values[k] for k in keys}}

    # -------------------------------------------------------- the whole run
    def run(self) -> dict[str, Any]:
        with self.ctx.checkpoint() as folder:
            if folder is not None:
                self.restore(folder)
        self._streams()
        tick = time.perf_counter()
        caches = self._caches()
        self._drop_reference_if_cached(caches)
        self.compute_seconds += time.perf_counter() - tick
        if not self.probes:
            self._after_probe(self.probe())
        from rich.progress import Progress

        quiet = self.ctx.rank != 0 or bool(self.job.get("quiet"))
        with Progress(disable=quiet, transient=True) as bar:
            task = bar.add_task(f"{self.spec.method}", total=self.total, completed=self.step)
            while self.step < self.total and not self.stopped_early:
                self._kill_hook()
                tick = time.perf_counter()
                self.curve.append(self.train_step(caches))
                self.compute_seconds += time.perf_counter() - tick
                bar.update(task, completed=self.step)
                every = self.cfg.probe_every
                if (every and self.step % every == 0) or self.step == self.total:
                    self.stopped_early = self._after_probe(self.probe()) and self.step < self.total
                ck = self.cfg.checkpoint_every
                if ck and self.step % ck == 0 and self.step < self.total and not self.stopped_early:
                    self.checkpoint()
        if self.probes[-1]["step"] != self.step:
            self._after_probe(self.probe())
        return self.finish()

    def _totals(self) -> tuple[int, float, float, float]:
        """(tokens, worker-seconds) summed over workers; (peak memory MB, compute seconds) their max."""
        seconds = self.seconds_before + time.perf_counter() - self.started
        summed = torch.tensor([float(self.tokens), seconds], dtype=torch.float64)
        peak = torch.tensor([peak_memory_mb(self.ctx.device), self.compute_seconds], dtype=torch.float64)
        dist = _dist()
        if dist is not None:
            dist.all_reduce(summed)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return int(summed[0]), float(summed[1]), float(peak[0]), float(peak[1])

    def _selected_state(self) -> tuple[dict[str, torch.Tensor] | None, int]:
        """The weights to save: the best probe point's when ``stop_when`` picked one, else the last."""
        if self.stop_when and self.best is not None and not self.stopped_early \
                and self.best_state is not None and self.best["step"] != self.step:
            return self.best_state, int(self.best["step"])
        return None, self.step

    def finish(self) -> dict[str, Any]:
        """Totals; rank 0 writes the model (save_pretrained) and run.json to a folder it reports."""
        tokens, worker_seconds, peak, compute = self._totals()
        state, selected = self._selected_state()
        if state is None and self.fsdp:
            state = self._full_state()
        meta = {
            "method": self.spec.method, "params": self.spec.params, "seed": self.spec.seed,
            "world_size": self.ctx.world_size, "steps": self.step, "total_steps": self.total,
            "selected_step": selected, "tokens": tokens, "worker_seconds": worker_seconds,
            "peak_memory_mb": peak, "compute_seconds": compute, "curve": self.curve, "probes": self.probes,
            "stopped_early": self.stopped_early, "stop_when": self.stop_when,
            "device": str(self.ctx.device), "strategy": "fsdp" if self.fsdp else "ddp",
            "train": self.cfg.model_dump(mode="json"),
            "examples": {"forget": self.data.n_forget, "retain": self.data.n_retain,
                         "probe_forget": len(self.data.probe_forget),
                         "probe_retain": len(self.data.probe_retain)},
        }
        out_dir = self.job.get("out_dir")
        if self.ctx.rank != 0:
            self.ctx.report({"step": self.step, "done": 1}, None)
            return meta
        with contextlib.ExitStack() as stack:
            folder = Path(out_dir) if out_dir else Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="unlearnops-final-")))
            self.save(folder, state)
            (folder / RUN_FILE).write_text(json.dumps(meta, indent=2, default=str))
            self.ctx.report({"step": self.step, "done": 1}, folder)
        return meta

    def save(self, folder: Path, state: dict[str, torch.Tensor] | None) -> None:
        """save_pretrained (safetensors) of the policy, LoRA merged unless ``lora.merge`` is off."""
        model = self.model
        if state is not None:
            if self.fsdp:
                from .methods.base import unwrap

                unwrap(model).save_pretrained(str(folder), state_dict=state, safe_serialization=True)
                self.tokenizer.save_pretrained(str(folder))
                return
            model.load_state_dict(state)
        if self.spec.lora is not None and self.spec.lora.merge:
            from .weights import merge_lora

            model = merge_lora(model)
        model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))


def train_worker(job: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: one worker's share of the run."""
    Run(job, RayContext()).run()


def train_local(job: dict[str, Any], device: str | None = None) -> tuple[Run, dict[str, Any]]:
    """Run in this process (world size 1, no Ray); writes to ``job["out_dir"]`` when given."""
    dev = device or ("cuda" if torch.cuda.is_available() and UnlearnSpec.model_validate(
        job["spec"]).compute.use_gpu else "cpu")
    run = Run(job, Context(dev))
    return run, run.run()
