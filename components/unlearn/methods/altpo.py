"""``altpo``: alternate preference optimisation — DPO toward plausible alternate answers that the
base model itself generates (Mekala, Dorna, Dubey, Lalwani, Koleczek, Rungta, Hasan & Lobo,
2024, "Alternate Preference Optimization for Unlearning Factual Knowledge in Large Language
Models", COLING 2025, arXiv:2409.13474; open-unlearning's AltPO community recipe).

Before training, every forget question gets an alternate answer ``ỹ`` sampled from the base
model (:func:`alternate_answers`): a sample that contains the true answer is rejected; when every
sample at the given temperature does, a second round samples 1.5× hotter (a model that has
memorised the fact rarely says anything else at T = 1: on the tiny benchmark 29 of 32 forget
questions had no alternative among 4 samples at T = 1, 6 of 32 after the hotter round), and a
question still without one falls back to a refusal. With log-ratios to the frozen base
model over answer tokens:

    Δ_alt = log π_θ(ỹ|x) − log π_ref(ỹ|x),   Δ_orig = log π_θ(y|x) − log π_ref(y|x)
    L_AltPO = −(2/β) · E log σ(β·(Δ_alt − Δ_orig))

Total: ``γ·L_AltPO + α·NLL(retain)``; defaults β = 0.1, γ = α = 1 (the recipe's defaults;
its search space is β ∈ {0.05, 0.1, 0.5}, α ∈ {1, 2, 5}). Row i of ``forget_alt`` is the
alternate version of row i of ``forget``; both reference log-likelihoods can be cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from unlearnops.textformat import prompt_and_target

from .base import MethodError, MethodParams
from .idk_dpo import IdkDPO, IdkDPOParams
from .refusals import idk_record

#: Samples drawn per forget question before falling back to a refusal.
ALT_TRIES = 4


class AltPOParams(IdkDPOParams):
    beta: float = Field(0.1, gt=0, description="inverse temperature β of the DPO loss")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the alternate answers")
    max_new_tokens: int = Field(48, ge=1, description="longest alternate answer, in tokens")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def as_question(record: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A QA form of the record (a text record: first half of its words as the question)."""
    if record.get("question") is not None:
        return dict(record)
    out = {k: v for k, v in record.items() if k != "text"}
    words = str(record.get("text", "")).split()
    half = max(1, len(words) // 2)
    return {**out, "kind": "qa", "question": " ".join(words[:half]), "answer": " ".join(words[half:])}


@torch.no_grad()
def alternate_answers(model: Any, tokenizer: Any, records: Sequence[Mapping[str, Any]], *,
                      seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 48,
                      tries: int = ALT_TRIES) -> list[dict[str, Any]]:
    """Each record with ``answer`` replaced by a base-model sample that avoids the true answer.

    Sampling is seeded per record (``seed``, index), so every worker and every resumed run
    builds the same view; the global RNG state is left untouched.
    """
    out: list[dict[str, Any]] = []
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    for index, record in enumerate(records):
        qa = as_question(record, index)
        prompt, truth = prompt_and_target(qa)
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
        truth_n, alt = _norm(truth), None
        for round_no, temp in enumerate((temperature, 1.5 * temperature)):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed((seed * 1_000_003 + index) * 2 + round_no)
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                     temperature=temp, top_k=0, max_new_tokens=max_new_tokens,
                                     num_return_sequences=tries, pad_token_id=pad, eos_token_id=eos)
            texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
            alt = next((t.strip() for t in texts
                        if _norm(t) and (not truth_n or truth_n not in _norm(t))), None)
            if alt:
                break
        out.append({**qa, "answer": alt} if alt else idk_record(qa, index))
    return out


class AltPO(IdkDPO):
    """DPO preferring base-model alternate answers over the true forget answers."""

    name: ClassVar[str] = "altpo"
    Params: ClassVar[type[MethodParams]] = AltPOParams
    forget_views: ClassVar[tuple[str, ...]] = ("forget", "forget_alt")
    chosen_view: ClassVar[str] = "forget_alt"

    def alternate_view(self, ref_model: Any, tokenizer: Any, seed: int
                       ) -> Callable[[Sequence[Mapping[str, Any]]], list[dict[str, Any]]]:
        if ref_model is None:
            raise MethodError("method 'altpo' needs the base model to generate alternate answers")
        p = self.params
        return lambda records: alternate_answers(ref_model, tokenizer, records, seed=seed,
                                                 temperature=p.temperature, max_new_tokens=p.max_new_tokens)
