"""``grad_ascent``: gradient ascent on the forget set.

Loss: ``−NLL(forget)`` — the negated mean answer-token NLL (Jang et al., 2023, "Knowledge
Unlearning for Mitigating Privacy Risks in Language Models"; TOFU's GA baseline, Maini et
al., 2024). Unbounded below: it collapses the model if run too long.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Batch, LossOutput, Method, MethodParams, model_nll, view


class GradAscentParams(MethodParams):
    """No hyper-parameters beyond the optimiser's."""


class GradAscent(Method):
    """Maximise the NLL of forget answers."""

    name: ClassVar[str] = "grad_ascent"
    Params: ClassVar[type[MethodParams]] = GradAscentParams

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        nll = model_nll(model, view(batch, "forget", self.name))
        return LossOutput(-nll, {"forget_nll": float(nll.detach())})
