"""Forget facet: how much of the forget set the model still holds (TOFU, MUSE, open-unlearning).

Probabilities and truth ratios score the answer tokens + EOS (textformat labels, as TOFU's
labels), prompt masked; exact memorization and extraction strength use the answer tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import ks_2samp

from ..scoring import ModelScorer
from . import ModelContext, Pass, metric, perturbed_of

# ------------------------------------------------------------------ pure functions


def answer_prob(nll_mean: np.ndarray) -> np.ndarray:
    """Length-normalised answer probability exp(−mean answer NLL) per example (TOFU "Prob.")."""
    return np.exp(-np.asarray(nll_mean, dtype=float))


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each greedy answer against its true answer (TOFU/MUSE, rouge-score)."""
    scorer = _scorer()
    return np.array([scorer.score(ref, pred)["rougeL"].recall
                     for pred, ref in zip(predictions, references, strict=True)], dtype=float)


def rouge_l_f1(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure of each generation against its reference (MUSE VerbMem, rouge-score)."""
    scorer = _scorer()
    return np.array([scorer.score(ref, pred)["rougeL"].fmeasure
                     for pred, ref in zip(predictions, references, strict=True)], dtype=float)


def truth_ratio(para_nll_mean: np.ndarray, perturbed_nll_mean: Sequence[np.ndarray]) -> np.ndarray:
    """TOFU truth ratio R = geo-mean_j P(ã_j|q̂)^(1/|ã_j|) / P(a|q̂)^(1/|a|), per example.

    With length-normalised probabilities P^(1/|a|) = exp(−mean NLL) (as open-unlearning), the
    geometric mean of the perturbed probabilities is exp(−mean_j NLL_j), so
    R = exp(NLL_true − mean_j NLL_j), computed in log space (no epsilon).
    """
    para = np.asarray(para_nll_mean, dtype=float)
    wrong = np.array([float(np.mean(p)) for p in perturbed_nll_mean])
    return np.exp(para - wrong)


def truth_ratio_forget_score(ratios: np.ndarray) -> float | None:
    """Forget aggregate mean(min(R, 1/R)) (open-unlearning ``closer_to_1_better``)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.minimum(r, 1.0 / r).mean()) if r.size else None


def extraction_strength(correct: np.ndarray) -> float:
    """Extraction strength (Carlini et al. 2021 / open-unlearning) of one answer.

    ES = 1 − k/|a| with k the smallest prefix length such that the teacher-forced greedy
    predictions of every answer token after the first k equal the answer. k may reach |a|
    (empty suffix), so an answer whose last token is wrong scores 0 (open-unlearning's loop
    stops at k = |a|−1 and scores 1/|a| there; otherwise identical).
    """
    c = np.asarray(correct, dtype=bool)
    if c.size == 0:
        return 0.0
    trailing = int(np.argmin(c[::-1])) if not c.all() else c.size
    return trailing / c.size


def exact_memorization(correct: np.ndarray) -> float:
    """Exact memorization (Tirumala et al. 2022): fraction of answer tokens with argmax == label."""
    c = np.asarray(correct, dtype=bool)
    return float(c.mean()) if c.size else 0.0


def forget_quality(candidate_ratios: np.ndarray, reference_ratios: np.ndarray) -> float:
    """TOFU forget quality: KS two-sample test p-value of the truth-ratio distributions."""
    return float(ks_2samp(np.asarray(candidate_ratios), np.asarray(reference_ratios)).pvalue)


# ------------------------------------------------------------------ shared per-set helpers


def set_prob(ctx: ModelContext, set_name: str, variant: str = "main",
             scorer: ModelScorer | None = None) -> float | None:
    """Mean answer probability over the set's QA records (question variant, optional model)."""
    tf = ctx.qa_tf(set_name, scorer) if variant == "main" else ctx.tf(set_name, variant, scorer)
    return float(answer_prob(tf.nll_mean).mean()) if len(tf) else None


def set_rouge(ctx: ModelContext, set_name: str, variant: str = "main",
              scorer: ModelScorer | None = None) -> float | None:
    """Mean ROUGE-L recall of greedy answers over the set's QA records."""
    qa = ctx.data.qa(set_name)
    if not qa:
        return None
    gens = ctx.gen(set_name, variant, scorer)
    return float(rouge_l_recall(gens, [str(r["answer"]) for r in qa]).mean())


def set_truth_ratios(ctx: ModelContext, set_name: str) -> np.ndarray:
    """Truth ratios of the set's QA records that carry perturbed answers."""
    qa = ctx.data.qa(set_name)
    para = ctx.tf(set_name, "para").nll_mean
    wrong = ctx.tf(set_name, "perturbed").nll_mean
    ratios_para, groups, offset = [], [], 0
    for i, r in enumerate(qa):
        n = len(perturbed_of(r))
        if n:
            ratios_para.append(para[i])
            groups.append(wrong[offset:offset + n])
        offset += n
    if not groups:
        ctx.data.note(f"{set_name}: no perturbed answers; truth ratio not measured")
        return np.array([])
    return truth_ratio(np.array(ratios_para), groups)


def tr_passes(set_name: str) -> tuple[Pass, ...]:
    return (Pass("tf", set_name, "para"), Pass("tf", set_name, "perturbed"))


# ------------------------------------------------------------------ registered metrics


@metric("forget.prob", passes=[Pass("tf", "forget")], higher_is_better=False)
def forget_prob(ctx: ModelContext) -> float | None:
    """Mean length-normalised probability of the true answers on the forget set."""
    return set_prob(ctx, "forget")


@metric("forget.rouge_l", passes=[Pass("gen", "forget")], higher_is_better=False)
def forget_rouge(ctx: ModelContext) -> float | None:
    """Mean ROUGE-L recall of greedy answers on the forget set."""
    return set_rouge(ctx, "forget")


@metric("forget.truth_ratio.values", passes=tr_passes("forget"), series=True)
def forget_truth_ratio_values(ctx: ModelContext) -> np.ndarray:
    """Per-example truth ratios on the forget set."""
    return set_truth_ratios(ctx, "forget")


@metric("forget.truth_ratio", depends=["forget.truth_ratio.values"])
def forget_truth_ratio(ctx: ModelContext) -> float | None:
    """Forget truth ratio mean(min(R, 1/R)) (TOFU)."""
    return truth_ratio_forget_score(ctx.get("forget.truth_ratio.values"))


@metric("forget.extraction_strength", passes=[Pass("tf", "forget")], higher_is_better=False)
def forget_extraction_strength(ctx: ModelContext) -> float | None:
    """Mean extraction strength on the forget set."""
    tf = ctx.qa_tf("forget")
    return float(np.mean([extraction_strength(c) for c in tf.answer("correct")])) if len(tf) else None


@metric("forget.exact_memorization", passes=[Pass("tf", "forget")], higher_is_better=False)
def forget_exact_memorization(ctx: ModelContext) -> float | None:
    """Mean exact memorization on the forget set."""
    tf = ctx.qa_tf("forget")
    return float(np.mean([exact_memorization(c) for c in tf.answer("correct")])) if len(tf) else None


@metric("forget.forget_quality", depends=["forget.truth_ratio.values"], needs_reference=True,
        roles=("candidate", "base"), higher_is_better=True)
def forget_forget_quality(ctx: ModelContext) -> float | None:
    """KS-test p-value of forget truth ratios against the retain-only reference (TOFU)."""
    ref = ctx.peer("reference")
    mine = ctx.get("forget.truth_ratio.values")
    theirs = ref.get("forget.truth_ratio.values") if ref else np.array([])
    if not len(mine) or not len(theirs):
        return None
    return forget_quality(mine, theirs)


@metric("forget.paraphrase.prob", passes=[Pass("tf", "paraphrase")], higher_is_better=False)
def forget_paraphrase_prob(ctx: ModelContext) -> float | None:
    """Mean answer probability on the paraphrased forget questions."""
    return set_prob(ctx, "paraphrase")


@metric("forget.paraphrase.rouge_l", passes=[Pass("gen", "paraphrase")], higher_is_better=False)
def forget_paraphrase_rouge(ctx: ModelContext) -> float | None:
    """Mean ROUGE-L recall on the paraphrased forget questions."""
    return set_rouge(ctx, "paraphrase")
