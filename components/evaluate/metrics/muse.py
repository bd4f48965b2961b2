"""MUSE's knowledge and verbatim-memorisation metrics (Shi et al., 2024, "MUSE: Machine Unlearning
Six-Way Evaluation for Language Models", arXiv:2407.06460, §3).

- VerbMem: ROUGE-L F1 between the greedy continuation of a forget text's prefix and its true
  continuation, averaged over the forget set's text records.
- KnowMem: ROUGE-L recall of greedy answers to QA pairs, on the forget set and on the retain-eval
  people (MUSE reports both: the first should fall, the second stay).
- PrivLeak against the holdout set is ``privacy.privleak``; the gradient-norm and reference-model
  attacks are ``privacy.mia_auc.grad_norm`` and ``privacy.mia_auc.reference``.
"""

from __future__ import annotations

from . import ModelContext, Pass, continuation_split, is_qa, metric
from .forget import rouge_l_f1, set_rouge


def set_verbmem(ctx: ModelContext, set_name: str) -> float | None:
    """Mean ROUGE-L F1 of greedy continuations of the set's text records (None without any)."""
    texts = [r for r in ctx.data.sets.get(set_name, []) if r.get("text") is not None and not is_qa(r)]
    if not texts:
        ctx.data.note(f"VerbMem: the {set_name} set has no text records; not measured")
        return None
    gens = ctx.gen(set_name, "continue")
    return float(rouge_l_f1(gens, [continuation_split(r)[1].strip() for r in texts]).mean())


@metric("forget.verbmem", passes=[Pass("gen", "forget", "continue")], higher_is_better=False)
def verbmem_forget(ctx: ModelContext) -> float | None:
    """MUSE VerbMem: ROUGE-L F1 of continuations of forget texts."""
    return set_verbmem(ctx, "forget")


@metric("forget.knowmem", passes=[Pass("gen", "forget")], higher_is_better=False)
def knowmem_forget(ctx: ModelContext) -> float | None:
    """MUSE KnowMem on the forget QA: ROUGE-L recall of greedy answers."""
    return set_rouge(ctx, "forget")


@metric("utility.retain.knowmem", passes=[Pass("gen", "retain_person")], higher_is_better=True)
def knowmem_retain(ctx: ModelContext) -> float | None:
    """MUSE KnowMem on the retain-eval people's QA: ROUGE-L recall of greedy answers."""
    return set_rouge(ctx, "retain_person")
