"""``npo``: Negative Preference Optimization (Zhang, Lin, Bai & Mei, 2024, arXiv:2404.05868).

Forget term, over forget sequences with answer log-likelihoods ``log π(y|x)`` (summed over
answer tokens):

    L_NPO = (2/β) · E log(1 + (π_θ(y|x) / π_ref(y|x))^β)
          = −(2/β) · E log σ(−β · (log π_θ(y|x) − log π_ref(y|x)))

β = 0.1 (the paper's and open-unlearning's default). Total: ``γ·L_NPO + α·NLL(retain)``
with γ = α = 1 (the paper's NPO+RT; α = 0 gives plain NPO). ``π_ref`` is the frozen base model;
its log-likelihoods never change, so :meth:`NPO.reference_cache` lets the engine compute them
once per example instead of every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import (
    Batch,
    LossOutput,
    Method,
    MethodParams,
    RetainParams,
    ref_seq_cache,
    reference_seq_logp,
    retain_nll_term,
    seq_logp,
    view,
)


class NPOParams(RetainParams):
    beta: float = Field(0.1, gt=0, description="inverse temperature β of the NPO loss")


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(−β·(log π_θ − log π_ref))`` over examples."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


class NPO(Method):
    """Negative preference optimisation on forget answers, NLL on retain answers."""

    name: ClassVar[str] = "npo"
    Params: ClassVar[type[MethodParams]] = NPOParams
    needs_reference: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = True

    def reference_cache(self, ref_model: Any, view: str, batch_view: Mapping[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor] | None:
        return ref_seq_cache(ref_model, batch_view) if view == "forget" else None

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        forget = view(batch, "forget", self.name)
        logp, length = seq_logp(model, forget)
        ref_logp = reference_seq_logp(ref_model, forget, self.name).to(logp.device)
        forget_loss = npo_loss(logp, ref_logp, p.beta)
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(p.gamma * forget_loss + retain, {
            "forget_loss": float(forget_loss.detach()),
            "forget_nll": float(-logp.detach().sum() / length.sum().clamp(min=1)),
            "log_ratio": float((logp.detach() - ref_logp).mean()),
            **parts,
        })
