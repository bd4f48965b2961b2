"""``grad_diff``: gradient difference — ascend on forget, descend on retain.

Loss: ``−γ·NLL(forget) + α·NLL(retain)`` with γ = α = 1 (Liu et al., 2022, "Continual
Learning and Private Unlearning"; TOFU's GradDiff baseline; open-unlearning ``GradDiff``
defaults gamma 1, alpha 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Batch, LossOutput, Method, MethodParams, RetainParams, model_nll, retain_nll_term, view


class GradDiffParams(RetainParams):
    """γ weighs the forget ascent, α the retain NLL."""


class GradDiff(Method):
    """Gradient ascent on forget answers plus NLL on retain answers."""

    name: ClassVar[str] = "grad_diff"
    Params: ClassVar[type[MethodParams]] = GradDiffParams
    needs_retain: ClassVar[bool] = True

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        nll = model_nll(model, view(batch, "forget", self.name))
        retain, parts = retain_nll_term(self, model, batch)
        return LossOutput(-p.gamma * nll + retain, {"forget_nll": float(nll.detach()), **parts})
