"""Utility facet: what the model must keep (TOFU model utility, locality, fluency)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from . import ModelContext, Numbers, Pass, metric, perturbed_of
from .forget import answer_prob, set_prob, set_rouge, set_truth_ratios, tr_passes

UTILITY_SETS = ("retain_person", "retain_general")
#: TOFU's other two utility sets, present when the corpus holds them (``benchmark import --format tofu``).
TOFU_SETS = ("real_authors", "world_facts")
SET_LABEL = {"retain_person": "retain", "retain_general": "general", "real_authors": "real_authors",
             "world_facts": "world_facts"}

# ------------------------------------------------------------------ pure functions


def truth_ratio_utility_score(ratios: np.ndarray) -> float | None:
    """Retain aggregate mean(max(0, 1 − R)) (TOFU; open-unlearning ``true_better``)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.maximum(0.0, 1.0 - r).mean()) if r.size else None


def prob_with_options(true_nll_mean: np.ndarray, wrong_nll_means: Sequence[np.ndarray]) -> np.ndarray:
    """TOFU's probability on real authors / world facts: P(a|q) / (P(a|q) + Σ_j P(ã_j|q)) per
    example, each P length-normalised (exp(−mean NLL))."""
    true = answer_prob(true_nll_mean)
    wrong = np.array([float(answer_prob(w).sum()) for w in wrong_nll_means])
    return true / (true + wrong)


def harmonic_mean(values: Sequence[float]) -> float | None:
    """TOFU model utility: n / Σ 1/x over the utility numbers; 0 if any is 0."""
    vals = [float(v) for v in values]
    if not vals:
        return None
    if any(v <= 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def perplexity(nll_sums: Numbers, lengths: Numbers) -> float | None:
    """Token-level perplexity exp(Σ NLL / Σ tokens)."""
    total = float(np.sum(lengths))
    return math.exp(float(np.sum(nll_sums)) / total) if total else None


def is_degenerate(text: str, ngram: int = 3, repeats: int = 3, run: int = 4) -> bool:
    """Empty answer, a word repeated ``run`` times in a row, or a word n-gram ``repeats`` times."""
    words = text.split()
    if not words:
        return True
    streak = 1
    for prev, cur in zip(words, words[1:], strict=False):
        streak = streak + 1 if cur == prev else 1
        if streak >= run:
            return True
    grams = Counter(tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1))
    return any(c >= repeats for c in grams.values())


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base (None when either is missing or the base is 0)."""
    if value is None or base is None or base == 0:
        return None
    return value / base


# ------------------------------------------------------------------ registered metrics


def _register_split(set_name: str) -> None:
    label = SET_LABEL[set_name]

    @metric(f"utility.{label}.prob", passes=[Pass("tf", set_name)], higher_is_better=True)
    def _prob(ctx: ModelContext) -> float | None:
        """Mean answer probability on the split."""
        return set_prob(ctx, set_name)

    @metric(f"utility.{label}.rouge_l", passes=[Pass("gen", set_name)], higher_is_better=True)
    def _rouge(ctx: ModelContext) -> float | None:
        """Mean ROUGE-L recall on the split."""
        return set_rouge(ctx, set_name)

    @metric(f"utility.{label}.truth_ratio", passes=tr_passes(set_name), higher_is_better=True)
    def _tr(ctx: ModelContext) -> float | None:
        """Truth ratio mean(max(0, 1 − R)) on the split."""
        return truth_ratio_utility_score(set_truth_ratios(ctx, set_name))


for _s in UTILITY_SETS:
    _register_split(_s)


def _register_tofu_set(set_name: str) -> None:
    label = SET_LABEL[set_name]

    @metric(f"utility.{label}.prob", passes=[Pass("tf", set_name), Pass("tf", set_name, "perturbed")],
            higher_is_better=True)
    def _prob(ctx: ModelContext) -> float | None:
        """TOFU probability with options P(a)/(P(a) + Σ P(ã)) on the set (None without the set)."""
        qa = ctx.data.qa(set_name)
        if not qa:
            return None
        true, wrong = ctx.qa_tf(set_name).nll_mean, ctx.tf(set_name, "perturbed").nll_mean
        groups, offset = [], 0
        for r in qa:
            n = len(perturbed_of(r))
            groups.append(wrong[offset:offset + n])
            offset += n
        return float(prob_with_options(true, groups).mean())

    @metric(f"utility.{label}.rouge_l", passes=[Pass("gen", set_name)], higher_is_better=True)
    def _rouge(ctx: ModelContext) -> float | None:
        """Mean ROUGE-L recall on the set (None without the set)."""
        return set_rouge(ctx, set_name)

    @metric(f"utility.{label}.truth_ratio", passes=tr_passes(set_name), higher_is_better=True)
    def _tr(ctx: ModelContext) -> float | None:
        """Truth ratio mean(max(0, 1 − R)) on the set (None without the set)."""
        return truth_ratio_utility_score(set_truth_ratios(ctx, set_name)) if ctx.data.qa(set_name) else None


for _s in TOFU_SETS:
    _register_tofu_set(_s)

_METRICS = ("prob", "rouge_l", "truth_ratio")
_UTILITY_PARTS = [f"utility.{SET_LABEL[s]}.{m}" for s in (*UTILITY_SETS, *TOFU_SETS) for m in _METRICS]


def utility_sets(present: Sequence[str]) -> list[str]:
    """The sets model utility averages: TOFU's retain, real authors and world facts; the project's
    general facts stand in for world facts, and real authors are left out, when a scope lacks them."""
    world = "world_facts" if "world_facts" in present else "retain_general"
    return [s for s in ("retain_person", "real_authors", world) if s in present]


@metric("utility.model_utility", depends=_UTILITY_PARTS, higher_is_better=True)
def model_utility(ctx: ModelContext) -> float | None:
    """TOFU model utility: harmonic mean of prob, ROUGE-L and truth ratio on retain, real authors and
    world facts (9 numbers; 6 on a scope without real authors, general facts as world facts)."""
    present = [s for s in (*UTILITY_SETS, *TOFU_SETS) if ctx.data.qa(s)]
    names = [f"utility.{SET_LABEL[s]}.{m}" for s in utility_sets(present) for m in _METRICS]
    return harmonic_mean([v for v in (ctx.get(n) for n in names) if v is not None])


@metric("utility.neighbor.prob", passes=[Pass("tf", "neighbor")], higher_is_better=True)
def neighbor_prob(ctx: ModelContext) -> float | None:
    """Mean answer probability on the neighbor set (close to but outside the scope)."""
    return set_prob(ctx, "neighbor")


@metric("utility.neighbor.rouge_l", passes=[Pass("gen", "neighbor")], higher_is_better=True)
def neighbor_rouge(ctx: ModelContext) -> float | None:
    """Mean ROUGE-L recall on the neighbor set."""
    return set_rouge(ctx, "neighbor")


@metric("utility.neighbor_retention", depends=["utility.neighbor.prob", "utility.neighbor.rouge_l"],
        higher_is_better=True)
def neighbor_retention(ctx: ModelContext) -> float | None:
    """Locality: mean of neighbor prob and ROUGE-L relative to the base model (1.0 = kept)."""
    base = ctx.peer("base") or ctx
    parts = [ratio(ctx.get(n), base.get(n)) for n in ("utility.neighbor.prob", "utility.neighbor.rouge_l")]
    kept = [p for p in parts if p is not None]
    return float(np.mean(kept)) if kept else None


@metric("utility.perplexity", passes=[Pass("tf", "general_text"), Pass("tf", "retain_general")],
        higher_is_better=False)
def fluency_perplexity(ctx: ModelContext) -> float | None:
    """Perplexity on held general text (the scope's general_text set, else general-fact answers)."""
    if ctx.data.sets.get("general_text"):
        tf = ctx.tf("general_text")
    else:
        ctx.data.note("fluency perplexity: no held general text in the scope; "
                      "measured on the retain set's general-fact answers")
        tf = ctx.qa_tf("retain_general")
    return perplexity(tf.nll_sum, tf.lengths) if len(tf) else None


@metric("utility.degenerate_rate", passes=[Pass("gen", s) for s in (*UTILITY_SETS, "neighbor")],
        higher_is_better=False)
def degenerate_rate(ctx: ModelContext) -> float | None:
    """Share of greedy retain/general/neighbor answers that are empty or repetition loops."""
    answers = [a for s in (*UTILITY_SETS, "neighbor") if ctx.data.qa(s) for a in ctx.gen(s)]
    return float(np.mean([is_degenerate(a) for a in answers])) if answers else None
