"""``wga``: weighted gradient ascent — each forget token's log-likelihood weighted by its own
probability (Wang, Zhang, Liu, Han & Liu, 2025, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025, arXiv:2502.19301).

With ``p_t = p_θ(y_t | x, y_<t)`` over the N forget answer tokens and the weight taken as a
constant (no gradient through it):

    L_WGA = (1/N) Σ_t sg[p_t^β] · log p_t

so tokens the model no longer predicts stop pushing (plain gradient ascent weighs them all
alike and diverges). Total: ``γ·L_WGA + α·NLL(retain)``; defaults β = 1, γ = α = 1 (the
paper's and open-unlearning's WGA defaults).
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
    retain_nll_term,
    view,
)


class WGAParams(RetainParams):
    beta: float = Field(1.0, ge=0, description="exponent β of the confidence weight p^β")


def token_logp(model: Any, v: dict[str, torch.Tensor]) -> torch.Tensor:
    """``log p_θ(y_t | ·)`` at every answer position of a view, flattened ``(N,)``."""
    logits, targets = answer_logits(forward_logits(model, v), v["labels"])
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def weighted_ascent(logp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean(sg[w] · log p)``: minimising it lowers the likelihood of weighted tokens."""
    return (weight.detach() * logp).mean()


def wga_loss(logp: torch.Tensor, beta: float) -> torch.Tensor:
    return weighted_ascent(logp, logp.detach().exp() ** beta)


class WGA(Method):
    """Confidence-weighted gradient ascent on forget tokens, NLL on retain answers."""

    name: ClassVar[str] = "wga"
    Params: ClassVar[type[MethodParams]] = WGAParams
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        logp = token_logp(model, view(batch, "forget", self.name))
        forget_loss = wga_loss(logp, p.beta)
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(p.gamma * forget_loss + retain, {
            "forget_loss": float(forget_loss.detach()), "forget_nll": float(-logp.detach().mean()), **parts})
