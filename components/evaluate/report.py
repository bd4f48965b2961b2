"""report.md (tables per facet, the gate table) and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from unlearnops.types import EvalReport, GateVerdict  # noqa: E402

from .metrics import REGISTRY, ModelContext  # noqa: E402
from .metrics.privacy import ATTACKS, attack_scores, roc  # noqa: E402

FACETS = ("forget", "utility", "privacy", "robustness", "cost")


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4f}"


def facet_rows(report: EvalReport, facet: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for name in sorted(n for n in report.candidate if n.split(".")[0] == facet):
        cand, base = report.candidate.get(name), report.base.get(name)
        ref = report.reference.get(name) if report.reference else None
        delta = cand - base if cand is not None and base is not None else None
        rows.append((name, fmt(base), fmt(cand), fmt(ref), fmt(delta)))
    return rows


def gate_rows(verdict: GateVerdict) -> list[tuple[str, str, str, str, str]]:
    return [(g.gate, g.metric, fmt(g.value), g.threshold, g.status) for g in verdict.gates]


def markdown(report: EvalReport) -> str:
    lines = ["# Evaluation report\n",
             f"- candidate: `{report.model_uri}`", f"- base: `{report.base_uri}`",
             f"- reference: `{report.reference_uri or '—'}`", f"- scope: `{report.scope_uri}` "
             f"(sha256 `{report.scope_sha256[:16]}…`)",
             "- sets: " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items())),
             f"- device: {report.device}; seconds: "
             + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()), ""]
    if report.verdict is not None:
        lines += [f"## Gates: {'PASSED' if report.verdict.passed else 'FAILED'}\n",
                  "| gate | metric | value | threshold | result |", "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(r)} |" for r in gate_rows(report.verdict)]
        failed = report.verdict.reasons
        if failed:
            lines += ["", *[f"- {r}" for r in failed]]
        lines.append("")
    for facet in FACETS:
        rows = facet_rows(report, facet)
        if not rows:
            continue
        lines += [f"## {facet.capitalize()}\n", "| metric | base | candidate | reference | Δ vs base |",
                  "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(r)} |" for r in rows]
        lines.append("")
    if report.plots:
        lines += ["## Plots\n", *[f"![{p}]({p})" for p in report.plots], ""]
    if report.notes:
        lines += ["## Notes\n", *[f"- {n}" for n in report.notes], ""]
    return "\n".join(lines)


def _bar_chart(report: EvalReport, facet: str, file: Path) -> bool:
    names = [n for n in sorted(report.candidate) if n.split(".")[0] == facet
             and not n.startswith("cost.") and report.candidate.get(n) is not None]
    if not names:
        return False
    series = [("base", report.base), ("candidate", report.candidate)]
    if report.reference:
        series.append(("reference", report.reference))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4))
    for k, (label, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [values.get(n) or 0.0 for n in names], width, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.split(".", 1)[1] for n in names], rotation=35, ha="right", fontsize=8)
    ax.set_title(f"{facet}: before / after")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=90)
    plt.close(fig)
    return True


def _roc_chart(contexts: dict[str, ModelContext], file: Path) -> bool:
    data = next(iter(contexts.values())).data
    if not data.sets.get("forget") or not data.sets.get("holdout"):
        return False
    fig, axes = plt.subplots(1, len(ATTACKS), figsize=(4 * len(ATTACKS), 4))
    for ax, attack in zip(axes, ATTACKS, strict=True):
        for role, ctx in contexts.items():
            fpr, tpr = roc(attack_scores(ctx, "forget", attack), attack_scores(ctx, "holdout", attack))
            auc = ctx.get(f"privacy.mia_auc.{attack}")
            ax.plot(fpr, tpr, label=f"{role} (AUC {auc:.2f})" if auc is not None else role)
        ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        ax.set_title(f"MIA {attack}: forget vs holdout", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(file, dpi=90)
    plt.close(fig)
    return True


def answer_rows(contexts: dict[str, ModelContext], n: int) -> list[list[str]]:
    """The first ``n`` forget questions' greedy answers, one column per model (base, reference,
    candidate): record id, then each model's answer. Holds personal data — opt-in only."""
    roles = [r for r in ("base", "reference", "candidate") if r in contexts]
    any_ctx = contexts[roles[0]]
    qa = any_ctx.data.qa("forget")[:n]
    answers = {r: contexts[r].gen("forget")[:n] for r in roles}
    return [[str(rec.get("id", i)), *(answers[r][i].replace("|", "/") or "(empty)" for r in roles)]
            for i, rec in enumerate(qa)]


def answers_markdown(contexts: dict[str, ModelContext], n: int) -> list[str]:
    roles = [r for r in ("base", "reference", "candidate") if r in contexts]
    return ["## Forget answers side by side\n",
            "Greedy answers to forget-set questions (shown because the evaluation was asked to; they "
            "hold personal data — keep this report with the run's working data, not as evidence).\n",
            "| record | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|",
            *[f"| {' | '.join(row)} |" for row in answer_rows(contexts, n)], ""]


def write_report(report: EvalReport, contexts: dict[str, ModelContext], folder: Path,
                 answer_examples: int = 0) -> EvalReport:
    """Write plots/*.png and report.md into ``folder``; return the report with its plot list.
    ``answer_examples`` > 0 adds that many forget answers side by side (personal data: opt-in)."""
    plots_dir = folder / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    for facet in FACETS:
        if _bar_chart(report, facet, plots_dir / f"{facet}.png"):
            plots.append(f"plots/{facet}.png")
    if _roc_chart(contexts, plots_dir / "mia_roc.png"):
        plots.append("plots/mia_roc.png")
    report = report.model_copy(update={"plots": plots})
    extra = answers_markdown(contexts, answer_examples) if answer_examples > 0 else []
    (folder / "report.md").write_text(markdown(report) + "\n".join(extra))
    return report


__all__ = ["REGISTRY", "answer_rows", "markdown", "write_report", "gate_rows", "fmt"]
