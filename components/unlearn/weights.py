"""Which weights move: a regex selection over parameter names, and LoRA adapters (peft).

``select_trainable(model, ["mlp"])`` trains only parameters whose names match a pattern
(``re.search``) and freezes the rest; ``apply_lora`` wraps the model with peft adapters
(base weights frozen) and ``merge_lora`` folds them back into a plain model for saving.
"""

from __future__ import annotations

import re
from typing import Any

from unlearnops.types import LoraSpec

from .methods.base import MethodError


class WeightSelectionError(MethodError):
    """A trainable pattern or LoRA target that matches nothing in the model."""


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _sample(names: list[str], k: int = 12) -> str:
    more = f" … ({len(names)} in all)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def select_trainable(model: Any, patterns: list[str]) -> list[str]:
    """Train the parameters whose names match any regex in ``patterns``; freeze the others.

    ``[]`` trains everything (on a peft model: every adapter weight, as peft chose). Returns the
    names of the trained parameters; raises :class:`WeightSelectionError` (showing some
    parameter names) when a pattern is invalid or nothing matches.
    """
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    if not patterns:
        if not _is_peft(model):
            for _, param in named:
                param.requires_grad_(True)
        return [n for n, p in named if p.requires_grad]
    try:
        regexes = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise WeightSelectionError(f"bad trainable pattern: {exc}") from None
    chosen = [n for n in names if any(r.search(n) for r in regexes)]
    if not chosen:
        raise WeightSelectionError(
            f"trainable patterns {patterns} match no parameter; parameter names look like: {_sample(names)}"
        )
    keep = set(chosen)
    for name, param in named:
        param.requires_grad_(name in keep)
    return chosen


def apply_lora(model: Any, spec: LoraSpec) -> Any:
    """Wrap ``model`` with LoRA adapters (peft ``LoraConfig`` + ``get_peft_model``)."""
    from peft import LoraConfig, get_peft_model

    modules = [n for n, _ in model.named_modules() if n]
    leaf = {n.rsplit(".", 1)[-1] for n in modules}
    missing = [t for t in spec.target_modules if t not in leaf and t not in modules]
    if missing:
        raise WeightSelectionError(
            f"LoRA target modules {missing} are not in the model; module names end with: "
            f"{_sample(sorted(leaf), 20)}"
        )
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_lora(model: Any) -> Any:
    """Fold LoRA adapters into the base weights and return the plain model (no-op otherwise)."""
    if _is_peft(model):
        return model.merge_and_unload()
    return model
