"""Calibrated stopping: unlearn *to the holdout level*, not to zero.

A model that never saw a person answers questions about them the way it answers about the
scope's holdout people (never trained). So the target of unlearning is the holdout level: the
base model's mean length-normalised answer probability on the holdout QA records, p_h. Stopping
rule: stop at the first probe whose forget probability is within [``FLOOR``, ``band``] × p_h while the
retain probe keeps ``retain_ratio`` × its starting value; a run that never gets there keeps the probe
closest to that band that keeps the retain side (:func:`.probes.better`). Running on past that
point drives the forget set below never-trained people — over-forgetting, itself a membership
signal — and costs utility. The holdout records are only scored here, never trained on.
"""

from __future__ import annotations

from typing import Any

from unlearnops import modelio
from unlearnops.textformat import encode_record

from . import probes

#: Stop once forget probability ≤ BAND × the holdout level (a band, not a point: probes are coarse).
BAND = 2.0
#: ... and not below FLOOR × the holdout level (over-forgetting; the default policy's floor is 0.2 x).
FLOOR = 0.25
#: ... while the retain probe keeps this share of its starting probability.
RETAIN_RATIO = 0.9


def holdout_level(scope_uri: str, model_uri: str, device: str = "cpu") -> float | None:
    """Mean length-normalised answer probability of ``model_uri`` on the scope's holdout QA
    records (None when the scope has no holdout QA)."""
    from unlearnops.components.scope.resolve import read_set

    qa = [r for r in read_set(scope_uri, "holdout") if r.get("question") is not None and r.get("answer")]
    return _level(model_uri, qa, device) if qa else None


def calibrated_stop_when(scope_uri: str, model_uri: str, *, band: float = BAND,
                         retain_ratio: float = RETAIN_RATIO, device: str = "cpu") -> dict[str, Any] | None:
    """The ``stop_when`` of calibrated stopping for this scope and base model (None without a
    holdout set: then the run trains its configured steps)."""
    return calibration(scope_uri, model_uri, band=band, retain_ratio=retain_ratio, device=device)["stop_when"]


def calibration(scope_uri: str, model_uri: str, *, band: float = BAND, retain_ratio: float = RETAIN_RATIO,
                device: str = "cpu") -> dict[str, Any]:
    """Holdout level, the model's level on the forget set, and the calibrated ``stop_when`` —
    None (with the reason) when there is no holdout set or the model is already at the holdout
    level on the forget set (nothing to calibrate: the configured steps run)."""
    from unlearnops.components.scope.resolve import read_set

    level = holdout_level(scope_uri, model_uri, device)
    if level is None:
        return {"stop_when": None, "reason": "no holdout QA in the scope: the configured steps run"}
    forget = [r for r in read_set(scope_uri, "forget") if r.get("question") is not None and r.get("answer")]
    forget_level = _level(model_uri, forget, device) if forget else None
    out: dict[str, Any] = {"holdout_level": level, "forget_level": forget_level, "band": band}
    if forget_level is not None and forget_level <= band * level:
        return {**out, "stop_when": None,
                "reason": "the model is already at the holdout level on the forget set: "
                          "the configured steps run"}
    return {**out, "stop_when": {"forget_prob_max": band * level, "forget_prob_min": FLOOR * level,
                                 "retain_prob_min_ratio": retain_ratio},
            "reason": f"stop once forget probability is within [{FLOOR:g}, {band:g}] x the holdout level "
                      f"{level:.4g} with the retain probe >= {retain_ratio:g} x its start"}


def _level(model_uri: str, records: list[dict[str, Any]], device: str) -> float:
    with modelio.LocalModel(model_uri) as path:
        model, tok = modelio.load_model(path, device), modelio.load_tokenizer(path)
    examples = [encode_record(tok, r) for r in records]
    return probes.answer_scores(model, examples, tok.pad_token_id, device)["prob"]
