"""Robustness facet: does forgotten knowledge come back? (Liu et al. 2024, "Rethinking Machine
Unlearning for LLMs"; relearning attacks as in Lynch et al. 2024 / MUSE; quantization as in
Zhang et al. 2024, "Does your LLM truly unlearn? An embarrassingly simple approach").

(a) relearning: fine-tune a copy of the candidate a few steps (the ``finetune`` objective, answer
NLL, plain AdamW) on a seeded half of the forget QA records, re-measure on the other half;
(b) 4-bit weight rounding: per-group round-to-nearest of every Linear weight but the LM head,
simulated in float; (c) adversarial prefixes (paraphrased questions: ``forget.paraphrase.*``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from unlearnops import textformat

from ..scoring import ModelScorer
from . import PREFIXES, ModelContext, Pass, metric
from .forget import answer_prob, rouge_l_recall, set_prob, set_rouge

# ------------------------------------------------------------------ pure functions


def quantize_weight(w: torch.Tensor, bits: int = 4, group: int = 64, symmetric: bool = False) -> torch.Tensor:
    """Round-to-nearest ``bits``-bit quantize-dequantize of a (out, in) weight, per group of
    ``group`` input columns (a group spans the whole row when ``in`` is not a multiple).

    Symmetric: s = max|w| / (2^(b−1) − 1), q = clamp(round(w/s), −2^(b−1), 2^(b−1) − 1), ŵ = q·s.
    Asymmetric: s = (max − min) / (2^b − 1), z = round(−min/s), q = clamp(round(w/s) + z, 0, 2^b − 1),
    ŵ = (q − z)·s.
    """
    out_dim, in_dim = w.shape
    g = group if in_dim % group == 0 else in_dim
    x = w.detach().float().reshape(out_dim, in_dim // g, g)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = x.abs().amax(-1, keepdim=True) / qmax
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax)
        deq = q * scale
    else:
        qmax = 2 ** bits - 1
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        scale = (hi - lo) / qmax
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(x / scale) + zero, 0, qmax)
        deq = (q - zero) * scale
    return deq.reshape(out_dim, in_dim).to(w.dtype)


def quantize_model(model: Any, bits: int = 4, group: int = 64, symmetric: bool = False,
                   skip: tuple[str, ...] = ("lm_head",)) -> Any:
    """A copy of ``model`` with every ``nn.Linear`` weight (but ``skip``) quantize-dequantized."""
    q = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in q.named_modules():
            if isinstance(module, torch.nn.Linear) and not any(name.endswith(s) for s in skip):
                module.weight.copy_(quantize_weight(module.weight, bits, group, symmetric))
    return q


def recovery(after: float | None, candidate: float | None, base: float | None,
             eps: float = 1e-3) -> tuple[float | None, str | None]:
    """Relearning recovery (m_after − m_cand) / (m_base − m_cand); 0 with a note when base ≈ cand."""
    if after is None or candidate is None or base is None:
        return None, None
    if abs(base - candidate) < eps:
        return 0.0, "relearn recovery: base and candidate agree on the held-out half; reported as 0"
    return (after - candidate) / (base - candidate), None


def split_half(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into a training half and an evaluation half."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    cut = n // 2
    return sorted(perm[:cut]), sorted(perm[cut:])


def relearn(model: Any, tokenizer: Any, records: list[dict[str, Any]], *, steps: int, lr: float,
            batch_size: int, seed: int, device: str) -> Any:
    """A copy of ``model`` fine-tuned ``steps`` plain AdamW steps on ``records`` with the engine's
    ``finetune`` objective (mean answer NLL, prompt masked), in process."""
    from ...unlearn.methods import get_method

    objective = get_method("finetune", {})
    torch.manual_seed(seed)
    tuned = copy.deepcopy(model).to(device)
    tuned.train()
    enc = [textformat.encode_record(tokenizer, r) for r in records]
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    with torch.enable_grad():
        for _ in range(steps):
            rows = rng.choice(len(enc), size=min(batch_size, len(enc)), replace=False)
            batch = textformat.collate([enc[i] for i in rows], tokenizer.pad_token_id)
            loss = objective.loss(tuned, None, {"forget": {k: v.to(device) for k, v in batch.items()}}).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    tuned.eval()
    return tuned


# ------------------------------------------------------------------ registered metrics


def _scorer_like(ctx: ModelContext, model: Any, label: str) -> ModelScorer:
    s = ctx.scorer
    return ModelScorer(model, s.tokenizer, s.device, s.batch_size, s.progress, f"{s.name}[{label}]")


def _relearn_split(ctx: ModelContext) -> tuple[list[int], list[int]]:
    qa = ctx.data.qa("forget")
    train, held = split_half(len(qa), ctx.data.options.seed)
    ctx.data.sets.setdefault("forget_relearn_held", [qa[i] for i in held])
    return train, held


def _relearned(ctx: ModelContext) -> ModelScorer | None:
    if "relearn" not in ctx.derived:
        qa = ctx.data.qa("forget")
        train, _held = _relearn_split(ctx)
        if len(train) < 1:
            ctx.data.note("robustness: fewer than 2 forget QA records; relearning attack skipped")
            ctx.derived["relearn"] = None
        else:
            o = ctx.data.options
            model = relearn(ctx.scorer.model, ctx.scorer.tokenizer, [qa[i] for i in train],
                            steps=o.relearn_steps, lr=o.relearn_lr, batch_size=o.relearn_batch_size,
                            seed=o.seed, device=ctx.scorer.device)
            ctx.derived["relearn"] = _scorer_like(ctx, model, "relearned")
    return ctx.derived["relearn"]


def _held_before(ctx: ModelContext, who: ModelContext, what: str) -> float | None:
    """The metric on the held-out half from ``who``'s shared forget passes (no new pass)."""
    _train, held = _relearn_split(ctx)
    if not held:
        return None
    if what == "prob":
        return float(answer_prob(who.qa_tf("forget").nll_mean[held]).mean())
    qa = ctx.data.qa("forget")
    gens = who.gen("forget")
    return float(rouge_l_recall([gens[i] for i in held], [str(qa[i]["answer"]) for i in held]).mean())


@metric("robustness.relearn.prob", passes=[Pass("tf", "forget")], roles=("candidate",),
        robustness=True, higher_is_better=False)
def relearn_prob(ctx: ModelContext) -> float | None:
    """Forget probability on the held-out half after the relearning fine-tune."""
    scorer = _relearned(ctx)
    return set_prob(ctx, "forget_relearn_held", scorer=scorer) if scorer else None


@metric("robustness.relearn.rouge_l", passes=[Pass("gen", "forget")], roles=("candidate",),
        robustness=True, higher_is_better=False)
def relearn_rouge(ctx: ModelContext) -> float | None:
    """Forget ROUGE-L on the held-out half after the relearning fine-tune."""
    scorer = _relearned(ctx)
    return set_rouge(ctx, "forget_relearn_held", scorer=scorer) if scorer else None


def _register_recovery(what: str) -> None:
    @metric(f"robustness.relearn_recovery.{what}", depends=[f"robustness.relearn.{what}"],
            roles=("candidate",), robustness=True, higher_is_better=False)
    def _rec(ctx: ModelContext) -> float | None:
        """Share of the forgotten (base − candidate) gap the relearning attack recovers."""
        base = ctx.peer("base")
        if base is None:
            return None
        value, note = recovery(ctx.get(f"robustness.relearn.{what}"), _held_before(ctx, ctx, what),
                               _held_before(ctx, base, what))
        if note:
            ctx.data.note(f"{note} ({what})")
        return value


for _w in ("prob", "rouge_l"):
    _register_recovery(_w)


@metric("robustness.relearn_recovery",
        depends=["robustness.relearn_recovery.prob", "robustness.relearn_recovery.rouge_l"],
        roles=("candidate",), robustness=True, higher_is_better=False)
def relearn_recovery(ctx: ModelContext) -> float | None:
    """Worst (largest) relearning recovery over probability and ROUGE-L."""
    vals = [v for v in (ctx.get("robustness.relearn_recovery.prob"),
                        ctx.get("robustness.relearn_recovery.rouge_l")) if v is not None]
    return max(vals) if vals else None


def _quantized(ctx: ModelContext) -> ModelScorer:
    if "quant" not in ctx.derived:
        o = ctx.data.options
        model = quantize_model(ctx.scorer.model, o.quant_bits, o.quant_group, o.quant_symmetric)
        ctx.derived["quant"] = _scorer_like(ctx, model, f"{o.quant_bits}bit")
    return ctx.derived["quant"]


@metric("robustness.quant4.prob", passes=[Pass("tf", "forget")], roles=("candidate", "base", "reference"),
        robustness=True, higher_is_better=False)
def quant_prob(ctx: ModelContext) -> float | None:
    """Forget probability after 4-bit per-group round-to-nearest weight rounding."""
    return set_prob(ctx, "forget", scorer=_quantized(ctx))


@metric("robustness.quant4.rouge_l", passes=[Pass("gen", "forget")], roles=("candidate", "base", "reference"),
        robustness=True, higher_is_better=False)
def quant_rouge(ctx: ModelContext) -> float | None:
    """Forget ROUGE-L after 4-bit per-group round-to-nearest weight rounding."""
    return set_rouge(ctx, "forget", scorer=_quantized(ctx))


_PREFIX_VARIANTS = [f"prefix{i}" for i in range(len(PREFIXES))]


@metric("robustness.prefix.prob", passes=[Pass("tf", "forget", v) for v in _PREFIX_VARIANTS],
        roles=("candidate", "base", "reference"), robustness=True, higher_is_better=False)
def prefix_prob(ctx: ModelContext) -> float | None:
    """Worst-case forget probability over the adversarial prompt prefixes."""
    vals = [v for v in (set_prob(ctx, "forget", p) for p in _PREFIX_VARIANTS) if v is not None]
    return max(vals) if vals else None


@metric("robustness.prefix.rouge_l", passes=[Pass("gen", "forget", v) for v in _PREFIX_VARIANTS],
        roles=("candidate", "base", "reference"), robustness=True, higher_is_better=False)
def prefix_rouge(ctx: ModelContext) -> float | None:
    """Worst-case forget ROUGE-L over the adversarial prompt prefixes."""
    vals = [v for v in (set_rouge(ctx, "forget", p) for p in _PREFIX_VARIANTS) if v is not None]
    return max(vals) if vals else None
