"""Disposition of a run's working data: what was deleted, where, when, with which digest.

A run leaves working data that holds the erased people's records or was trained on them: the
scope sets, Ray Train checkpoints (mid-run weights and optimizer state) and the candidate model
copy under the run folder. The pipeline's exit path calls :func:`dispose` whatever the outcome
(success, gate failure, crash). With the ``retention_days`` setting above 0 (for debugging) the
data is kept and marked ``retained`` until a date; ``unlearnops dispose`` deletes what is due.
Each record is a JSON document under ``STORAGE/dispositions/`` (no personal data: folder names,
counts, sizes and a digest of the listing), and certificates quote it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from . import storage
from .settings import get_settings
from .types import Doc, utcnow

What = Literal["scope-sets", "checkpoints", "model-copy", "corpus-shard", "model-version"]


class DispositionEntry(Doc):
    """One disposed (or retained) location."""

    what: What
    uri: str
    files: int
    bytes: int
    digest: str = Field(description="SHA-256 over the listing (relative name, size, ETag) before deletion")
    action: Literal["deleted", "retained", "absent"]
    at: datetime = Field(default_factory=utcnow)
    retain_until: datetime | None = None


class DispositionRecord(Doc):
    """The disposition record of one run (or of one `models dispose` / `corpus redact`)."""

    run_id: str
    request_hashes: list[str] = Field(default_factory=list, description="short keyed hashes of request ids")
    entries: list[DispositionEntry]
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def pending(self) -> list[DispositionEntry]:
        return [e for e in self.entries if e.action == "retained"]


def checkpoint_prefix(model_out_uri: str) -> str:
    """The Ray run-name prefix of the unlearn step writing to ``model_out_uri`` (found again here)."""
    return "unlearn-" + hashlib.sha256(model_out_uri.encode()).hexdigest()[:12] + "-"


def checkpoint_root() -> str:
    return storage.join(get_settings().storage_root_uri, "ray")


def checkpoint_dirs(model_out_uri: str) -> list[str]:
    """The Ray Train run folders (checkpoints) of that unlearn step."""
    root, prefix = checkpoint_root(), checkpoint_prefix(model_out_uri)
    names = {f.uri[len(root):].lstrip("/").split("/", 1)[0] for f in storage.list_files(root)}
    if not storage.is_s3(root):
        folder = storage.local_path(root)
        names |= {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return [storage.join(root, n) for n in sorted(names) if n.startswith(prefix)]


def listing_digest(uri: str) -> tuple[int, int, str]:
    """(files, bytes, SHA-256 over 'relative-name size etag' lines) of a folder or prefix."""
    files = storage.list_files(uri)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.uri[len(uri):].lstrip('/')} {f.size} {f.etag}\n".encode())
    return len(files), sum(f.size for f in files), digest.hexdigest()


def dispose(items: list[tuple[What, str]], retention_days: float | None = None,
            now: datetime | None = None) -> list[DispositionEntry]:
    """Delete each location (or keep it until ``now + retention_days``); one entry each."""
    days = get_settings().retention_days if retention_days is None else retention_days
    now = now or utcnow()
    entries = []
    for what, uri in items:
        files, size, digest = listing_digest(uri)
        if files == 0 and not storage.exists(uri):
            entries.append(DispositionEntry(what=what, uri=uri, files=0, bytes=0, digest=digest,
                                            action="absent", at=now))
            continue
        if days > 0:
            entries.append(DispositionEntry(what=what, uri=uri, files=files, bytes=size, digest=digest,
                                            action="retained", at=now,
                                            retain_until=now + timedelta(days=days)))
            continue
        storage.delete_prefix(uri)
        entries.append(DispositionEntry(what=what, uri=uri, files=files, bytes=size, digest=digest,
                                        action="deleted", at=now))
    return entries


def records_root() -> str:
    return storage.join(get_settings().storage_root_uri, "dispositions")


def write_record(record: DispositionRecord) -> str:
    """Store the record as ``STORAGE/dispositions/<run id>.json`` (atomic); its URI."""
    uri = storage.join(records_root(), f"{record.run_id}.json")
    storage.write_text(uri, record.model_dump_json(indent=2) + "\n")
    return uri


def read_record(run_id: str) -> DispositionRecord | None:
    uri = storage.join(records_root(), f"{run_id}.json")
    return DispositionRecord.model_validate_json(storage.read_text(uri)) if storage.exists(uri) else None


def dispose_due(now: datetime | None = None) -> list[DispositionEntry]:
    """Delete every retained location whose retention has ended; rewrite its record."""
    now = now or utcnow()
    done: list[DispositionEntry] = []
    for info in storage.list_files(records_root(), suffixes=(".json",)):
        record = DispositionRecord.model_validate_json(storage.read_text(info.uri))
        changed = False
        for i, entry in enumerate(record.entries):
            if entry.action == "retained" and entry.retain_until is not None and entry.retain_until <= now:
                storage.delete_prefix(entry.uri)
                record.entries[i] = entry.model_copy(update={"action": "deleted", "at": now})
                done.append(record.entries[i])
                changed = True
        if changed:
            write_record(record)
    return done
