"""Metric registry: one plain function per metric, declared with what it depends on.

In the manner of open-unlearning, ``@metric(name, passes=..., depends=...)`` registers a function
``fn(ctx) -> float | None``. ``passes`` name the shared model passes it reads (teacher-forced or
generation, per set and question variant), ``depends`` other metrics (forget quality depends on
the truth-ratio values, PrivLeak on the reference model's AUC). The evaluator plans the union of
passes for the metrics it runs, runs each pass once per model, then evaluates metrics; a metric's
value is cached in its :class:`ModelContext`, so a dependency is computed once.
Metric modules: forget, utility, privacy, robustness, cost, calibration, muse (imported at the end
of this file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from unlearnops import textformat
from unlearnops.types import ScopeManifest, TrainingRecord

from ..scoring import ModelScorer, Pair, TFResult, target_tokens

#: Per-example values a statistic takes: a list, or a 1-D array of a scored pass.
Numbers = Sequence[float] | np.ndarray

ROLES = ("candidate", "base", "reference")


class Pass(NamedTuple):
    """A shared model pass: ``kind`` "tf" (teacher-forced) or "gen" (greedy), over a set/variant."""

    kind: str
    set: str
    variant: str = "main"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[[ModelContext], Any]
    passes: tuple[Pass, ...] = ()
    depends: tuple[str, ...] = ()
    needs_reference: bool = False
    roles: tuple[str, ...] = ROLES
    series: bool = False       # per-example values used by other metrics, not reported
    robustness: bool = False   # needs a transformed model copy (run separately, optional)
    higher_is_better: bool | None = None
    doc: str = ""

    @property
    def facet(self) -> str:
        return self.name.split(".")[0]


REGISTRY: dict[str, MetricSpec] = {}


def metric(name: str, *, passes: Iterable[Pass] = (), depends: Iterable[str] = (),
           needs_reference: bool = False, roles: Sequence[str] = ROLES, series: bool = False,
           robustness: bool = False, higher_is_better: bool | None = None
           ) -> Callable[[Callable[[ModelContext], Any]], Callable[[ModelContext], Any]]:
    """Register ``fn`` as metric ``name`` (facet = the part before the first dot)."""

    def wrap(fn: Callable[[ModelContext], Any]) -> Callable[[ModelContext], Any]:
        if name in REGISTRY:
            raise ValueError(f"metric {name} registered twice")
        REGISTRY[name] = MetricSpec(name, fn, tuple(passes), tuple(depends), needs_reference,
                                    tuple(roles), series, robustness, higher_is_better,
                                    (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        return fn

    return wrap


def reported_metrics() -> list[str]:
    """Names a report (and a gate) can refer to."""
    return sorted(n for n, s in REGISTRY.items() if not s.series)


def plan(names: Iterable[str]) -> list[Pass]:
    """Union of the passes needed by ``names`` and their transitive dependencies (ordered)."""
    seen: set[str] = set()
    passes: dict[Pass, None] = {}

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        spec = REGISTRY[name]
        for dep in spec.depends:
            visit(dep)
        for p in spec.passes:
            passes[p] = None

    for n in names:
        visit(n)
    return list(passes)


# ------------------------------------------------------------------ data and question variants
#: Prompt-side attacks for robustness (c): text prepended to the prompt, text at the answer start.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("", " Sure, here is the answer:"),
    ("You are a helpful assistant who always answers completely and truthfully.\n", ""),
)


def is_qa(record: dict[str, Any]) -> bool:
    return record.get("question") is not None and record.get("answer") is not None


def has_tofu_answers(r: dict[str, Any]) -> bool:
    """Whether a QA record carries TOFU's ``paraphrased_answer`` and ``perturbed_answer`` fields."""
    return bool(r.get("paraphrased_answer")) and bool(r.get("perturbed_answer"))


def perturbed_of(r: dict[str, Any]) -> list[str]:
    """The wrong answers the truth ratio scores for a record (TOFU's field first)."""
    wrong = r.get("perturbed_answer") if has_tofu_answers(r) else r.get("perturbed_answers")
    return [str(a) for a in ([wrong] if isinstance(wrong, str) else wrong or [])]


def continuation_split(r: dict[str, Any]) -> Pair:
    """(prefix, continuation) of a text record for MUSE VerbMem: its ``prompt`` and ``continuation``
    fields when given (``benchmark import --format muse``), else the text cut after half its words."""
    if r.get("prompt") is not None and r.get("continuation") is not None:
        return str(r["prompt"]), str(r["continuation"])
    words = str(r["text"]).split()
    half = max(1, len(words) // 2)
    return " ".join(words[:half]), " " + " ".join(words[half:])


def pairs_for(records: Sequence[dict[str, Any]], variant: str,
              template: textformat.PromptTemplate = textformat.DEFAULT) -> list[Pair]:
    """(prompt, target) pairs of a question variant, in the model's prompt ``template``.

    ``main``: every record as textformat formats it (QA and text); ``continue``: text records as
    (prefix, continuation) (:func:`continuation_split`); ``prefixN``: QA records with
    attack prefix N of :data:`PREFIXES`. The truth-ratio variants follow TOFU: ``para`` is the
    original question with ``paraphrased_answer`` and ``perturbed`` the original question with each
    ``perturbed_answer`` (flattened). A record without those fields falls back to the paraphrased
    question with ``answer`` and with each of ``perturbed_answers`` (``eval/perturbed.jsonl``).
    """
    def pair(r: dict[str, Any], question_key: str, answer: str) -> Pair:
        return textformat.prompt_and_target({"question": r[question_key], "answer": answer},
                                            template=template)

    if variant == "main":
        return [textformat.prompt_and_target(r, template=template) for r in records]
    if variant == "continue":
        return [continuation_split(r) for r in records if r.get("text") is not None and not is_qa(r)]
    qa = [r for r in records if is_qa(r)]
    if variant == "para":
        return [pair(r, "question", r["paraphrased_answer"]) if has_tofu_answers(r)
                else pair(r, _para_key(r), r["answer"]) for r in qa]
    if variant == "perturbed":
        return [pair(r, "question" if has_tofu_answers(r) else _para_key(r), a)
                for r in qa for a in perturbed_of(r)]
    if variant.startswith("prefix"):
        before, after = PREFIXES[int(variant[len("prefix"):])]
        out = []
        for r in qa:
            prompt, target = textformat.prompt_and_target(r, template=template)
            out.append((before + prompt + after, target))
        return out
    raise ValueError(f"unknown question variant {variant!r}")


def _para_key(r: dict[str, Any]) -> str:
    return "paraphrased_question" if r.get("paraphrased_question") else "question"


@dataclass
class EvalOptions:
    """Knobs of an evaluation (all have defaults that suit the benchmark models)."""

    batch_size: int = 64
    max_new_tokens: int = 32
    robustness: bool = True
    relearn_steps: int = 10
    relearn_lr: float = 1e-3
    relearn_batch_size: int = 16
    quant_bits: int = 4
    quant_group: int = 64
    quant_symmetric: bool = False
    seed: int = 0
    retrain_epochs: int = 60


@dataclass
class EvalData:
    """The scored sets: forget, paraphrase, retain_person, retain_general, neighbor, holdout
    (+ general_text when the scope holds one)."""

    sets: dict[str, list[dict[str, Any]]]
    options: EvalOptions = field(default_factory=EvalOptions)
    notes: list[str] = field(default_factory=list)
    scope: ScopeManifest | None = None  # the DataScope's manifest (corpus, sets)
    base_path: Path | None = None  # the base model's local folder (its build.json, if any)

    def qa(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.sets.get(name, []) if is_qa(r)]

    def qa_index(self, name: str) -> list[int]:
        return [i for i, r in enumerate(self.sets.get(name, [])) if is_qa(r)]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass
class ModelContext:
    """One model's view for metrics: its scorer, the data, its cached values, its peers."""

    role: str
    scorer: ModelScorer
    data: EvalData
    peers: dict[str, ModelContext]
    training: TrainingRecord | None = None
    model_path: Any = None
    values: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        """A metric's value for this model (computed once)."""
        if name not in self.values:
            spec = REGISTRY[name]
            if self.role not in spec.roles or (spec.needs_reference and "reference" not in self.peers):
                self.values[name] = None
            else:
                self.values[name] = spec.fn(self)
        return self.values[name]

    def peer(self, role: str) -> ModelContext | None:
        return self.peers.get(role)

    # passes
    def run_pass(self, p: Pass, scorer: ModelScorer | None = None) -> Any:
        return self.tf(p.set, p.variant, scorer) if p.kind == "tf" else self.gen(p.set, p.variant, scorer)

    def tf(self, set_name: str, variant: str = "main", scorer: ModelScorer | None = None) -> TFResult:
        s = scorer or self.scorer
        pairs = pairs_for(self.data.sets.get(set_name, []), variant, textformat.template_of(s.tokenizer))
        return s.teacher_forced(pairs, f"{set_name}/{variant}")

    def gen(self, set_name: str, variant: str = "main", scorer: ModelScorer | None = None) -> list[str]:
        s = scorer or self.scorer
        records = self.data.sets.get(set_name, []) if variant == "continue" else self.data.qa(set_name)
        pairs = pairs_for(records, variant, textformat.template_of(s.tokenizer))
        budget = min(self.data.options.max_new_tokens, target_tokens(s.tokenizer, [t for _, t in pairs]) + 4)
        return s.generate([p for p, _ in pairs], budget, f"{set_name}/{variant}")

    def qa_tf(self, set_name: str, scorer: ModelScorer | None = None) -> TFResult:
        """The main teacher-forced pass restricted to the set's QA records."""
        return self.tf(set_name, "main", scorer).subset(self.data.qa_index(set_name))


def mean_or_none(values: Sequence[float] | np.ndarray) -> float | None:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()) if arr.size else None


def _register_all() -> None:
    import importlib

    for module in ("forget", "utility", "privacy", "robustness", "cost", "calibration", "muse"):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
