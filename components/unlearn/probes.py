"""Cheap in-training probes and the ``stop_when`` conditions built on them.

A probe scores a small slice of forget and retain examples teacher-forced: per example the mean
answer-token log-probability ``(1/|y|) Σ log p(y_t | x, y_<t)`` and its length-normalised
probability ``exp`` of that (the TOFU "probability" metric), averaged over the slice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unlearnops.textformat import Encoded, collate, sequence_nll

#: ``stop_when`` keys: forget prob at most x; retain prob at least y x base's; retain prob at least z;
#: and no stop before this many steps.
STOP_KEYS = {"forget_prob_max", "retain_prob_min_ratio", "retain_prob_min", "min_steps"}


@torch.no_grad()
def answer_scores(model: Any, examples: Sequence[Encoded], pad_id: int, device: Any,
                  batch_size: int = 64, autocast: Any = None) -> dict[str, float]:
    """Mean answer log-prob and mean length-normalised answer probability over ``examples``."""
    if not examples:
        return {"logprob": float("nan"), "prob": float("nan")}
    was_training = model.training
    model.eval()
    logps: list[torch.Tensor] = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast if autocast is not None else _null():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            nll, length = sequence_nll(logits, batch["labels"])
            logps.append((-nll / length.clamp(min=1)).float().cpu())
    finally:
        model.train(was_training)
    mean_logp = torch.cat(logps)
    return {"logprob": float(mean_logp.mean()), "prob": float(mean_logp.exp().mean())}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def check_stop_when(stop_when: Mapping[str, Any] | None) -> dict[str, float]:
    """Validate ``stop_when`` (unknown keys → ValueError listing the valid ones)."""
    conditions = dict(stop_when or {})
    unknown = sorted(set(conditions) - STOP_KEYS)
    if unknown:
        raise ValueError(f"unknown stop_when key(s) {unknown}; valid: {sorted(STOP_KEYS)}")
    return {k: float(v) for k, v in conditions.items()}


def retain_ok(probe: Mapping[str, float], base: Mapping[str, float], cond: Mapping[str, float]) -> bool:
    """The retain side of ``stop_when`` holds (trivially true when no retain condition is set)."""
    retain = probe.get("retain_prob", float("nan"))
    if "retain_prob_min_ratio" in cond and not math.isnan(base.get("retain_prob", float("nan"))):
        if not retain >= cond["retain_prob_min_ratio"] * base["retain_prob"]:
            return False
    return not ("retain_prob_min" in cond and not retain >= cond["retain_prob_min"])


def should_stop(probe: Mapping[str, float], base: Mapping[str, float], cond: Mapping[str, float],
                step: int) -> bool:
    """All ``stop_when`` conditions hold at this probe (never when no forget condition is set)."""
    if not cond or step < cond.get("min_steps", 0) or "forget_prob_max" not in cond:
        return False
    return probe.get("forget_prob", float("inf")) <= cond["forget_prob_max"] and retain_ok(probe, base, cond)


def better(probe: Mapping[str, float], best: Mapping[str, float] | None, base: Mapping[str, float],
           cond: Mapping[str, float]) -> bool:
    """Is this probe point a better checkpoint than ``best``: retain side holds, lower forget prob."""
    if not retain_ok(probe, base, cond):
        return False
    return best is None or probe["forget_prob"] < best["forget_prob"]
