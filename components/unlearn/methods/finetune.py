"""``finetune``: plain supervised fine-tuning on the ``forget`` view (the training data).

Loss: mean answer-token NLL, ``−(1/N) Σ_t log p_θ(y_t | x, y_<t)`` over all answer tokens
of the batch (the causal-LM loss of Hugging Face's ``Trainer``). Builds the benchmark models
and is the relearning attack of the robustness evaluation; here "forget" simply names the
data being trained on.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Batch, LossOutput, Method, MethodParams, model_nll, view


class FinetuneParams(MethodParams):
    """No hyper-parameters beyond the optimiser's."""


class Finetune(Method):
    """Supervised fine-tuning: minimise NLL of the "forget" view's answers."""

    name: ClassVar[str] = "finetune"
    Params: ClassVar[type[MethodParams]] = FinetuneParams

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        nll = model_nll(model, view(batch, "forget", self.name))
        return LossOutput(nll, {"forget_nll": float(nll.detach())})
