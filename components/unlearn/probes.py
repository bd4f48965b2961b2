"""Cheap in-training probes and the ``stop_when`` conditions built on them.

A probe scores a small slice of forget and retain examples teacher-forced: per example the mean
answer-token log-probability ``(1/|y|) Σ log p(y_t | x, y_<t)`` and its length-normalised
probability ``exp`` of that (the TOFU "probability" metric), averaged over the slice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from unlearnops.textformat import Encoded, collate, sequence_nll

from .state import TrainState

#: ``stop_when`` keys: forget prob at most x (and at least w: the band's floor, against over-forgetting);
#: retain prob at least y x base's; retain prob at least z; and no stop before this many steps.
STOP_KEYS = {"forget_prob_max", "forget_prob_min", "retain_prob_min_ratio", "retain_prob_min", "min_steps"}


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


def band_distance(forget_prob: float, cond: Mapping[str, float]) -> float:
    """How far ``forget_prob`` lies outside the band [``forget_prob_min``, ``forget_prob_max``]:
    ``|log(p / nearest edge)|``, 0 inside (a missing edge does not bound that side)."""
    p = max(float(forget_prob), 1e-12) if not math.isnan(forget_prob) else float("inf")
    high = max(cond.get("forget_prob_max", float("inf")), 1e-12)  # a max of 0: the lowest is closest
    low = cond.get("forget_prob_min", 0.0)
    if p > high:
        return math.log(p / high)
    if low > 0 and p < low:
        return math.log(low / p)
    return 0.0


def should_stop(probe: Mapping[str, float], base: Mapping[str, float], cond: Mapping[str, float],
                step: int) -> bool:
    """All ``stop_when`` conditions hold at this probe (never when no forget condition is set)."""
    if not cond or step < cond.get("min_steps", 0) or "forget_prob_max" not in cond:
        return False
    inside = band_distance(probe.get("forget_prob", float("inf")), cond) == 0.0
    return inside and retain_ok(probe, base, cond)


def better(probe: Mapping[str, float], best: Mapping[str, float] | None, base: Mapping[str, float],
           cond: Mapping[str, float]) -> bool:
    """Is this probe point a better checkpoint than ``best``: the retain side holds, and it is closer
    to the forget band (:func:`band_distance`); inside the band, a higher retain probability wins."""
    if not retain_ok(probe, base, cond):
        return False
    if best is None:
        return True
    mine, theirs = band_distance(probe["forget_prob"], cond), band_distance(best["forget_prob"], cond)
    if mine != theirs:
        return mine < theirs
    return probe.get("retain_prob", float("-inf")) > best.get("retain_prob", float("-inf"))


class Prober:
    """Probes the forget and retain slices during training and decides when ``stop_when`` is met.

    Every probe point goes to ``state.probes`` (the first one is the base model's); with a
    ``stop_when``, the best point (:func:`better`) and its weights are kept in ``state.best`` /
    ``state.best_state``, so a run that never meets the condition can still save its best step.
    """

    def __init__(self, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_id: int, device: Any,
                 batch_size: int, autocast: Any, stop_when: Mapping[str, float], every: int):
        self.slices = (("forget", forget), ("retain", retain))
        self.pad_id, self.device, self.batch_size, self.autocast = pad_id, device, batch_size, autocast
        self.stop_when, self.every = dict(stop_when), every

    def due(self, step: int, total: int) -> bool:
        """Probe every ``probe_every`` steps and at the last step."""
        return bool(self.every and step % self.every == 0) or step == total

    def probe(self, model: Any, step: int) -> dict[str, float]:
        score = {}
        for name, examples in self.slices:
            got = answer_scores(model, examples, self.pad_id, self.device, self.batch_size, self.autocast)
            score[f"{name}_prob"], score[f"{name}_logprob"] = got["prob"], got["logprob"]
        return {"step": float(step), **score}

    def record(self, point: dict[str, float], state: TrainState,
               weights: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record a probe point, keep the best weights; True when ``stop_when`` is met."""
        state.probes.append(point)
        if not self.stop_when:
            return False
        base = state.probes[0]
        if better(point, state.best, base, self.stop_when):
            state.best, state.best_state = point, weights()
        return should_stop(point, base, self.stop_when, state.step)

    def selected(self, state: TrainState) -> tuple[dict[str, torch.Tensor] | None, int]:
        """The weights to save: the best probe point's when ``stop_when`` picked one, else the last."""
        if self.stop_when and state.best is not None and not state.stopped_early \
                and state.best_state is not None and state.best["step"] != state.step:
            return state.best_state, int(state.best["step"])
        return None, state.step
