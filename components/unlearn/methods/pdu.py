"""``pdu``: primal–dual unlearning — flatten forget logits subject to a retain-loss constraint
(Entesari, Hatami, Khaziev, Ramakrishna & Fazlyab, 2025, "Constrained Entropic Unlearning: A
Primal-Dual Framework for Large Language Models", arXiv:2506.05314).

Problem: ``min_θ L_f(θ)  s.t.  NLL_retain(θ) ≤ ε``, with the logit-margin flattening loss over
the N forget answer positions (it drives the next-token distribution toward uniform):

    L_f = (1/N) Σ_t (max_v z_{t,v} − mean_v z_{t,v})²

Solved by gradient descent on the Lagrangian and projected dual ascent on λ:

    L = γ·L_f + λ·(NLL_retain − ε),      λ ← max(0, λ + η·(NLL_retain − ε))   (after each loss)

Defaults: λ₀ = α = 1, dual step η = 1 (open-unlearning's PDU defaults), γ = 1, and
ε = the retain NLL at the first step when not given (the constraint "no worse on retain than
the base model"). λ lives on the method object (one per worker): a run resumed from a
checkpoint restarts it at λ₀.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from .base import (
    Batch,
    LossOutput,
    Method,
    MethodParams,
    RetainParams,
    answer_logits,
    forward_logits,
    model_nll,
    view,
)


class PDUParams(RetainParams):
    alpha: float = Field(1.0, ge=0, description="initial dual variable λ₀ (weight of the retain term)")
    epsilon: float | None = Field(None, ge=0, description="retain NLL bound ε (None: the first step's)")
    dual_step: float = Field(1.0, ge=0, description="dual ascent step size η")


def margin_flattening_loss(logits: torch.Tensor) -> torch.Tensor:
    """``mean_t (max_v z − mean_v z)²`` over the given positions' logits ``(N, vocab)``."""
    logits = logits.float()
    return (logits.max(-1).values - logits.mean(-1)).square().mean()


def dual_update(lam: float, slack: float, step: float) -> float:
    """Projected dual ascent: ``max(0, λ + η·slack)``."""
    return max(0.0, lam + step * slack)


class PDU(Method):
    """Logit-margin flattening on forget answers under a retain-NLL constraint (primal–dual)."""

    name: ClassVar[str] = "pdu"
    Params: ClassVar[type[MethodParams]] = PDUParams
    needs_retain: ClassVar[bool] = True

    def __init__(self, params: Any = None):
        super().__init__(params)
        self.lam = float(self.params.alpha)
        self.epsilon: float | None = self.params.epsilon

    @property
    def uses_retain(self) -> bool:
        return True  # the constraint always needs the retain loss, whatever λ₀ is

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        forget = view(batch, "forget", self.name)
        logits, _ = answer_logits(forward_logits(model, forget), forget["labels"])
        forget_loss = margin_flattening_loss(logits)
        retain_nll = model_nll(model, view(batch, "retain", self.name))
        value = float(retain_nll.detach())
        if self.epsilon is None:
            self.epsilon = value
        slack = value - self.epsilon
        lam = self.lam
        self.lam = dual_update(lam, slack, p.dual_step)
        return LossOutput(p.gamma * forget_loss + lam * (retain_nll - self.epsilon), {
            "forget_loss": float(forget_loss.detach()), "retain_nll": value,
            "dual_lambda": lam, "constraint_slack": slack})
