"""The residue scan: after an erasure, search every stored byte for the forgotten people.

It looks for the erased people's names and their distinctive answers (those that are no other
record's answer, at least :data:`MIN_LEN` characters) in every file under a local folder (the
home: storage, ledger and MLflow databases, artifact store, logs) and every object under S3
prefixes. Tokenizer vocabularies are skipped: they are built before any erasure and may hold
name fragments as tokens — the one known exception, stated in every certificate. A hit reports
the place and a short keyed hash of the needle, never the needle itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import storage
from .keyed_hash import keyed_hash, short

MIN_LEN = 6
#: Files that hold a tokenizer vocabulary (the documented exception).
TOKENIZER_FILES = frozenset({"tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model",
                             "tokenizer_config.json", "special_tokens_map.json"})


@dataclass
class ScanResult:
    needles: int
    files: int = 0
    bytes: int = 0
    skipped_tokenizer_files: int = 0
    hits: list[tuple[str, str]] = field(default_factory=list)  # (where, short keyed hash of needle)

    @property
    def line(self) -> str:
        """One line for logs and `make demo` (no needle is ever printed)."""
        verdict = "PASS" if not self.hits else "FAIL"
        return (f"residue scan {verdict}: {len(self.hits)} hit(s) for {self.needles} erased names/answers in "
                f"{self.files} files ({self.bytes / 1e6:.1f} MB; {self.skipped_tokenizer_files} tokenizer "
                "vocabularies excluded, the known exception)")


def needles_for(corpus_uri: str, subject_ids: Iterable[str]) -> list[str]:
    """The erased people's names and distinctive answers, from the corpus (read before redaction).

    An answer is distinctive when no record about anyone else holds it anywhere — as its answer,
    inside a biography, among perturbed answers or in an eval side file (``"a cat named Button"``
    can be another person's wrong-answer option: finding it there is not residue).
    """
    wanted = set(subject_ids)
    names: set[str] = set()
    theirs: set[str] = set()
    other_lines: list[str] = []
    for info in storage.list_files(corpus_uri, suffixes=(".jsonl",)):
        for line in storage.iter_lines(info.uri):
            rec = json.loads(line) if line.strip() else {}
            subjects = set(rec.get("subject_ids") or ([rec["subject_id"]] if rec.get("subject_id") else []))
            if rec.get("name") and subjects & wanted:
                names.add(str(rec["name"]))
            answer = str(rec.get("answer") or "")
            if subjects & wanted:
                if answer:
                    theirs.add(answer)
            elif line.strip():
                other_lines.append(json.dumps(rec, ensure_ascii=False))
    shared = {a for a in theirs if any(a in text for text in other_lines)}
    return sorted(names | {a for a in theirs - shared if len(a) >= MIN_LEN})


def _count(result: ScanResult, where: str, data: bytes, needles: list[tuple[str, bytes]]) -> None:
    result.files += 1
    result.bytes += len(data)
    for digest, needle in needles:
        if needle in data:
            result.hits.append((where, digest))


def scan(needles: Iterable[str], folders: Iterable[Path] = (), prefixes: Iterable[str] = ()) -> ScanResult:
    """Search every file under ``folders`` (a file is scanned itself) and every object under ``prefixes``."""
    encoded = [(short(keyed_hash(n)), n.encode("utf-8")) for n in needles]
    result = ScanResult(needles=len(encoded))
    for folder in map(Path, folders):
        paths = [folder] if folder.is_file() else sorted(folder.rglob("*"))
        for path in (p for p in paths if p.is_file() and not p.is_symlink()):
            if path.name in TOKENIZER_FILES:
                result.skipped_tokenizer_files += 1
                continue
            _count(result, str(path), path.read_bytes(), encoded)
    for prefix in prefixes:
        for info in storage.list_files(prefix):
            if info.uri.rsplit("/", 1)[-1] in TOKENIZER_FILES:
                result.skipped_tokenizer_files += 1
                continue
            _count(result, info.uri, storage.read_bytes(info.uri), encoded)
    return result
