"""``ce_u``: cross-entropy unlearning — learn the model's own next-token distribution with the
true token removed (Yang, 2025, "CE-U: Cross Entropy Unlearning", arXiv:2503.01224).

At every position t predicting a forget answer token ``y_t``, with the model's logits ``z``:

    q = softmax(z'),  z'_v = z_v for v ≠ y_t,  z'_{y_t} = −∞    (q held constant)
    L_CE-U = (1/N) Σ_t −Σ_v q_v log p_θ(v | x, y_<t)

Unlike gradient ascent the loss is bounded below (by the entropy of q) and its gradient
vanishes once ``y_t`` has no mass. Total: ``γ·L_CE-U + α·NLL(retain)``; defaults γ = 1,
α = 0 (the paper's objective uses the forget set only).
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


class CEUParams(RetainParams):
    alpha: float = Field(0.0, ge=0, description="weight of the retain NLL (the paper uses none)")


def ceu_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from ``softmax(z with z_y = −∞)`` (constant) to ``softmax(z)``."""
    logits = logits.float()
    masked = logits.detach().scatter(-1, targets[:, None], float("-inf"))
    target = torch.softmax(masked, dim=-1)
    logp = torch.log_softmax(logits, dim=-1)
    return -(target * logp).sum(-1).mean()


class CEU(Method):
    """Cross-entropy toward the model's own distribution without the forget token."""

    name: ClassVar[str] = "ce_u"
    Params: ClassVar[type[MethodParams]] = CEUParams
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        forget = view(batch, "forget", self.name)
        logits, targets = answer_logits(forward_logits(model, forget), forget["labels"])
        forget_loss = ceu_loss(logits, targets)
        retain, parts = retain_nll_term(self, model, batch)
        nll = -torch.log_softmax(logits.detach(), -1).gather(-1, targets[:, None]).mean()
        return LossOutput(p.gamma * forget_loss + retain,
                          {"forget_loss": float(forget_loss.detach()), "forget_nll": float(nll), **parts})
