"""Which records a set of ForgetRequests points at, and a cheap byte-level prefilter.

Matching rules (per request kind):

- subject: ``record.subject_ids`` ∩ ``selectors.subject_ids``, or one of the subject's names or
  aliases in ``question`` / ``answer`` / ``text``: both sides normalised (:func:`normalise`: NFKC,
  case folding, accents dropped if ``fold_accents``, whitespace and line breaks collapsed), then
  matched on word boundaries — possessives and surrounding punctuation match, a longer name
  (``Ada Quillson``, ``Ada Quill-Smith``) does not.
- document: ``record.id`` in ``selectors.record_ids`` or :func:`content_sha256` in
  ``selectors.content_sha256``.
- pattern: any regex of ``selectors.patterns`` (RE2, linear time: :mod:`unlearnops.patterns`) or
  keyword (word boundaries, case-insensitive) in ``question`` / ``answer`` / ``text``.
- examples: corpus records with the id or content hash of one of the examples.

The prefilter finds candidate lines by searching whole blocks at C speed (RE2's case-folded
literal search, each hit checked): quoted ids as they are written in JSON, and ASCII
names/keywords case-insensitively (a name by its longest word, so other spacing still matches;
lines with non-ASCII text or JSON ``\\u`` escapes are always candidates, so Unicode variants still
match). It is a superset of the matches, so only candidate lines are parsed. Regexes and content
hashes need every line parsed (the prefilter switches off).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from unlearnops.patterns import PatternError, compile_pattern
from unlearnops.suppression import content_sha256  # one definition, shared with the suppression list
from unlearnops.types import ForgetRequest, RequestKind

FIELDS = ("question", "answer", "text")


_SPACE = re.compile(r"\s+")
#: ``bytes.translate`` table: ASCII lowercased, every non-ASCII byte as ``\x80`` — one C pass gives
#: the haystack for lowercase terms and, by ``find(b"\x80")``, the lines with non-ASCII text.
_FOLD = bytes(range(128)).lower() + b"\x80" * 128


def normalise(text: str, fold_accents: bool = False) -> str:
    """NFKC, case-folded, accents dropped if ``fold_accents``, runs of whitespace as one space."""
    out = unicodedata.normalize("NFKC", text).casefold()
    if fold_accents:
        out = "".join(c for c in unicodedata.normalize("NFKD", out) if not unicodedata.combining(c))
        out = unicodedata.normalize("NFC", out)
    return _SPACE.sub(" ", out).strip()


def names_regex(names: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation of normalised ``names``, never inside a longer (or hyphenated) name."""
    alts = sorted({n for n in names if n}, key=lambda n: (-len(n), n))
    if not alts:
        return None
    return re.compile(r"(?<![\w-])(?<!\w-\w)(?:" + "|".join(re.escape(n) for n in alts) + r")(?!-?\w)")


def words_regex(words: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive alternation matching any of ``words`` between word boundaries."""
    alts = sorted({w.strip() for w in words if w.strip()}, key=lambda w: (-len(w), w))
    if not alts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in alts) + r")(?!\w)", re.IGNORECASE)


def json_forms(value: str) -> list[bytes]:
    """The ways a string can appear in a JSON line: ASCII-escaped and raw UTF-8 (quoted)."""
    forms = {json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode("utf-8")}
    return sorted(forms)


def _plain_ascii(word: str) -> bool:
    return word.isascii() and word.isprintable() and '"' not in word and "\\" not in word


@dataclass
class Prefilter:
    """Byte terms whose presence makes a line a candidate (``full`` = every line is one)."""

    exact: list[bytes] = field(default_factory=list)
    lower: list[bytes] = field(default_factory=list)
    full: bool = False
    unicode_lines: bool = False

    def add_words(self, words: Iterable[str]) -> None:
        for word in words:
            if not _plain_ascii(word.strip()):
                self.full = True
            else:
                self.lower.append(word.strip().lower().encode())

    def add_names(self, names: Iterable[str]) -> None:
        """Names by their longest word (spacing may differ); non-ASCII lines become candidates too."""
        for name in names:
            words = name.split()
            if not words or not _plain_ascii(name.strip()):
                self.full = self.full or bool(words)
                continue
            self.lower.append(max(words, key=len).lower().encode())
            self.unicode_lines = True

    def add_strings(self, values: Iterable[str]) -> None:
        for value in values:
            self.exact.extend(json_forms(value))

    def holds(self, line: bytes) -> bool:
        """Whether one line (no break) is a candidate: what :meth:`line_starts` finds, line by line."""
        return self.full or any(t in line for t in self.exact) or (
            bool(self.lower) and any(t in line.lower() for t in self.lower)) or (
            self.unicode_lines and (not line.isascii() or b"\\u" in line))

    def union(self, other: Prefilter) -> Prefilter:
        """A prefilter whose candidates are the lines of either (one search finds both)."""
        return Prefilter(exact=[*self.exact, *other.exact], lower=[*self.lower, *other.lower],
                         full=self.full or other.full,
                         unicode_lines=self.unicode_lines or other.unicode_lines)

    def line_starts(self, block: bytes) -> Iterator[int]:
        """Start offsets of the candidate lines of a block (sorted, unique)."""
        if self.full:
            raise RuntimeError("full prefilter: every line is a candidate")
        starts: set[int] = set()
        if self.exact or self.lower:
            _add_lines(block, tuple(self.exact), tuple(self.lower), starts)
        if self.unicode_lines:
            # C-speed tests first: most blocks have no non-ASCII byte and no backslash
            if not block.isascii():
                _add_lines(block.translate(_FOLD), (b"\x80",), (), starts)
            if b"\\" in block:
                _add_lines(block, (b"\\u",), (), starts)
        return iter(sorted(starts))


@functools.lru_cache(maxsize=256)
def _alternation(exact: tuple[bytes, ...], lower: tuple[bytes, ...]) -> Any:
    """One RE2 search for all the terms: ``exact`` case-sensitively, ``lower`` case-insensitively.

    Latin-1 mode, so every byte is one character and any bytes compile; the case folding of RE2
    may only add hits (Latin-1 letter pairs such as ``Ã``/``ã``), which the caller's check drops.
    One pass over a block whatever the number of terms (RE2's DFA), instead of one per term.
    """
    import re2

    options = re2.Options()
    options.log_errors = False
    options.encoding = re2.Options.Encoding.LATIN1
    parts = [b"(?-i:" + b"|".join(map(re2.escape, exact)) + b")"] if exact else []
    parts += [b"(?i:" + b"|".join(map(re2.escape, lower)) + b")"] if lower else []
    return re2.compile(b"|".join(parts), options)


def _add_lines(hay: bytes, exact: tuple[bytes, ...], lower: tuple[bytes, ...], starts: set[int]) -> None:
    """Add the start offset of every line of ``hay`` holding a term: one of ``exact`` as it is, or
    one of ``lower`` (lowercase) with ASCII case ignored. Each hit of :func:`_alternation` is
    checked against every term at its offset (a folding-only hit is skipped); the search resumes
    after a found line."""
    rx = _alternation(exact, lower)
    found = rx.search(hay)
    while found is not None:
        pos = found.start()
        if any(hay.startswith(t, pos) for t in exact) or any(
                hay[pos:pos + len(t)].lower() == t for t in lower):
            starts.add(hay.rfind(b"\n", 0, pos) + 1)
            end = hay.find(b"\n", pos)
            found = rx.search(hay, end + 1) if end >= 0 else None
        else:
            found = rx.search(hay, pos + 1)


@dataclass
class Matcher:
    """Compiled selectors of several requests; :meth:`match` returns the matching request indexes."""

    subject_ids: dict[str, list[int]] = field(default_factory=dict)
    names: dict[str, list[int]] = field(default_factory=dict)
    record_ids: dict[str, list[int]] = field(default_factory=dict)
    hashes: dict[str, list[int]] = field(default_factory=dict)
    patterns: list[tuple[Any, int]] = field(default_factory=list)
    prefilter: Prefilter = field(default_factory=Prefilter)
    name_rx: re.Pattern[str] | None = None
    fold_accents: bool = False

    def match(self, record: Mapping[str, Any]) -> list[int]:
        hits: set[int] = set()
        for sid in record.get("subject_ids") or ():
            hits.update(self.subject_ids.get(str(sid), ()))
        hits.update(self.record_ids.get(str(record.get("id")), ()))
        if self.hashes:
            hits.update(self.hashes.get(content_sha256(record), ()))
        texts = [str(record[f]) for f in FIELDS if record.get(f) is not None]
        if self.name_rx is not None:
            for text in texts:
                for found in self.name_rx.finditer(normalise(text, self.fold_accents)):
                    hits.update(self.names.get(found.group(0), ()))
        for rx, index in self.patterns:
            if index not in hits and any(rx.search(t) for t in texts):
                hits.add(index)
        return sorted(hits)


def _add(table: dict[str, list[int]], keys: Iterable[str], index: int) -> None:
    for key in keys:
        table.setdefault(key, [])
        if index not in table[key]:
            table[key].append(index)


def _aliases(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def build_matcher(requests: list[ForgetRequest], subject_names: Mapping[str, str | Iterable[str]],
                  examples: Mapping[int, list[dict[str, Any]]], fold_accents: bool = False) -> Matcher:
    """A Matcher for ``requests``; ``subject_names`` adds the name (or aliases) of each subject id."""
    from .shards import ScopeError

    m = Matcher(fold_accents=fold_accents)
    pre = m.prefilter
    for index, req in enumerate(requests):
        sel = req.selectors
        if req.kind == RequestKind.subject:
            _add(m.subject_ids, sel.subject_ids, index)
            pre.add_strings(sel.subject_ids)
            names = [*sel.names, *(a for s in sel.subject_ids if s in subject_names
                                   for a in _aliases(subject_names[s]))]
            _add(m.names, (k for k in (normalise(n, fold_accents) for n in names) if k), index)
            pre.add_names(names)
        elif req.kind == RequestKind.document:
            _add(m.record_ids, sel.record_ids, index)
            pre.add_strings(sel.record_ids)
            _add(m.hashes, (h.lower() for h in sel.content_sha256), index)
            pre.full = pre.full or bool(sel.content_sha256)
        elif req.kind == RequestKind.pattern:
            for pattern in sel.patterns:
                try:
                    m.patterns.append((compile_pattern(pattern), index))
                except PatternError as err:
                    raise ScopeError(f"request {req.id}: {err}") from err
            pre.full = pre.full or bool(sel.patterns)
            keyword_rx = words_regex(sel.keywords)
            if keyword_rx is not None:
                m.patterns.append((keyword_rx, index))
                pre.add_words(sel.keywords)
        else:
            rows = examples.get(index, [])
            _add(m.record_ids, (r["id"] for r in rows), index)
            _add(m.hashes, (content_sha256(r) for r in rows), index)
            pre.full = pre.full or bool(rows)
    m.name_rx = names_regex(m.names)
    return m
