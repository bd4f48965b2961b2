"""``idk_dpo``: DPO preferring a refusal (chosen) over the original forget answer (rejected).

With sequence log-likelihoods over answer tokens and the frozen base model as reference
(Rafailov et al., 2023, "Direct Preference Optimization"; used for unlearning as TOFU's / NPO
paper's "IdkPO" / open-unlearning ``DPO`` with IDK answers):

    Δ_w = log π_θ(y_idk|x) − log π_ref(y_idk|x),   Δ_l = log π_θ(y|x) − log π_ref(y|x)
    L_DPO = −(2/β) · E log σ(β·(Δ_w − Δ_l))

β = 0.1. The 2/β factor follows open-unlearning and the NPO paper (NPO is this loss without
the chosen term); it is the standard DPO loss rescaled so that the gradient size does not
depend on β. Total: ``γ·L_DPO + α·NLL(retain)``, γ = α = 1. Row i of ``forget_idk`` must be the
refusal version of row i of ``forget``. Both reference log-likelihoods can be cached.
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
    MethodError,
    MethodParams,
    RetainParams,
    ref_seq_cache,
    reference_seq_logp,
    retain_nll_term,
    seq_logp,
    view,
)


class IdkDPOParams(RetainParams):
    beta: float = Field(0.1, gt=0, description="inverse temperature β of the DPO loss")


def dpo_loss(win: torch.Tensor, lose: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(β·(Δ_w − Δ_l))`` from per-example log-ratios ``Δ``."""
    return -(2.0 / beta) * F.logsigmoid(beta * (win - lose)).mean()


class IdkDPO(Method):
    """DPO toward refusals on forget questions plus NLL on retain answers."""

    name: ClassVar[str] = "idk_dpo"
    Params: ClassVar[type[MethodParams]] = IdkDPOParams
    needs_reference: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = True
    forget_views: ClassVar[tuple[str, ...]] = ("forget", "forget_idk")
    chosen_view: ClassVar[str] = "forget_idk"

    def reference_cache(self, ref_model: Any, view: str, batch_view: Mapping[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor] | None:
        return ref_seq_cache(ref_model, batch_view) if view in self.forget_views else None

    def _log_ratio(self, model: Any, ref_model: Any, v: Mapping[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp, length = seq_logp(model, v)
        return logp - reference_seq_logp(ref_model, v, self.name).to(logp.device), logp, length

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        forget, idk = view(batch, "forget", self.name), view(batch, self.chosen_view, self.name)
        if forget["input_ids"].shape[0] != idk["input_ids"].shape[0]:
            raise MethodError(f"{self.name}: the forget and {self.chosen_view} views must hold the "
                              "same examples")
        lose, lose_logp, lose_len = self._log_ratio(model, ref_model, forget)
        win, _, _ = self._log_ratio(model, ref_model, idk)
        forget_loss = dpo_loss(win, lose, p.beta)
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(p.gamma * forget_loss + retain, {
            "forget_loss": float(forget_loss.detach()),
            "forget_nll": float(-lose_logp.detach().sum() / lose_len.sum().clamp(min=1)),
            "chosen_log_ratio": float(win.detach().mean()),
            "rejected_log_ratio": float(lose.detach().mean()),
            **parts,
        })
