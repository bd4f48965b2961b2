"""``simnpo``: Simple NPO — reference-free, length-normalised (Fan et al., 2024,
"Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
arXiv:2410.07163).

Forget term, with ``|y|`` the number of answer tokens:

    L_SimNPO = −(2/β) · E log σ(−(β/|y|)·log π_θ(y|x) − δ)

Total: ``γ·L_SimNPO + α·NLL(retain)``. Defaults β = 2.5, δ = 0 (the paper's reward margin,
called γ there), γ = α = 1 — the paper's TOFU setting for β and the margin. open-unlearning's
``SimNPO`` config uses β = 4.5 and a forget weight of 0.125; both are settable. Note the
margin: open-unlearning writes ``σ(β·(NLL/|y| − δ))``, i.e. a margin of β·δ in this formula.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import Batch, LossOutput, Method, MethodParams, RetainParams, retain_nll_term, seq_logp, view


class SimNPOParams(RetainParams):
    beta: float = Field(2.5, gt=0, description="inverse temperature β")
    delta: float = Field(0.0, description="reward margin δ (γ in Fan et al.)")


def simnpo_loss(logp: torch.Tensor, length: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(−(β/|y|)·log π_θ(y|x) − δ)`` over examples."""
    avg = logp / length.clamp(min=1)
    return -(2.0 / beta) * F.logsigmoid(-beta * avg - delta).mean()


class SimNPO(Method):
    """Length-normalised, reference-free NPO on forget answers, NLL on retain answers."""

    name: ClassVar[str] = "simnpo"
    Params: ClassVar[type[MethodParams]] = SimNPOParams
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        logp, length = seq_logp(model, view(batch, "forget", self.name))
        forget_loss = simnpo_loss(logp, length, p.beta, p.delta)
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(p.gamma * forget_loss + retain, {
            "forget_loss": float(forget_loss.detach()),
            "forget_nll": float(-logp.detach().sum() / length.sum().clamp(min=1)),
            **parts,
        })
