"""Gate policies: YAML thresholds on report metrics → a GateVerdict.

Policy file::

    gates:
      - name: forget-rouge            # optional, defaults to the metric name
        metric: forget.rouge_l        # a reported metric (see metrics.reported_metrics())
        max: 0.3                      # min and/or max
      - metric: utility.model_utility
        min: 0.9
        relative_to: base             # threshold × the base model's value
      - metric: forget.forget_quality
        min: 0.05
        when: reference               # only evaluated when a reference model was given
      - metric: privacy.mia_auc_excess
        max: 0
        required: true                # fail, never skip, when it cannot be computed

A gate whose metric could not be measured fails (a gate never passes silently). A gate whose
``when`` condition is not met, or whose metric was deliberately not run (robustness off), is
*skipped*: shown as "skipped", not "pass", and it does not fail the verdict — unless the gate says
``required: true``, in which case it fails with the reason it could not be computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from unlearnops import storage
from unlearnops.types import GateResult, GateVerdict

from .metrics import reported_metrics

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")
POLICIES_DIR = Path(__file__).with_name("policies")


class PolicyError(ValueError):
    """The policy file is malformed; the message says what to fix."""


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    metric: str
    min: float | None = None
    max: float | None = None
    relative_to: Literal["base", "reference"] | None = None
    when: Literal["reference"] | None = None
    required: bool = False

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        valid = reported_metrics()
        if value not in valid:
            raise ValueError(f"unknown metric {value!r}; valid metrics: {', '.join(valid)}")
        return value

    @model_validator(mode="after")
    def _range(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError(f"gate on {self.metric}: give min and/or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate on {self.metric}: min {self.min} > max {self.max} (inverted range)")
        if not self.name:
            self.name = self.metric
        return self

    def threshold_text(self, scale: float | None) -> str:
        def side(op: str, bound: float) -> str:
            if self.relative_to is None:
                return f"{op} {bound:g}"
            actual = f" = {bound * scale:.4g}" if scale is not None else ""
            return f"{op} {bound:g} × {self.relative_to}{actual}"

        parts = []
        if self.min is not None:
            parts.append(side("≥", self.min))
        if self.max is not None:
            parts.append(side("≤", self.max))
        return " and ".join(parts)


class GatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gates: list[Gate] = Field(min_length=1)

    @classmethod
    def from_yaml(cls, text: str, source: str = "policy") -> GatePolicy:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise PolicyError(f"{source}: not valid YAML ({err})") from err
        if not isinstance(data, dict) or "gates" not in data:
            raise PolicyError(f"{source}: expected a mapping with a 'gates:' list")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in err.errors())
            raise PolicyError(f"{source}: {problems}") from err

    @classmethod
    def load(cls, uri: str | Path) -> GatePolicy:
        """Read a policy from a path or URI, or a bundled name ("default", "lenient", "strict")."""
        text_uri = str(uri)
        if text_uri == "default":
            return cls.from_yaml(DEFAULT_POLICY.read_text(), str(DEFAULT_POLICY))
        bundled = POLICIES_DIR / f"{text_uri}.yaml"
        if "/" not in text_uri and bundled.is_file():
            return cls.from_yaml(bundled.read_text(), str(bundled))
        try:
            text = storage.read_text(text_uri)
        except Exception as err:  # noqa: BLE001 - storage raises several kinds; explain once
            raise PolicyError(f"{text_uri}: cannot read the policy file ({err})") from err
        return cls.from_yaml(text, text_uri)

    @classmethod
    def default(cls) -> GatePolicy:
        return cls.load("default")

    def evaluate(self, candidate: dict[str, float | None], base: dict[str, float | None],
                 reference: dict[str, float | None] | None = None,
                 skipped: dict[str, str] | None = None) -> GateVerdict:
        """Check every gate against the candidate's metrics; ``skipped`` maps metrics deliberately
        not measured (e.g. robustness turned off) to the reason, and their gates are skipped."""
        results = [_check(g, candidate, base, reference, skipped or {}) for g in self.gates]
        return GateVerdict(passed=all(r.passed for r in results), gates=results)


def _check(gate: Gate, candidate: dict[str, Any], base: dict[str, Any],
           reference: dict[str, Any] | None, skipped: dict[str, str]) -> GateResult:
    value = candidate.get(gate.metric)
    why_not = skipped.get(gate.metric)
    if why_not is None and gate.when == "reference" and reference is None:
        why_not = "no reference model given"
    if why_not is not None:
        if gate.required:
            return GateResult(gate=gate.name, metric=gate.metric, value=value,
                              threshold=gate.threshold_text(None), passed=False,
                              reason=f"{gate.name}: required but not computed ({why_not})")
        return GateResult(gate=gate.name, metric=gate.metric, value=value,
                          threshold=gate.threshold_text(None), passed=True, skipped=True,
                          reason=f"{gate.name}: skipped ({why_not})")
    scale: float | None = 1.0
    if gate.relative_to is not None:
        peer = base if gate.relative_to == "base" else (reference or {})
        scale = peer.get(gate.metric)
    threshold = gate.threshold_text(scale)
    if value is None or scale is None:
        missing = "the candidate" if value is None else f"the {gate.relative_to} model"
        return GateResult(gate=gate.name, metric=gate.metric, value=value, threshold=threshold,
                          passed=False, reason=f"{gate.name}: {gate.metric} not measured for {missing}")
    lo = gate.min * scale if gate.min is not None else None
    hi = gate.max * scale if gate.max is not None else None
    if lo is not None and value < lo:
        reason = f"{gate.name}: {gate.metric} = {value:.4g} is below {threshold}"
    elif hi is not None and value > hi:
        reason = f"{gate.name}: {gate.metric} = {value:.4g} is above {threshold}"
    else:
        return GateResult(gate=gate.name, metric=gate.metric, value=value, threshold=threshold,
                          passed=True, reason=f"{gate.name}: {gate.metric} = {value:.4g} within {threshold}")
    return GateResult(gate=gate.name, metric=gate.metric, value=value, threshold=threshold,
                      passed=False, reason=reason)
