"""``undial``: self-distillation toward the base model's logits with the true token pushed down
(Dong, Lin, Belkin, Huerta & Vulić, 2024, "UNDIAL: Self-Distillation with Adjusted Logits for
Robust Unlearning in Large Language Models", NAACL 2025, arXiv:2402.10052).

At every position t that predicts a forget answer token ``y_t``, the teacher is the frozen base
model's logits ``z_ref`` with the true token's logit lowered by β:

    z'_v = z_ref,v − β·[v = y_t],   q = softmax(z'),   L_UNDIAL = (1/N) Σ_t −Σ_v q_v log p_θ(v | x, y_<t)

(cross-entropy to the adjusted teacher, averaged over the N answer positions). Defaults: β = 10
(the paper's range is 3–30; open-unlearning's UNDIAL config uses 10), γ = 1 and α = 0 — the
paper trains on the forget set only; set α > 0 to add ``α·NLL(retain)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from .base import (
    Batch,
    LossOutput,
    Method,
    MethodError,
    MethodParams,
    RetainParams,
    answer_logits,
    forward_logits,
    retain_nll_term,
    view,
)


class UNDIALParams(RetainParams):
    alpha: float = Field(0.0, ge=0, description="weight of the retain NLL (the paper uses none)")
    beta: float = Field(10.0, ge=0, description="how far the true token's teacher logit is pushed down")


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor,
                beta: float) -> torch.Tensor:
    """Mean cross-entropy from the adjusted teacher ``softmax(z_ref − β·onehot(y))`` to the model."""
    adjusted = ref_logits.float() - beta * torch.nn.functional.one_hot(targets, ref_logits.shape[-1])
    teacher = torch.softmax(adjusted, dim=-1).detach()
    return -(teacher * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


class UNDIAL(Method):
    """Distil from the base model with the memorised token's logit reduced by β."""

    name: ClassVar[str] = "undial"
    Params: ClassVar[type[MethodParams]] = UNDIALParams
    needs_reference: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        if ref_model is None:
            raise MethodError("method 'undial' needs a reference model (the frozen base model)")
        forget = view(batch, "forget", self.name)
        logits, targets = answer_logits(forward_logits(model, forget), forget["labels"])
        with torch.no_grad():
            ref_logits, _ = answer_logits(forward_logits(ref_model, forget), forget["labels"])
        forget_loss = undial_loss(logits, ref_logits, targets, p.beta)
        retain, parts = retain_nll_term(self, model, batch)
        nll = -torch.log_softmax(logits.detach(), -1).gather(-1, targets[:, None]).mean()
        return LossOutput(p.gamma * forget_loss + retain,
                          {"forget_loss": float(forget_loss.detach()), "forget_nll": float(nll), **parts})
