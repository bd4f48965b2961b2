"""Cost facet: what the unlearning run cost (its training.json) beside retraining from scratch.

The retraining estimate, in order of preference:
1. the benchmark's ``build.json`` next to the base model folder (``reference.seconds``: measured
   seconds of building the retain-only reference model — an actual retraining);
2. otherwise a FLOPs ratio: training costs ≈ 6·params·tokens FLOPs for the same model, so
   retraining seconds ≈ worker_seconds × retrain_tokens / unlearning_tokens, with
   retrain_tokens = (training records of the corpus − forget records) × mean tokens per record
   (measured on the retain set) × epochs (``EvalOptions.retrain_epochs``, default 60: the
   benchmark recipe). The corpus record count comes from the corpus manifest named by the scope
   manifest, else from the scope's retain set (a lower bound).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearnops import storage
from unlearnops.documents import DocumentError, find_build, read_corpus_manifest

from . import EvalData, ModelContext, metric


def training_value(ctx: ModelContext, key: str) -> float | None:
    v = getattr(ctx.training, key) if ctx.training else None
    return float(v) if isinstance(v, int | float) else None


def _build_seconds(data: EvalData) -> float | None:
    """Measured seconds of building the retain-only reference (``build.json`` beside the base model)."""
    if data.base_path is None:
        return None
    try:
        build = find_build(str(Path(data.base_path).parent))
    except DocumentError as err:  # a build.json that is not the benchmark's: estimate instead
        data.note(f"cost: {err}; retraining estimate not taken from it")
        return None
    return build.reference.seconds if build else None


def flops_retrain_seconds(worker_seconds: float, tokens: float, retrain_tokens: float) -> float | None:
    """Seconds to retrain by the 6·N·T FLOPs rule at the unlearning run's throughput."""
    if tokens <= 0:
        return None
    return worker_seconds * retrain_tokens / tokens


def _corpus_train_records(data: EvalData) -> int | None:
    """Training records of the corpus the scope was resolved from (its manifest), if readable."""
    if data.scope is None:
        return None
    try:
        return read_corpus_manifest(data.scope.corpus_uri).counts.get("train_records")
    except (DocumentError, storage.StorageError):  # the corpus may be gone or user-made; fall back
        return None


def _retrain_tokens(ctx: ModelContext) -> float | None:
    retain = ctx.tf("retain_person").lengths.tolist() + ctx.tf("retain_general").lengths.tolist()
    if not retain:
        return None
    records = _corpus_train_records(ctx.data)
    if records is None:
        ctx.data.note("cost: corpus manifest unavailable; retraining estimate uses the scope's retain "
                      "set size (a lower bound)")
        records = sum(len(ctx.data.sets.get(s, [])) for s in ("retain_person", "retain_general"))
    else:
        records -= len(ctx.data.sets.get("forget", []))
    return float(np.mean(retain)) * max(records, 0) * ctx.data.options.retrain_epochs


@metric("cost.worker_seconds", roles=("candidate",), higher_is_better=False)
def worker_seconds(ctx: ModelContext) -> float | None:
    """Worker-seconds of the unlearning run (training.json)."""
    return training_value(ctx, "worker_seconds")


@metric("cost.wall_seconds", roles=("candidate",), higher_is_better=False)
def wall_seconds(ctx: ModelContext) -> float | None:
    """Wall-clock seconds of the unlearning run (training.json)."""
    return training_value(ctx, "wall_seconds")


@metric("cost.tokens", roles=("candidate",), higher_is_better=False)
def tokens(ctx: ModelContext) -> float | None:
    """Tokens processed by the unlearning run (training.json)."""
    return training_value(ctx, "tokens")


@metric("cost.steps", roles=("candidate",))
def steps(ctx: ModelContext) -> float | None:
    """Optimizer steps of the unlearning run (training.json)."""
    return training_value(ctx, "steps")


@metric("cost.retrain_seconds_est", roles=("candidate",))
def retrain_seconds(ctx: ModelContext) -> float | None:
    """Estimated seconds to retrain from scratch without the forget set (see module doc)."""
    measured = _build_seconds(ctx.data)
    if measured is not None:
        ctx.data.note("cost: retraining estimate = measured reference build seconds (build.json)")
        return measured
    ws, tok = training_value(ctx, "worker_seconds"), training_value(ctx, "tokens")
    if ws is None or tok is None:
        return None
    rt = _retrain_tokens(ctx)
    if rt is None:
        return None
    ctx.data.note("cost: retraining estimate from the 6·params·tokens FLOPs ratio")
    return flops_retrain_seconds(ws, tok, rt)


@metric("cost.speedup_vs_retrain", depends=["cost.retrain_seconds_est", "cost.worker_seconds"],
        roles=("candidate",), higher_is_better=True)
def speedup(ctx: ModelContext) -> float | None:
    """Estimated retraining seconds / unlearning worker-seconds."""
    rt, ws = ctx.get("cost.retrain_seconds_est"), ctx.get("cost.worker_seconds")
    return rt / ws if rt and ws else None
