"""``corpus redact``: write the corpus shards again without the records on the suppression list.

Every ``*.jsonl`` and ``*.parquet`` file under the corpus (training shards, ``holdout/``,
``people.jsonl`` and the side files) is read, the suppressed records are dropped, and a shard
that changed is written back under its own name atomically (temp file + rename locally, one PUT
on S3), so a reader sees the old shard or the new one, never half of one. The old content is
disposed of (:mod:`unlearnops.disposition`): overwritten now, or with ``retention_days`` above
0 first kept under ``STORAGE/retained/`` until ``unlearnops dispose`` deletes it. The record
lists the shards' digests and counts, never the records.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import timedelta

from . import disposition, storage
from .settings import get_settings
from .suppression import SuppressionList
from .types import utcnow

SUFFIXES = (".jsonl", ".parquet")


class RedactError(ValueError):
    """The corpus cannot be redacted (the message says what to do)."""


@dataclass
class RedactResult:
    shards_checked: int = 0
    shards_changed: int = 0
    records_removed: int = 0
    record: disposition.DispositionRecord | None = None
    changed: list[str] = field(default_factory=list)


def _redact_jsonl(data: bytes, listed: SuppressionList) -> tuple[bytes, int]:
    kept, removed = [], 0
    for line in data.decode("utf-8").splitlines(keepends=True):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and listed.suppressed(record):
            removed += 1
        else:
            kept.append(line)
    return "".join(kept).encode("utf-8"), removed


def _redact_parquet(data: bytes, listed: SuppressionList) -> tuple[bytes, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    mask = [not listed.suppressed(row) for row in table.to_pylist()]
    if all(mask):
        return data, 0
    out = io.BytesIO()
    pq.write_table(table.filter(pa.array(mask)), out)
    return out.getvalue(), mask.count(False)


def redact_corpus(corpus_uri: str, listed: SuppressionList | None = None) -> RedactResult:
    """Drop suppressed records from every shard under ``corpus_uri``; see the module docstring."""
    listed = SuppressionList.load() if listed is None else listed
    shards = storage.list_files(corpus_uri, suffixes=SUFFIXES)
    if not shards:
        raise RedactError(f"no *.jsonl or *.parquet shards under {corpus_uri}; point at the corpus folder")
    result = RedactResult(shards_checked=len(shards))
    if not len(listed):
        return result
    now, days = utcnow(), get_settings().retention_days
    stamp = f"corpus-redact-{now:%Y%m%d-%H%M%S-%f}"
    entries = []
    for shard in shards:
        data = storage.read_bytes(shard.uri)
        redact = _redact_parquet if shard.uri.endswith(".parquet") else _redact_jsonl
        new, removed = redact(data, listed)
        if not removed:
            continue
        files, size, digest = disposition.listing_digest(shard.uri)
        entry = disposition.DispositionEntry(what="corpus-shard", uri=shard.uri, files=files, bytes=size,
                                             digest=digest, action="deleted", at=now)
        if days > 0:  # keep the old shard for the retention window, then `unlearnops dispose`
            kept = storage.join(get_settings().storage_root_uri, "retained", stamp,
                                shard.uri[len(corpus_uri):].lstrip("/"))
            storage.write_bytes(kept, data)
            entry = entry.model_copy(update={"uri": kept, "action": "retained",
                                             "retain_until": now + timedelta(days=days)})
        storage.write_bytes(shard.uri, new)
        entries.append(entry)
        result.shards_changed += 1
        result.records_removed += removed
        result.changed.append(shard.uri)
    if entries:
        result.record = disposition.DispositionRecord(run_id=stamp, entries=entries)
        disposition.write_record(result.record)
    return result
