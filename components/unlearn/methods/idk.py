"""``idk``: fine-tune forget questions toward refusal answers ("I don't know").

Loss: ``γ·NLL(forget_idk) + α·NLL(retain)`` with γ = α = 1, where ``forget_idk`` holds the
forget questions with answers from :data:`.refusals.REFUSALS` (TOFU's "IDK" baseline, Maini et
al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs"; open-unlearning ``IdkNLL``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Batch, LossOutput, Method, MethodParams, RetainParams, model_nll, retain_nll_term, view


class IdkParams(RetainParams):
    """γ weighs the refusal NLL, α the retain NLL."""


class Idk(Method):
    """Supervised refusal answers on forget questions plus NLL on retain answers."""

    name: ClassVar[str] = "idk"
    Params: ClassVar[type[MethodParams]] = IdkParams
    needs_retain: ClassVar[bool] = True
    forget_views: ClassVar[tuple[str, ...]] = ("forget_idk",)

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        nll = model_nll(model, view(batch, "forget_idk", self.name))
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(p.gamma * nll + retain, {"idk_nll": float(nll.detach()), **parts})
