"""``kl``: gradient ascent on forget, KL to the frozen base model on retain.

Loss: ``−γ·NLL(forget) + α·KL(p_ref ‖ p_θ)`` with γ = α = 1, the KL taken per next-token
distribution at the positions that predict retain *answer* tokens and averaged over them:
``(1/N) Σ_t Σ_v p_ref(v|·) (log p_ref(v|·) − log p_θ(v|·))`` (TOFU's "KL" baseline, Maini et
al., 2024; open-unlearning's ``GradDiff`` with ``retain_loss_type: KL``, which averages over
every position instead — here prompt and padding positions are left out, like the other
losses).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from unlearnops.textformat import IGNORE

from .base import (
    Batch,
    LossOutput,
    Method,
    MethodError,
    MethodParams,
    RetainParams,
    forward_logits,
    model_nll,
    view,
)


class KLParams(RetainParams):
    """γ weighs the forget ascent, α the retain KL."""


def answer_kl(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ``KL(p_ref ‖ p_θ)`` over positions that predict answer tokens."""
    mask = labels[:, 1:] != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)[mask]
    ref_logp = torch.log_softmax(ref_logits[:, :-1].float(), dim=-1)[mask]
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return kl.sum() / mask.sum().clamp(min=1)


class KL(Method):
    """Gradient ascent on forget answers, KL to the reference on retain answers."""

    name: ClassVar[str] = "kl"
    Params: ClassVar[type[MethodParams]] = KLParams
    needs_reference: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        nll = model_nll(model, view(batch, "forget", self.name))
        total = -p.gamma * nll
        parts = {"forget_nll": float(nll.detach())}
        if p.alpha != 0.0:
            if ref_model is None:
                raise MethodError("method 'kl' needs a reference model")
            retain = view(batch, "retain", self.name)
            logits = forward_logits(model, retain)
            with torch.no_grad():
                ref_logits = forward_logits(ref_model, retain)
            kl = answer_kl(logits, ref_logits, retain["labels"])
            total = total + p.alpha * kl
            parts["retain_kl"] = float(kl.detach())
        return LossOutput(total, parts)
