"""Gate policies: parsing with clear errors, and verdicts (absolute, relative, conditional, skipped)."""

from __future__ import annotations

from pathlib import Path

import pytest
from unlearnops.components.evaluate.gates import GatePolicy, PolicyError


def test_bundled_policies_load() -> None:
    for name in ("default", "lenient", "strict"):
        policy = GatePolicy.load(name)
        assert policy.gates and all(g.name for g in policy.gates)


def test_unknown_metric_lists_valid_names() -> None:
    with pytest.raises(PolicyError) as err:
        GatePolicy.from_yaml("gates:\n  - metric: forget.rougel\n    max: 0.3\n")
    assert "unknown metric 'forget.rougel'" in str(err.value)
    assert "forget.rouge_l" in str(err.value) and "utility.model_utility" in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ("gates:\n  - metric: forget.rouge_l\n    min: 0.5\n    max: 0.3\n", "inverted range"),
    ("gates:\n  - metric: forget.rouge_l\n", "give min and/or max"),
    ("gates: []\n", "at least 1"),
    ("gate:\n  - metric: forget.rouge_l\n", "expected a mapping with a 'gates:' list"),
    ("gates: [\n", "not valid YAML"),
    ("gates:\n  - metric: forget.rouge_l\n    max: 0.3\n    relative_to: champion\n", "relative_to"),
    ("gates:\n  - metric: forget.rouge_l\n    max: 0.3\n    colour: red\n", "colour"),
    ("gates:\n  - metric: forget.rouge_l\n    max: high\n", "max"),
])
def test_bad_policies(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        GatePolicy.from_yaml(text, "bad.yaml")


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        GatePolicy.load(tmp_path / "missing.yaml")
    (tmp_path / "p.yaml").write_text("gates:\n  - metric: forget.prob\n    max: 0.2\n")
    assert GatePolicy.load(tmp_path / "p.yaml").gates[0].name == "forget.prob"


POLICY = """
gates:
  - name: rouge
    metric: forget.rouge_l
    max: 0.3
  - name: utility
    metric: utility.model_utility
    min: 0.9
    relative_to: base
  - name: mia
    metric: privacy.mia_auc
    min: 0.4
    max: 0.6
  - name: fq
    metric: forget.forget_quality
    min: 0.05
    when: reference
  - name: relearn
    metric: robustness.relearn_recovery
    max: 0.5
"""


def test_verdict_values_thresholds_reasons() -> None:
    policy = GatePolicy.from_yaml(POLICY)
    cand = {"forget.rouge_l": 0.35, "utility.model_utility": 0.85, "privacy.mia_auc": 0.5,
            "forget.forget_quality": 0.01, "robustness.relearn_recovery": None}
    base = {"utility.model_utility": 0.9}
    verdict = policy.evaluate(cand, base, None)
    by = {g.gate: g for g in verdict.gates}
    assert not verdict.passed
    assert not by["rouge"].passed and by["rouge"].reason == "rouge: forget.rouge_l = 0.35 is above ≤ 0.3"
    # relative: 0.85 >= 0.9 × 0.9 = 0.81
    assert by["utility"].passed and by["utility"].threshold == "≥ 0.9 × base = 0.81"
    assert by["mia"].passed and by["mia"].threshold == "≥ 0.4 and ≤ 0.6"
    assert by["fq"].passed and "skipped" in by["fq"].reason  # no reference model
    assert not by["relearn"].passed and "not measured" in by["relearn"].reason
    assert verdict.reasons == [by["rouge"].reason, by["relearn"].reason]


def test_verdict_with_reference_and_skips() -> None:
    policy = GatePolicy.from_yaml(POLICY)
    cand = {"forget.rouge_l": 0.1, "utility.model_utility": 0.7, "privacy.mia_auc": 0.3,
            "forget.forget_quality": 0.2, "robustness.relearn_recovery": None}
    verdict = policy.evaluate(cand, {"utility.model_utility": 0.9}, {"forget.forget_quality": None},
                              skipped={"robustness.relearn_recovery": "robustness not run"})
    by = {g.gate: g for g in verdict.gates}
    assert by["fq"].passed and by["fq"].value == 0.2
    assert not by["utility"].passed and "below ≥ 0.9 × base = 0.81" in by["utility"].reason
    assert not by["mia"].passed and "below" in by["mia"].reason
    assert by["relearn"].passed and "skipped (robustness not run)" in by["relearn"].reason


def test_relative_gate_without_base_value_fails() -> None:
    policy = GatePolicy.from_yaml("gates:\n  - metric: utility.model_utility\n    min: 0.9\n"
                                  "    relative_to: base\n")
    verdict = policy.evaluate({"utility.model_utility": 0.8}, {}, None)
    assert not verdict.passed and "not measured for the base model" in verdict.gates[0].reason


def test_skipped_gate_shows_skipped_and_required_gate_fails() -> None:
    policy = GatePolicy.from_yaml(
        "gates:\n"
        "  - {name: fq, metric: forget.forget_quality, min: 0.05, when: reference}\n"
        "  - {name: relearn, metric: robustness.relearn_recovery, max: 0.3}\n"
        "  - {name: mia, metric: privacy.mia_auc_excess, max: 0, required: true}\n")
    verdict = policy.evaluate({"forget.forget_quality": 0.5, "privacy.mia_auc_excess": None}, {}, None,
                              skipped={"robustness.relearn_recovery": "robustness not run",
                                       "privacy.mia_auc_excess": "no holdout set"})
    by = {g.gate: g for g in verdict.gates}
    # not checked: shown as skipped (never as pass), and it does not fail the verdict by itself
    assert by["fq"].status == by["relearn"].status == "skipped" and by["fq"].passed
    assert by["fq"].reason == "fq: skipped (no reference model given)"
    # required: a gate that cannot be computed fails, with the reason
    assert by["mia"].status == "FAIL"
    assert by["mia"].reason == "mia: required but not computed (no holdout set)"
    assert not verdict.passed and verdict.reasons == [by["mia"].reason]
    required_ref = GatePolicy.from_yaml("gates:\n  - {metric: forget.forget_quality, min: 0.05, "
                                        "when: reference, required: true}\n")
    assert not required_ref.evaluate({"forget.forget_quality": 0.5}, {}, None).passed
    assert required_ref.evaluate({"forget.forget_quality": 0.5}, {}, {}).gates[0].status == "pass"


def test_report_and_cli_tables_show_skipped() -> None:
    from unlearnops.components.evaluate.cli import gate_table
    from unlearnops.components.evaluate.report import gate_rows

    policy = GatePolicy.from_yaml("gates:\n  - {name: fq, metric: forget.forget_quality, min: 0.05, "
                                  "when: reference}\n  - {name: r, metric: forget.rouge_l, max: 0.3}\n")
    verdict = policy.evaluate({"forget.forget_quality": 0.5, "forget.rouge_l": 0.4}, {}, None)
    assert [row[-1] for row in gate_rows(verdict)] == ["skipped", "FAIL"]
    cells = [str(c) for col in gate_table(verdict).columns for c in col._cells]
    assert "[yellow]skipped[/]" in cells and "[green]pass[/]" not in cells


def test_default_policy_asks_for_honest_forgetting() -> None:
    """Holdout-level forgetting, chance-level MIA, held-out utility and answers, fluency, robustness."""
    gates = {g.metric: g for g in GatePolicy.default().gates}
    assert gates["forget.holdout_excess.rouge_l"].required  # not at zero: at the holdout level
    assert gates["forget.holdout_ratio.prob"].min and gates["forget.holdout_ratio.prob"].required
    assert gates["privacy.mia_auc_excess"].required
    for metric in ("utility.retention.retain", "utility.retention.neighbor", "utility.neighbor_retention"):
        assert gates[metric].min == 0.9
    assert gates["utility.model_utility"].relative_to == "base" and gates["utility.model_utility"].min == 0.9
    assert {"utility.broken_excess", "robustness.relearn_recovery",
            "robustness.quant4.rouge_shift"} <= set(gates)
