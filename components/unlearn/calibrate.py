"""Calibrated stopping: unlearn *to the holdout level*, not to zero (issue 10, DESIGN.md).

A model that never saw a person answers questions about them the way it answers about the
scope's holdout people (never trained). So the target of unlearning is the holdout level: the
base model's mean length-normalised answer probability on the holdout QA records, p_h. Stopping
rule: stop at the first probe whose forget probability is at most ``band`` × p_h while the retain
probe keeps ``retain_ratio`` × its starting value. Running on past that point drives the forget
set below never-trained people — over-forgetting, itself a membership signal — and costs utility.
The holdout records are only scored here, never trained on.
"""

from __future__ import annotations

from typing import Any

from unlearnops import modelio
from unlearnops.textformat import encode_record

from . import probes

#: Stop once forget probability ≤ BAND × the holdout level (a band, not a point: probes are coarse).
BAND = 2.0
#: ... while the retain probe keeps this share of its starting probability.
RETAIN_RATIO = 0.9


def holdout_level(scope_uri: str, model_uri: str, device: str = "cpu") -> float | None:
    """Mean length-normalised answer probability of ``model_uri`` on the scope's holdout QA
    records (None when the scope has no holdout QA)."""
    from unlearnops.components.scope.resolve import read_set

    qa = [r for r in read_set(scope_uri, "holdout") if r.get("question") is not None and r.get("answer")]
    if not qa:
        return None
    with modelio.LocalModel(model_uri) as path:
        model, tok = modelio.load_model(path, device), modelio.load_tokenizer(path)
    examples = [encode_record(tok, r) for r in qa]
    return probes.answer_scores(model, examples, tok.pad_token_id, device)["prob"]


def calibrated_stop_when(scope_uri: str, model_uri: str, *, band: float = BAND,
                         retain_ratio: float = RETAIN_RATIO, device: str = "cpu") -> dict[str, Any] | None:
    """The ``stop_when`` of calibrated stopping for this scope and base model (None without a
    holdout set: then the run trains its configured steps)."""
    level = holdout_level(scope_uri, model_uri, device)
    if level is None:
        return None
    return {"forget_prob_max": band * level, "retain_prob_min_ratio": retain_ratio}
