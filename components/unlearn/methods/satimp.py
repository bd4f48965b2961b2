"""``satimp``: saturation–importance reweighted gradient ascent (Yang, Tian, Chen, Liu, Han &
Liu, 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", ICML 2025,
arXiv:2505.11953).

With ``p_t = p_θ(y_t | x, y_<t)`` over the N forget answer tokens and a constant weight:

    L_SatImp = (1/N) Σ_t sg[p_t^β1 · (1 − p_t)^β2] · log p_t

``p^β1`` favours tokens still well predicted (importance), ``(1 − p)^β2`` eases off those that
are nearly certain (saturation). Total: ``γ·L_SatImp + α·NLL(retain)``; defaults β1 = 5,
β2 = 1, γ = 1, α = 0.1 (the paper's TOFU setting, also open-unlearning's SatImp config).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from .base import Batch, LossOutput, Method, MethodParams, RetainParams, retain_nll_term, view
from .wga import token_logp, weighted_ascent


class SatImpParams(RetainParams):
    alpha: float = Field(0.1, ge=0, description="weight of the retain NLL")
    beta1: float = Field(5.0, ge=0, description="importance exponent β1 of p^β1")
    beta2: float = Field(1.0, ge=0, description="saturation exponent β2 of (1−p)^β2")


def satimp_loss(logp: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    prob = logp.detach().exp()
    return weighted_ascent(logp, prob ** beta1 * (1.0 - prob) ** beta2)


class SatImp(Method):
    """``p^β1 (1−p)^β2``-weighted gradient ascent on forget tokens, NLL on retain answers."""

    name: ClassVar[str] = "satimp"
    Params: ClassVar[type[MethodParams]] = SatImpParams
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        logp = token_logp(model, view(batch, "forget", self.name))
        forget_loss = satimp_loss(logp, p.beta1, p.beta2)
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(p.gamma * forget_loss + retain, {
            "forget_loss": float(forget_loss.detach()), "forget_nll": float(-logp.detach().mean()), **parts})
