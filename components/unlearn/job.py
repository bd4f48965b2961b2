"""What one training run is asked to do: the typed :class:`TrainJob` a Ray Train worker receives.

Ray Train calls ``train_loop_per_worker(config)`` with a plain dict (:func:`.loop.train_loop_per_worker`);
that dict is a dumped :class:`TrainJob` and is validated back on every worker. Objects that cannot
cross a process boundary (an in-memory model, tokenizer or records) travel beside it, in
:class:`Preloaded`, for in-process runs only.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from unlearnops.types import UnlearnSpec

from .probes import check_stop_when


class TrainConfig(BaseModel):
    """Optimiser and schedule of an unlearning (or fine-tuning) run: ``spec.params["train"]``.

    Defaults suit the benchmark's ``tiny`` model (NPO recipe: lr 3e-4, 32 forget + 32 retain
    examples per step, 100 steps); real models want ``lr`` ~1e-5.
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
    pack_sequences: bool = Field(True, description="padding-free forward passes (rows packed into sequences "
                                 "of <= hidden/2 tokens) where the model is verified to support them")
    eval_batch_size: int = Field(64, ge=1)


def method_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The method's own hyper-parameters: ``spec.params`` without the ``train`` section."""
    return {k: v for k, v in params.items() if k != "train"}


def train_config(params: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig.model_validate(params.get("train") or {})


def check_params(method: str, params: Mapping[str, Any]) -> tuple[Any, TrainConfig]:
    """(method, train config) validated; ``MethodError`` names the bad key and the valid ones."""
    from pydantic import ValidationError

    from .methods import MethodError, get_method

    found = get_method(method, method_params(params))
    try:
        return found, train_config(params)
    except ValidationError as exc:
        problems = "; ".join(f"train.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise MethodError(f"bad training parameter ({problems}); valid train.* keys: "
                          f"{', '.join(TrainConfig.model_fields)}") from None


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


class StepHook(BaseModel):
    """A function called on every worker before each optimizer step: ``call(step=, rank=, **kwargs)``.

    ``call`` is ``"module:function"`` (importable on the workers), e.g. the resilience drill
    ``unlearnops.components.unlearn.drills:kill_worker_once``.
    """

    model_config = ConfigDict(extra="forbid")

    call: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def __call__(self, step: int, rank: int) -> None:
        module, _, name = self.call.partition(":")
        getattr(importlib.import_module(module), name)(step=step, rank=rank, **self.kwargs)


class TrainJob(BaseModel):
    """One training run: the spec, where its data and base model are, where the result goes."""

    model_config = ConfigDict(extra="forbid")

    spec: UnlearnSpec
    scope_uri: str | None = Field(None, description="DataScope folder (unless records are preloaded)")
    corpus_uri: str | None = Field(None, description="instead of a scope: a corpus whose unsuppressed "
                                                     "training records are the fine-tuning set (retrain)")
    model_uri: str | None = Field(None, description="base model folder URI (unless preloaded)")
    out_dir: str | None = Field(None, description="local folder rank 0 writes the model and run.json to")
    stop_when: dict[str, float] = Field(default_factory=dict, description=":mod:`.probes` conditions")
    quiet: bool = False
    step_hooks: list[StepHook] = Field(default_factory=list)

    @field_validator("stop_when", mode="before")
    @classmethod
    def _stop_when(cls, value: Any) -> dict[str, float]:
        return check_stop_when(value)

    @property
    def train(self) -> TrainConfig:
        return train_config(self.spec.params)


@dataclass
class Preloaded:
    """In-memory inputs of an in-process run (any left ``None`` is read from the job's URIs)."""

    model: Any = None
    tokenizer: Any = None
    records: Mapping[str, list[dict[str, Any]]] | None = None
