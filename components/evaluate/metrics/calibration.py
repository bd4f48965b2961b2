"""Honest-gate metrics (issue 10): knowledge retention as users feel it, forgetting measured
against the never-trained holdout level, answer fluency against the base model, and a
membership-inference band sized by the sets.

- *Exact answers*: a greedy answer is right when it equals the true answer (case, spacing and
  a trailing full stop ignored); retention = candidate exact rate / base exact rate on held-out
  records (retain-eval people, general facts, neighbors).
- *Holdout level* (components/unlearn/calibrate.py): a model that never saw a person answers
  about them as it answers
  about holdout people, so forget metrics are compared with the same model's holdout metrics —
  a gap near 0 is the goal, far below is over-forgetting (itself a membership signal).
- *MIA band*: under H0 (forget and holdout scores from one distribution, no ties) the ROC AUC
  (= Mann-Whitney U / n₁n₂) has mean 0.5 and variance (n₁ + n₂ + 1) / (12 n₁ n₂) (Mann & Whitney
  1947; Hanley & McNeil 1982). The band is z·σ with z = 2.50 (two-sided 5%, Bonferroni over the
  four attacks of :mod:`.privacy`, whose farthest AUC is reported): 16 + 16 records give ±0.26,
  1000 + 1000 ±0.032.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import ModelContext, Numbers, Pass, metric
from .forget import rouge_l_recall, set_rouge
from .privacy import ATTACKS
from .utility import is_degenerate, ratio

#: z for a two-sided 5% test of each of the four MIA attacks (Bonferroni: 0.05 / 4 / 2 → 2.498).
MIA_Z = 2.498
#: z of the band around the holdout level (two-sided ~1%: one gate per metric, a few metrics).
GAP_Z = 2.5
#: Sets whose greedy answers are checked for broken text (forget included: a forgotten person's
#: answer should read like the retain-only reference's or a refusal, never a loop).
FLUENCY_SETS = ("forget", "paraphrase", "retain_person", "retain_general", "neighbor")
RETENTION_SETS = {"retain": "retain_person", "general": "retain_general", "neighbor": "neighbor"}

# ------------------------------------------------------------------ pure functions


def normalise_answer(text: str) -> str:
    """Lower case, single spaces, no surrounding spaces or trailing full stop."""
    return " ".join(str(text).lower().split()).rstrip(".").strip()


def exact_matches(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """1.0 where the greedy answer equals the true answer after :func:`normalise_answer`."""
    return np.array([normalise_answer(p) == normalise_answer(r)
                     for p, r in zip(predictions, references, strict=True)], dtype=float)


def is_broken(text: str) -> bool:
    """Degenerate (:func:`.utility.is_degenerate`) or a word 3-gram said twice ("was born in was
    born in 1984") — short factual answers never repeat a phrase."""
    words = text.lower().split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return is_degenerate(text) or len(grams) != len(set(grams))


def auc_null_sd(n_members: int, n_nonmembers: int) -> float | None:
    """Standard deviation of the ROC AUC under H0 (no membership signal), no ties:
    sqrt((n₁ + n₂ + 1) / (12 n₁ n₂))."""
    if n_members < 1 or n_nonmembers < 1:
        return None
    return math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))


def auc_band(n_members: int, n_nonmembers: int, z: float = MIA_Z) -> float | None:
    """Half-width of the band around 0.5 an AUC stays in, at these set sizes, without a signal."""
    sd = auc_null_sd(n_members, n_nonmembers)
    return None if sd is None else z * sd


def band_excess(value: float | None, centre: float, half_width: float | None) -> float | None:
    """How far ``value`` lies outside centre ± half_width (0 inside the band)."""
    if value is None or half_width is None:
        return None
    return max(0.0, abs(value - centre) - half_width)


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def mean_gap_band(a: Numbers, b: Numbers, z: float = GAP_Z) -> float | None:
    """Half-width z·SE of the difference of two means, SE² = s_a²/n_a + s_b²/n_b (Welch): how far
    two samples' means may differ by chance at these sizes."""
    if len(a) < 2 or len(b) < 2:
        return None
    return z * math.sqrt(float(np.var(a, ddof=1)) / len(a) + float(np.var(b, ddof=1)) / len(b))


# ------------------------------------------------------------------ shared helpers


def set_exact(ctx: ModelContext, set_name: str) -> float | None:
    """Share of the set's QA records answered exactly by greedy decoding."""
    qa = ctx.data.qa(set_name)
    if not qa:
        return None
    return float(exact_matches(ctx.gen(set_name), [str(r["answer"]) for r in qa]).mean())


def _base(ctx: ModelContext) -> ModelContext:
    return ctx.peer("base") or ctx


# ------------------------------------------------------------------ exact answers and retention


def _register_exact(label: str, set_name: str, facet: str) -> None:
    @metric(f"{facet}.{label}.exact", passes=[Pass("gen", set_name)], higher_is_better=facet != "forget")
    def _exact(ctx: ModelContext) -> float | None:
        """Share of exact greedy answers on the set."""
        return set_exact(ctx, set_name)


for _label, _set in RETENTION_SETS.items():
    _register_exact(_label, _set, "utility")
_register_exact("answers", "forget", "forget")
_register_exact("holdout", "holdout", "privacy")


def _register_retention(label: str) -> None:
    name = f"utility.{label}.exact"

    @metric(f"utility.retention.{label}", depends=[name], higher_is_better=True)
    def _retention(ctx: ModelContext) -> float | None:
        """Exact answers kept on held-out records, relative to the base model (1.0 = all kept)."""
        return ratio(ctx.get(name), _base(ctx).get(name))


for _label in RETENTION_SETS:
    _register_retention(_label)


@metric("utility.knowledge_retention", depends=[f"utility.retention.{k}" for k in RETENTION_SETS],
        higher_is_better=True)
def knowledge_retention(ctx: ModelContext) -> float | None:
    """The lowest of retain-eval, general and neighbor exact-answer retention vs base."""
    vals = [v for v in (ctx.get(f"utility.retention.{k}") for k in RETENTION_SETS) if v is not None]
    return min(vals) if vals else None


# ------------------------------------------------------------------ forgetting at the holdout level


@metric("privacy.holdout.rouge_l", passes=[Pass("gen", "holdout")])
def holdout_rouge(ctx: ModelContext) -> float | None:
    """Mean ROUGE-L recall of greedy answers about never-trained holdout people."""
    return set_rouge(ctx, "holdout")


@metric("forget.holdout_gap.rouge_l", depends=["forget.rouge_l", "privacy.holdout.rouge_l"])
def forget_holdout_gap_rouge(ctx: ModelContext) -> float | None:
    """Forget ROUGE-L − holdout ROUGE-L (0 = forgotten to the never-trained level)."""
    return difference(ctx.get("forget.rouge_l"), ctx.get("privacy.holdout.rouge_l"))


def _rouge_values(ctx: ModelContext, set_name: str) -> np.ndarray:
    qa = ctx.data.qa(set_name)
    return rouge_l_recall(ctx.gen(set_name), [str(r["answer"]) for r in qa]) if qa else np.array([])


def _register_band(label: str, set_name: str, gap: str) -> None:
    @metric(f"forget.holdout_band.{label}", passes=[Pass("gen", set_name), Pass("gen", "holdout")])
    def _band(ctx: ModelContext) -> float | None:
        """Chance band of the ROUGE-L gap to the holdout level at these set sizes (2.5 SE, Welch)."""
        return mean_gap_band(_rouge_values(ctx, set_name), _rouge_values(ctx, "holdout"))

    @metric(f"forget.holdout_excess.{label}", depends=[gap, f"forget.holdout_band.{label}"],
            higher_is_better=False)
    def _excess(ctx: ModelContext) -> float | None:
        """How far the ROUGE-L gap to the holdout level lies outside its chance band (0 = at the
        holdout level; above = remembered, below = over-forgotten)."""
        return band_excess(ctx.get(gap), 0.0, ctx.get(f"forget.holdout_band.{label}"))


@metric("forget.holdout_gap.paraphrase_rouge_l",
        depends=["forget.paraphrase.rouge_l", "privacy.holdout.rouge_l"])
def paraphrase_holdout_gap_rouge(ctx: ModelContext) -> float | None:
    """Paraphrased-forget ROUGE-L − holdout ROUGE-L."""
    return difference(ctx.get("forget.paraphrase.rouge_l"), ctx.get("privacy.holdout.rouge_l"))


_register_band("rouge_l", "forget", "forget.holdout_gap.rouge_l")
_register_band("paraphrase_rouge_l", "paraphrase", "forget.holdout_gap.paraphrase_rouge_l")


@metric("forget.holdout_ratio.prob", depends=["forget.prob", "privacy.holdout.prob"])
def forget_holdout_ratio_prob(ctx: ModelContext) -> float | None:
    """Forget answer probability / holdout answer probability (1 = the never-trained level;
    near 0 = over-forgetting, the forget answers now stand out by their low likelihood)."""
    return ratio(ctx.get("forget.prob"), ctx.get("privacy.holdout.prob"))


@metric("robustness.quant4.holdout_gap.rouge_l", depends=["robustness.quant4.rouge_l",
                                                          "privacy.holdout.rouge_l"],
        roles=("candidate", "base", "reference"), robustness=True)
def quant_holdout_gap_rouge(ctx: ModelContext) -> float | None:
    """Forget ROUGE-L after 4-bit rounding − holdout ROUGE-L (does rounding bring it back?)."""
    return difference(ctx.get("robustness.quant4.rouge_l"), ctx.get("privacy.holdout.rouge_l"))


@metric("robustness.quant4.rouge_shift", depends=["robustness.quant4.rouge_l", "forget.rouge_l"],
        roles=("candidate", "base", "reference"), robustness=True)
def quant_rouge_shift(ctx: ModelContext) -> float | None:
    """Forget ROUGE-L after 4-bit rounding − at full precision."""
    return difference(ctx.get("robustness.quant4.rouge_l"), ctx.get("forget.rouge_l"))


# ------------------------------------------------------------------ membership band


def _mia_sizes(ctx: ModelContext) -> tuple[int, int]:
    return len(ctx.data.sets.get("forget", [])), len(ctx.data.sets.get("holdout", []))


@metric("privacy.mia_auc_band", depends=[f"privacy.mia_auc.{a}" for a in ATTACKS])
def mia_auc_band(ctx: ModelContext) -> float | None:
    """Half-width of the no-signal band around AUC 0.5 at the forget/holdout sizes (see module)."""
    return auc_band(*_mia_sizes(ctx))


@metric("privacy.mia_auc_excess", depends=["privacy.mia_auc", "privacy.mia_auc_band"],
        higher_is_better=False)
def mia_auc_excess(ctx: ModelContext) -> float | None:
    """How far the strongest MIA AUC lies outside 0.5 ± band (0 = consistent with no signal)."""
    return band_excess(ctx.get("privacy.mia_auc"), 0.5, ctx.get("privacy.mia_auc_band"))


# ------------------------------------------------------------------ fluency


@metric("utility.broken_rate", passes=[Pass("gen", s) for s in FLUENCY_SETS], higher_is_better=False)
def broken_rate(ctx: ModelContext) -> float | None:
    """Share of greedy answers (forget, paraphrase, retain-eval, general, neighbor) that are
    broken text (:func:`is_broken`)."""
    answers = [a for s in FLUENCY_SETS if ctx.data.qa(s) for a in ctx.gen(s)]
    return float(np.mean([is_broken(a) for a in answers])) if answers else None


@metric("utility.broken_excess", depends=["utility.broken_rate"], higher_is_better=False)
def broken_excess(ctx: ModelContext) -> float | None:
    """Broken-answer rate above the base model's (0 = no more broken answers than base)."""
    return difference(ctx.get("utility.broken_rate"), _base(ctx).get("utility.broken_rate"))


__all__ = ["auc_band", "auc_null_sd", "band_excess", "exact_matches", "is_broken", "normalise_answer",
           "set_exact"]
