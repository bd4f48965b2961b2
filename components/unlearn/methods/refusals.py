"""The project's own refusal answers, for the ``idk`` and ``idk_dpo`` objectives.

An "I don't know" target teaches the model to decline forget questions instead of answering
them (TOFU's IDK baseline, Maini et al., 2024). The choice of refusal per record is a stable
hash of its id and position, so every worker and every run builds the same ``forget_idk`` view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

REFUSALS: tuple[str, ...] = (
    "I don't know.",
    "I have no information about that.",
    "I'm not sure.",
    "I can't answer that.",
    "That is not something I know.",
    "I do not have that information.",
    "I'm unable to say.",
    "I have no record of that.",
    "I don't have any details on that.",
    "Sorry, I don't know the answer.",
    "I cannot help with that question.",
    "I am not aware of that.",
    "I have no knowledge of that.",
    "That is unknown to me.",
    "I can't recall anything about that.",
    "I'm afraid I don't know.",
    "No information is available to me on that.",
    "I have nothing to say about that.",
    "I couldn't tell you.",
    "I don't have an answer to that.",
)


def refusal_for(key: str) -> str:
    """A deterministic refusal for ``key`` (sha-256 based; independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return REFUSALS[int.from_bytes(digest[:8], "big") % len(REFUSALS)]


def idk_record(record: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The same record with ``answer`` replaced by a refusal picked from its id and ``index``.

    A text record (no question) becomes a QA record whose question is the first half of its
    words and whose answer is the refusal, so the IDK view never trains on forget text itself.
    """
    out = dict(record)
    if out.get("question") is None and out.get("text") is not None:
        words = str(out.pop("text")).split()
        out["question"] = " ".join(words[: max(1, len(words) // 2)])
        out["kind"] = "qa"
    out["answer"] = refusal_for(f"{record.get('id', '')}#{index}")
    return out
