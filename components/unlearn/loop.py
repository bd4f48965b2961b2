"""The training loop: ``train_loop_per_worker(config)``, run in every Ray Train worker or in-process.

Per optimizer step each worker draws ``grad_accum`` micro-batches of forget (and retain)
examples from its own shard (:mod:`.data`), back-propagates ``method.loss / grad_accum``,
averages gradients across workers with one all-reduce (gloo on CPU, NCCL on GPU) — or lets FSDP2
reduce-scatter them — clips, and steps AdamW under a linear warm-up + cosine schedule
(to ``min_lr_ratio`` of the peak rate). Reference-model values a method can cache
(``Method.reference_cache``, e.g. NPO's ``log π_ref(y|x)``) are computed once per example before
training instead of by a reference forward pass every step.

The parts: :class:`.job.TrainJob` (what to do), :class:`.state.TrainState` (what a checkpoint
keeps), :class:`.checkpointer.Checkpointer` (save / restore), :class:`.probes.Prober` (probe
points, best weights, when to stop) and :class:`Trainer` here (set-up, one step, the run).

Determinism: every step re-seeds torch from (seed, step, rank) and the data streams are pure
functions of the step count, so the same seed and world size give the same weights, and a run
resumed from a checkpoint replays the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import random
import resource
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnops.textformat import collate
from unlearnops.types import UnlearnSpec

from .checkpointer import Checkpointer, Context, RayContext
from .data import (
    RETAIN,
    ShardStream,
    TrainData,
    build_batch,
    context_length,
    count_tokens,
    prepare_data,
    read_corpus_sets,
    read_scope_sets,
    split_batch,
    to_device,
)
from .job import Preloaded, TrainConfig, TrainJob, lr_factor, method_params, total_steps
from .methods.base import packed_forward
from .probes import Prober
from .progress import CONFIG_KEY
from .state import TrainState

RUN_FILE = "run.json"


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
def load_models(job: TrainJob, pre: Preloaded, method: Any, cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """(policy, frozen reference or None, tokenizer): preloaded or from the job's model URI."""
    if pre.model is not None:
        model, tokenizer = pre.model, pre.tokenizer
    else:
        from unlearnops.modelio import LocalModel, load_model, load_tokenizer

        dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        with LocalModel(str(job.model_uri)) as path:
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


# ---------------------------------------------------------------- the trainer
class Trainer:
    """One worker's run: models placed, data sharded, optimizer and schedule set up."""

    def __init__(self, job: TrainJob, ctx: Context, pre: Preloaded | None = None):
        pre = pre or Preloaded()
        self.job, self.ctx, self.spec, self.cfg = job, ctx, job.spec, job.train
        self.started = time.perf_counter()
        torch.set_num_threads(self.spec.compute.torch_threads)
        _seed_all(self.spec.seed, 0, 0)
        from .methods import get_method

        self.method = get_method(self.spec.method, method_params(self.spec.params))
        model, self.ref, self.tokenizer = load_models(job, pre, self.method, self.cfg)
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                          else self.tokenizer.eos_token_id)
        records = pre.records or (read_corpus_sets(job.corpus_uri) if job.corpus_uri
                                  else read_scope_sets(str(job.scope_uri), ["forget", "retain"]))
        self.data: TrainData = prepare_data(
            records, self.tokenizer, views=self.method.views, needs_retain=self.method.uses_retain,
            max_length=context_length(model.config), probe_size=self.cfg.probe_size,
            probe_holdout_forget=self.cfg.probe_holdout_forget, seed=self.spec.seed,
            alternate=self.method.alternate_view(self.ref, self.tokenizer, self.spec.seed))
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
        self.state = TrainState()
        self.checkpointer = Checkpointer(ctx, self.model, self.optimizer, self.scheduler, self.fsdp)
        self.prober = Prober(self.data.probe_forget, self.data.probe_retain, self.pad_id, ctx.device,
                             self.cfg.eval_batch_size, self.autocast, job.stop_when, self.cfg.probe_every)

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
        drawn = self.state.step * self.cfg.grad_accum
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

    def train_step(self, caches: Mapping[str, Any]) -> dict[str, float]:
        state = self.state
        _seed_all(self.spec.seed, state.step + 1, self.ctx.rank)
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.cfg.grad_accum
        totals: dict[str, float] = {"loss": 0.0}
        tokens_before, tick = state.tokens, time.perf_counter()
        for micro in range(accum):
            f_idx, r_idx = self.f_stream.take(self.f_micro), self.r_stream.take(self.r_micro)
            batch = to_device(build_batch(self.data, f_idx, r_idx, self.pad_id, caches), self.ctx.device)
            state.tokens += count_tokens(batch)
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
        totals["lr"] = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        state.step += 1
        totals["tokens"] = float(state.tokens - tokens_before)
        totals["step_s"] = time.perf_counter() - tick
        return self._mean_over_workers(totals)

    def _mean_over_workers(self, values: dict[str, float]) -> dict[str, float]:
        dist = _dist()
        keys = sorted(values)
        if dist is not None:
            tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(tensor)
            values = dict(zip(keys, (tensor / self.ctx.world_size).tolist(), strict=True))
        return {"step": float(self.state.step), **{k: values[k] for k in keys}}

    # -------------------------------------------------------- the whole run
    def _probe(self) -> bool:
        """Probe now; True when the stop condition is met."""
        point = self.prober.probe(self.forward_model, self.state.step)
        return self.prober.record(point, self.state, self.checkpointer.model_state)

    def _seconds(self) -> float:
        return self.state.seconds_before + time.perf_counter() - self.started

    def run(self) -> dict[str, Any]:
        """Cache, train to the end or to the stopping rule, probe, and finish (padding-free if set).

        FSDP keeps padded forwards: every rank must run the same number of forwards (each one
        all-gathers the layers), and the number of packed forwards follows each rank's lengths.
        """
        with packed_forward(self.cfg.pack_sequences and not self.fsdp):
            return self._run()

    def _run(self) -> dict[str, Any]:
        state = self.state
        self.checkpointer.restore(state)
        self._streams()
        tick = time.perf_counter()
        caches = self._caches()
        self._drop_reference_if_cached(caches)
        state.compute_seconds += time.perf_counter() - tick
        if not state.probes:
            self._probe()
        from rich.progress import Progress

        with Progress(disable=self.ctx.rank != 0 or self.job.quiet, transient=True) as bar:
            task = bar.add_task(f"{self.spec.method}", total=self.total, completed=state.step)
            while state.step < self.total and not state.stopped_early:
                for hook in self.job.step_hooks:
                    hook(step=state.step, rank=self.ctx.rank)
                tick = time.perf_counter()
                state.curve.append(self.train_step(caches))
                state.compute_seconds += time.perf_counter() - tick
                loss = state.curve[-1].get("loss", 0.0)
                bar.update(task, completed=state.step, description=f"{self.spec.method} loss {loss:.4f}")
                self.ctx.progress(state.step, self.total, loss)
                if self.prober.due(state.step, self.total):
                    state.stopped_early = self._probe() and state.step < self.total
                ck = self.cfg.checkpoint_every
                if ck and state.step % ck == 0 and state.step < self.total and not state.stopped_early:
                    self.checkpointer.save(state, self._seconds())
        if state.probes[-1]["step"] != state.step:
            self._probe()
        return self.finish()

    def _totals(self) -> tuple[int, float, float, float]:
        """(tokens, worker-seconds) summed over workers; (peak memory MB, compute seconds) their max."""
        summed = torch.tensor([float(self.state.tokens), self._seconds()], dtype=torch.float64)
        peak = torch.tensor([peak_memory_mb(self.ctx.device), self.state.compute_seconds],
                            dtype=torch.float64)
        dist = _dist()
        if dist is not None:
            dist.all_reduce(summed)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return int(summed[0]), float(summed[1]), float(peak[0]), float(peak[1])

    def finish(self) -> dict[str, Any]:
        """Totals; rank 0 writes the model (save_pretrained) and run.json to a folder it reports."""
        state = self.state
        tokens, worker_seconds, peak, compute = self._totals()
        weights, selected = self.prober.selected(state)
        if weights is None and self.fsdp:
            weights = self.checkpointer.model_state()
        meta = {
            "method": self.spec.method, "params": self.spec.params, "seed": self.spec.seed,
            "world_size": self.ctx.world_size, "steps": state.step, "total_steps": self.total,
            "selected_step": selected, "tokens": tokens, "worker_seconds": worker_seconds,
            "peak_memory_mb": peak, "compute_seconds": compute, "curve": state.curve,
            "probes": state.probes, "stopped_early": state.stopped_early, "stop_when": self.job.stop_when,
            "device": str(self.ctx.device), "strategy": "fsdp" if self.fsdp else "ddp",
            "train": self.cfg.model_dump(mode="json"),
            "examples": {"forget": self.data.n_forget, "retain": self.data.n_retain,
                         "probe_forget": len(self.data.probe_forget),
                         "probe_retain": len(self.data.probe_retain)},
        }
        if self.ctx.rank != 0:
            self.ctx.report({"step": state.step, "done": 1}, None)
            return meta
        with contextlib.ExitStack() as stack:
            folder = Path(self.job.out_dir) if self.job.out_dir else Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="unlearnops-final-")))
            self.save(folder, weights)
            (folder / RUN_FILE).write_text(json.dumps(meta, indent=2, default=str))
            self.ctx.report({"step": state.step, "done": 1}, folder)
        return meta

    def save(self, folder: Path, weights: dict[str, torch.Tensor] | None) -> None:
        """save_pretrained (safetensors) of the policy, LoRA merged unless ``lora.merge`` is off."""
        model = self.model
        if weights is not None:
            if self.fsdp:
                from .methods.base import unwrap

                unwrap(model).save_pretrained(str(folder), state_dict=weights, safe_serialization=True)
                self.tokenizer.save_pretrained(str(folder))
                return
            model.load_state_dict(weights)
        if self.spec.lora is not None and self.spec.lora.merge:
            from .weights import merge_lora

            model = merge_lora(model)
        model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: ``config`` is a dumped :class:`.job.TrainJob` (plus the
    driver's progress board, :data:`.progress.CONFIG_KEY`, when it shows one)."""
    config = dict(config)
    board = config.pop(CONFIG_KEY, None)
    Trainer(TrainJob.model_validate(config), RayContext(board)).run()


def train_local(job: TrainJob, pre: Preloaded | None = None, device: str | None = None) -> dict[str, Any]:
    """Run in this process (world size 1, no Ray); writes to ``job.out_dir`` when set. Returns run.json."""
    dev = device or ("cuda" if torch.cuda.is_available() and job.spec.compute.use_gpu else "cpu")
    return Trainer(job, Context(dev), pre).run()
