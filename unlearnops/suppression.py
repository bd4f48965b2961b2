"""The suppression list: keyed hashes of erased records, consulted by every later data reader.

When a run completes requests, their selector hashes and the keyed hashes (HMAC-SHA256,
:mod:`unlearnops.keyed_hash`) of every forget record's id and content digest are stored as one
entry ``STORAGE/suppression/<entry>.json`` (one file per run: concurrent runs never overwrite
each other). :class:`SuppressionList` is the union of the entries; a record is suppressed when
the keyed hash of its id, its content digest or one of its subject ids is on the list. Scope
resolution keeps suppressed records out of the retain, neighbor and holdout sets, and
``unlearnops corpus redact`` writes the corpus shards again without them, so an erased record
is never trained on again — not even as retain data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import Field

from . import storage
from .keyed_hash import installation_secret, keyed_hash, keyed_hashes, request_tokens
from .settings import get_settings
from .types import Doc, utcnow

__all__ = ["SuppressionList", "add_entry", "content_sha256", "keyed_hashes", "record_keys", "unsuppressed"]

R = TypeVar("R", bound=Mapping[str, Any])


def content_sha256(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a record's content: ``text``, else ``question + "\\n" + answer`` (UTF-8)."""
    if record.get("text") is not None:
        content = str(record["text"])
    else:
        content = f"{record.get('question', '')}\n{record.get('answer', '')}"
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def record_keys(record: Mapping[str, Any]) -> list[str]:
    """The values of a record that the list can name: id, content digest, subject ids."""
    keys = [str(record["id"])] if record.get("id") is not None else []
    keys.append(content_sha256(record))
    subjects = record.get("subject_ids") or ([record["subject_id"]] if record.get("subject_id") else [])
    return keys + [str(s) for s in subjects]


class SuppressionEntry(Doc):
    """One run's contribution: the requests' selector hashes and the forget records' hashes."""

    entry_id: str
    request_hashes: list[str] = Field(description="short keyed hashes of the request ids")
    hashes: list[str] = Field(description="keyed hashes (HMAC-SHA256), never the values")
    created_at: Any = Field(default_factory=utcnow)


def root() -> str:
    return storage.join(get_settings().storage_root_uri, "suppression")


def add_entry(entry_id: str, request_ids: list[str], selector_hashes: Iterable[str],
              forget_records: Iterable[Mapping[str, Any]]) -> SuppressionEntry:
    """Store one entry: the selector hashes plus keyed hashes of every forget record's keys."""
    key = installation_secret()
    hashes = set(selector_hashes)
    for record in forget_records:
        hashes.update(keyed_hash(k, key=key) for k in record_keys(record))
    entry = SuppressionEntry(entry_id=entry_id, request_hashes=request_tokens(request_ids),
                             hashes=sorted(hashes))
    storage.write_text(storage.join(root(), f"{entry_id}.json"), entry.model_dump_json(indent=1) + "\n")
    return entry


class SuppressionList:
    """The union of every stored entry (empty when nothing was erased yet)."""

    def __init__(self, hashes: Iterable[str] = ()) -> None:
        self.hashes = frozenset(hashes)
        self._key = installation_secret() if self.hashes else b""

    @classmethod
    def load(cls) -> SuppressionList:
        hashes: set[str] = set()
        for info in storage.list_files(root(), suffixes=(".json",)):
            hashes.update(SuppressionEntry.model_validate_json(storage.read_text(info.uri)).hashes)
        return cls(hashes)

    def __len__(self) -> int:
        return len(self.hashes)

    def suppressed(self, record: Mapping[str, Any]) -> bool:
        """Whether the record's id, content digest or a subject id is on the list."""
        if not self.hashes:
            return False
        return any(keyed_hash(k, key=self._key) in self.hashes for k in record_keys(record))



def unsuppressed(records: Iterable[R], listed: SuppressionList | None = None) -> tuple[list[R], int]:
    """The records not on the suppression list (the stored one unless given), and how many were left out.

    The one filter of every data reader — scope resolution, the benchmark's training reader — so an
    erased record is never read again, not even as retain data.
    """
    listed = SuppressionList.load() if listed is None else listed
    rows = list(records)
    kept = [r for r in rows if not listed.suppressed(r)]
    return kept, len(rows) - len(kept)
