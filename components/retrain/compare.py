"""Approximate vs exact: how far the approximately unlearned champion was from the retrained model.

The retrained model is the exact reference for every request it covers (it never saw their
data), so comparing the approximate champion with it measures the error of approximate unlearning
in production, per method (after TOFU's forget quality, Maini et al., 2024):

- **forget quality against the true retrain**: the KS-test p-value of the champion's forget-set
  truth ratios against the retrained model's (the evaluate step's ``forget.forget_quality`` with
  the retrained model as reference; high = indistinguishable);
- **utility difference**: champion − retrained on ``utility.model_utility`` (and the forget-set
  answer probability and ROUGE-L: negative = the champion forgot more than retraining does);
- **answer agreement**: the share of greedy answers identical between the two models, on the
  forget set and on the retain-eval set;
- **cost**: GPU-hours (worker-hours on CPU) and tokens of the retraining against the approximate
  runs it replaces (their training.json), so a team can choose the retraining period.

Writes ``approx-vs-exact.json`` and ``approx-vs-exact.md`` (counts and rates only, no records)
beside the retrained model's evaluation report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from unlearnops import storage
from unlearnops.types import Doc, TrainingRecord

JSON_FILE, MD_FILE = "approx-vs-exact.json", "approx-vs-exact.md"
METRICS = ("forget.prob", "forget.rouge_l", "utility.model_utility", "privacy.mia_auc")


class RunCost(Doc):
    """What one training run cost (from its training.json)."""

    method: str
    tokens: int = 0
    worker_hours: float = 0.0
    gpu_hours: float = 0.0


class ApproxVsExact(Doc):
    """The comparison document (approx-vs-exact.json)."""

    approximate_uri: str
    exact_uri: str
    approximate_method: str = ""
    forget_quality: float | None = Field(None, description="KS p-value, champion vs retrained truth ratios")
    difference: dict[str, float | None] = Field(default_factory=dict, description="champion − retrained")
    approximate: dict[str, float | None] = Field(default_factory=dict)
    exact: dict[str, float | None] = Field(default_factory=dict)
    agreement: dict[str, float | None] = Field(default_factory=dict, description="identical greedy answers")
    answers_compared: dict[str, int] = Field(default_factory=dict)
    retrain_cost: RunCost | None = None
    approximate_costs: list[RunCost] = Field(default_factory=list)


def run_cost(training: TrainingRecord | None) -> RunCost | None:
    """GPU-hours = worker-seconds / 3600 on a GPU device (0 on CPU, where worker-hours tell the cost)."""
    if training is None:
        return None
    hours = float(training.worker_seconds or 0.0) / 3600
    on_gpu = bool(training.device and training.device.startswith("cuda"))
    return RunCost(method=training.method, tokens=int(training.tokens or 0), worker_hours=round(hours, 6),
                   gpu_hours=round(hours if on_gpu else 0.0, 6))


def _answers(model_uri: str, records: Sequence[Mapping[str, Any]], max_new_tokens: int = 32) -> list[str]:
    from unlearnops import modelio
    from unlearnops.serving import generate_texts
    from unlearnops.textformat import prompt_of, template_of

    with modelio.LocalModel(model_uri) as path:
        tokenizer = modelio.load_tokenizer(path)
        tokenizer.padding_side = "left"
        model = modelio.load_model(path).eval()
        template = template_of(tokenizer)
        return generate_texts(model, tokenizer, [prompt_of(r["question"], template) for r in records],
                              max_new_tokens)


def agreement(a_uri: str, b_uri: str, records: Sequence[Mapping[str, Any]]) -> float | None:
    """Share of QA records whose greedy answers from the two models are identical (None: no QA)."""
    qa = [r for r in records if r.get("question")]
    if not qa:
        return None
    a, b = _answers(a_uri, qa), _answers(b_uri, qa)
    return sum(x.strip().lower() == y.strip().lower() for x, y in zip(a, b, strict=True)) / len(qa)


def compare(approximate_uri: str, exact_uri: str, scope_uri: str, out_uri: str,
            approximate_trainings: Sequence[TrainingRecord] = ()) -> ApproxVsExact:
    """Compare the approximate champion with the retrained model on the scope; write the documents."""
    from unlearnops.components.evaluate.evaluate import evaluate_model
    from unlearnops.components.evaluate.metrics import EvalOptions

    from unlearnops import modelio
    from unlearnops.documents import find_training, read_scope_sets

    with tempfile.TemporaryDirectory(prefix="unlearnops-compare-") as tmp:
        report = evaluate_model(approximate_uri, exact_uri, scope_uri, tmp, reference_uri=exact_uri,
                                options=EvalOptions(robustness=False), show_progress=False)
    approx = {k: report.candidate.get(k) for k in METRICS}
    exact = {k: (report.reference or {}).get(k) for k in METRICS}
    sets = read_scope_sets(scope_uri, ["forget", "retain_eval"])
    approx_training = find_training(modelio.resolve(approximate_uri).uri)  # models:/… → its stored copy
    doc = ApproxVsExact(
        approximate_uri=approximate_uri, exact_uri=exact_uri,
        approximate_method=approx_training.method if approx_training else "",
        forget_quality=report.candidate.get("forget.forget_quality"), approximate=approx, exact=exact,
        difference={k: None if approx[k] is None or exact[k] is None else approx[k] - exact[k]  # type: ignore[operator]
                    for k in METRICS},
        agreement={name: agreement(approximate_uri, exact_uri, rows) for name, rows in sets.items()},
        answers_compared={name: sum(1 for r in rows if r.get("question")) for name, rows in sets.items()},
        retrain_cost=run_cost(find_training(modelio.resolve(exact_uri).uri)),
        approximate_costs=[c for c in map(run_cost, approximate_trainings) if c is not None])
    storage.write_text(storage.join(out_uri, JSON_FILE), doc.model_dump_json(indent=2) + "\n")
    storage.write_text(storage.join(out_uri, MD_FILE), render(doc))
    return doc


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def render(doc: ApproxVsExact) -> str:
    """The report section (Markdown)."""
    lines = ["## Approximate vs exact (retrained) unlearning", "",
             f"Approximate champion ({doc.approximate_method or 'unknown method'}) against the model "
             "retrained without the erased data — the exact reference for every covered request.", "",
             f"- forget quality against the true retrain (KS p-value): {_fmt(doc.forget_quality)}",
             *(f"- answer agreement on {k} ({doc.answers_compared.get(k, 0)} answers): {_fmt(v)}"
               for k, v in doc.agreement.items()), "",
             "| metric | approximate | retrained | difference |", "|---|---|---|---|",
             *(f"| {k} | {_fmt(doc.approximate.get(k))} | {_fmt(doc.exact.get(k))} | "
               f"{_fmt(doc.difference.get(k))} |" for k in METRICS), ""]
    costs = [("retraining", doc.retrain_cost)] if doc.retrain_cost else []
    costs += [(f"approximate run {i + 1}", c) for i, c in enumerate(doc.approximate_costs)]
    if costs:
        lines += ["| run | method | tokens | worker-hours | GPU-hours |", "|---|---|---|---|---|",
                  *(f"| {name} | {c.method} | {c.tokens} | {c.worker_hours:.4g} | {c.gpu_hours:.4g} |"
                    for name, c in costs)]
        approx_tokens = sum(c.tokens for c in doc.approximate_costs)
        if doc.retrain_cost and approx_tokens:
            lines += ["", f"Retraining cost {doc.retrain_cost.tokens / approx_tokens:.3g}× the tokens of the "
                          f"{len(doc.approximate_costs)} approximate run(s) it replaces."]
    return "\n".join(lines) + "\n"
