"""The per-shard work of scope resolution — the same functions run in-process, in worker processes
and as Ray tasks.

Pass 1 (:func:`scan_shard`): count lines and records, check every line is a JSON object
(whole-block vectorised checks of the bytes around each line break; a line-by-line look only where
a block fails), and return the records that match a request. Pass 2 (:func:`collect_shard`):
return the lines picked for the seeded sample, the out-of-scope general-knowledge facts, and the
records that share an attribute value or a surname with the forget set (neighbor candidates).
Both return small results only, as does :func:`read_sidecar` (the ``eval/`` rows of given ids).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unlearnops import storage

from .match import FIELDS, Matcher, Prefilter, json_forms
from .shards import FINGERPRINT_BYTES, ScopeError, Shard, iter_blocks, lines_with_values, parse_record

#: neighbor rule weights: a shared surname counts most, then employer / city / university, then the
#: answers shared by chance (birth year, job, hobby).
REASON_WEIGHTS = {"shared_surname": 3, "shared_employer": 2, "shared_birth_city": 2, "shared_university": 2,
                  "shared_birth_year": 1, "shared_job": 1, "shared_hobby": 1}
#: attributes whose shared values make a neighbor. Values shared by chance (birth years, jobs,
#: hobbies) are weaker neighbors, but an objective that pushes a forgotten answer down pushes the
#: same answer down for everyone who shares it, so they are found too: measured in the neighbor
#: set and kept as hard negatives in retain-train (issue 10: the neighbor answers lost at seeds 1/2
#: were exactly these).
NEIGHBOR_ATTRIBUTES = ("employer", "birth_city", "university", "birth_year", "job", "hobby")


def hash_key(seed: int, rel: str, lineno: int) -> float:
    """A uniform [0, 1) key fixed by (seed, shard, line): reproducible sampling without state."""
    digest = hashlib.blake2b(f"{seed}:{rel}:{lineno}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass
class ShardScan:
    """Pass 1 result of one shard."""

    rel: str
    lines: int = 0
    records: int = 0
    blank: list[int] = field(default_factory=list)
    matches: list[tuple[int, dict[str, Any], list[int]]] = field(default_factory=list)


def _lines_of(block: bytes) -> list[bytes]:
    return block.split(b"\n")[:-1]


class BlockLines:
    """The line breaks of one block, found in one vectorised pass (numpy): the line count, the
    shape check, and a candidate's line number by binary search — no per-line Python work."""

    __slots__ = ("block", "ends", "_bytes")

    def __init__(self, block: bytes) -> None:
        self.block = block
        self._bytes = np.frombuffer(block, dtype=np.uint8)
        self.ends = np.flatnonzero(self._bytes == 10)  # offset of each b"\n"; the block ends with one

    def __len__(self) -> int:
        return len(self.ends)

    def objects_only(self) -> bool:
        """Every line starts with ``{`` and ends with ``}`` (so no blank line): the byte before
        each break is ``}`` and the byte after each but the last is ``{``."""
        if not len(self.ends):
            return True
        b, ends = self._bytes, self.ends
        return bool(b[0] == 123 and (b[ends - 1] == 125).all() and (b[ends[:-1] + 1] == 123).all())

    def line(self, index: int) -> bytes:
        """Line ``index`` (0-based) without its break."""
        start = int(self.ends[index - 1]) + 1 if index else 0
        return self.block[start:int(self.ends[index])]

    def at(self, starts: list[int]) -> Iterator[tuple[int, bytes]]:
        """(0-based line index, line) of each line start offset in ``starts`` (sorted)."""
        for start, index in zip(starts, np.searchsorted(self.ends, starts).tolist(), strict=True):
            yield index, self.block[start:int(self.ends[index])]


def _check_lines(block: bytes, base: int, shard: Shard, scan: ShardScan) -> None:
    """Slow path of the structural check: find blank lines and the first bad line."""
    for offset, line in enumerate(_lines_of(block), start=1):
        stripped = line.strip()
        if not stripped:
            scan.blank.append(base + offset)
        elif not (stripped[:1] == b"{" and stripped[-1:] == b"}"):
            parse_record(stripped, shard, base + offset)  # raises with the precise JSON error
            raise ScopeError(f"shard {shard.uri} line {base + offset}: not a JSON object")


def candidates(lines: BlockLines, base: int, pre: Prefilter) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the block's candidate lines."""
    if pre.full:
        for offset, line in enumerate(_lines_of(lines.block), start=1):
            if line.strip():
                yield base + offset, line
        return
    starts = list(pre.line_starts(lines.block))
    if starts:
        for index, line in lines.at(starts):
            yield base + index + 1, line


def scan_shard(shard: Shard, matcher: Matcher) -> ShardScan:
    """Pass 1 over one shard: counts, structural check, and the matching records."""
    scan = ShardScan(shard.rel)
    for block in iter_blocks(shard):
        index = BlockLines(block)
        if not index.objects_only():
            _check_lines(block, scan.lines, shard, scan)
        for lineno, line in candidates(index, scan.lines, matcher.prefilter):
            record = parse_record(line, shard, lineno)
            hits = matcher.match(record)
            if hits:
                scan.matches.append((lineno, record, hits))
        scan.lines += len(index)
    scan.records = scan.lines - len(scan.blank)
    return scan


def sample_lines(n_lines: int, m: int, rng: random.Random) -> dict[int, float]:
    """Bottom-``m`` of ``n_lines`` i.i.d. uniform keys, drawn by geometric skips (Li 1994, Alg. L).

    Equivalent to giving every line a uniform key and keeping the ``m`` smallest, but costs
    O(m log(n/m)) draws: after the first ``m``, the gap to the next key below the current
    threshold ``W`` is geometric with parameter ``W`` and that key is uniform on [0, W).
    Returns line number (1-based) → key.
    """
    if m <= 0 or n_lines <= 0:
        return {}
    heap = [(-rng.random(), i) for i in range(min(m, n_lines))]
    heapq.heapify(heap)
    i = len(heap)
    while i < n_lines:
        threshold = -heap[0][0]
        if threshold <= 0.0:
            break
        u = rng.random()
        skip = 0 if threshold >= 1.0 else int(math.log(u if u > 0 else 1e-300) / math.log1p(-threshold))
        i += skip
        if i >= n_lines:
            break
        heapq.heapreplace(heap, (-rng.random() * threshold, i))
        i += 1
    return {index + 1: -neg for neg, index in heap}


@dataclass
class NeighborSpec:
    """What makes an out-of-scope record a neighbor: shared (attribute, answer) or surname."""

    attr_values: set[tuple[str, str]] = field(default_factory=set)
    surname_rx: re.Pattern[str] | None = None
    prefilter: Prefilter = field(default_factory=Prefilter)

    def reasons(self, record: dict[str, Any]) -> list[str]:
        out = []
        attribute = record.get("attribute")
        if attribute and (str(attribute), str(record.get("answer"))) in self.attr_values:
            out.append(f"shared_{attribute}")
        if self.surname_rx is not None and any(
            self.surname_rx.search(str(record[f])) for f in ("question", "text") if record.get(f) is not None
        ):
            out.append("shared_surname")
        return out


def score(reasons: list[str]) -> int:
    return sum(REASON_WEIGHTS.get(r, 1) for r in reasons)


@dataclass
class ShardCollect:
    """Pass 2 result of one shard; each list holds (sort key, line, record) tuples."""

    rel: str
    sampled: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    general: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    neighbors: list[tuple[int, float, int, dict[str, Any], list[str]]] = field(default_factory=list)


GENERAL_TERM = Prefilter(exact=[b'"general"'])


def _keep_smallest(items: list[Any], k: int) -> list[Any]:
    return sorted(items, key=lambda t: t[:3])[:k] if len(items) > k else items


def collect_shard(shard: Shard, seed: int, sample: dict[int, float], exclude: frozenset[int],
                  spec: NeighborSpec, neighbor_k: int, general_k: int) -> ShardCollect:
    """Pass 2 over one shard: the sampled lines, general facts and neighbor candidates."""
    out = ShardCollect(shard.rel)
    wanted = sorted(n for n in sample if n not in exclude)
    nearby = neighbor_k > 0 and (bool(spec.attr_values) or spec.surname_rx is not None)
    # one search per block finds the general facts' and the neighbor candidates' lines
    wanted_lines = GENERAL_TERM.union(spec.prefilter) if nearby else GENERAL_TERM
    base, w = 0, 0
    for block in iter_blocks(shard):
        index = BlockLines(block)
        lines = len(index)
        while w < len(wanted) and wanted[w] <= base + lines:
            lineno = wanted[w]
            line = index.line(lineno - base - 1)
            if line.strip():
                out.sampled.append((sample[lineno], lineno, parse_record(line, shard, lineno)))
            w += 1
        for lineno, line in candidates(index, base, wanted_lines):
            general, near = GENERAL_TERM.holds(line), nearby and spec.prefilter.holds(line)
            if lineno in exclude or not (general or near):
                continue
            record = parse_record(line, shard, lineno)
            if general and record.get("source") == "general":
                out.general.append((hash_key(seed, shard.rel, lineno), lineno, record))
            reasons = spec.reasons(record) if near else []
            if reasons:
                out.neighbors.append((-score(reasons), hash_key(seed, shard.rel, lineno), lineno, record,
                                      reasons))
        if len(out.general) > 8 * general_k:
            out.general = _keep_smallest(out.general, general_k)
        if len(out.neighbors) > 8 * neighbor_k:
            out.neighbors = _keep_smallest(out.neighbors, neighbor_k)
        base += lines
    out.general = _keep_smallest(out.general, general_k)
    out.neighbors = _keep_smallest(out.neighbors, neighbor_k)
    return out


def text_of(record: dict[str, Any]) -> str:
    return " ".join(str(record[f]) for f in FIELDS if record.get(f) is not None)


# ------------------------------------------------------------------ eval sidecars
def rows_with(uri: str, rel: str, key: str, values: set[str]) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL side file whose string field ``key`` is one of ``values`` (streamed).

    Per block, the lines whose ``"key"`` holds a wanted value are found vectorised
    (:func:`.shards.lines_with_values`; values shorter than its fingerprint by one RE2 search for
    their whole ``"key": "VALUE"`` pairs) or, for a block not in that plain form, by one regex pass
    pulling every ``"key": "..."`` value out (C speed) and a set intersection; only those lines
    are parsed.
    """
    shard = Shard(uri, rel, 0, "")
    quick = re.compile(b'"' + key.encode() + rb'": "([^"\\]*)"')
    loose = re.compile(b'"' + key.encode() + rb'"\s*:\s*"((?:[^"\\]|\\.)*)"')
    wanted = {form[1:-1] for v in values for form in json_forms(v)}
    long = {v for v in wanted if len(v) >= FINGERPRINT_BYTES}
    short = Prefilter(exact=sorted(b'"' + key.encode() + b'": "' + v + b'"' for v in wanted - long))

    def spans(block: bytes, lines: int) -> Iterator[tuple[int, int]]:
        fast = lines_with_values(block, key, long)
        if fast is not None:
            if short.exact:
                fast = sorted({*fast, *((s, block.find(b"\n", s)) for s in short.line_starts(block))})
            yield from fast
            return
        found = quick.findall(block)
        if len(found) < lines:
            found = loose.findall(block)
        for value in sorted(wanted.intersection(found)):
            pos = block.find(b'"' + value + b'"')
            while pos >= 0:
                start, end = block.rfind(b"\n", 0, pos) + 1, block.find(b"\n", pos)
                yield start, end
                pos = block.find(b'"' + value + b'"', end)

    base = 0
    for block in iter_blocks(shard):
        lines = block.count(b"\n")
        for start, end in spans(block, lines):
            try:
                row = json.loads(block[start:end])
            except ValueError as err:
                lineno = base + block.count(b"\n", 0, start) + 1
                raise ScopeError(f"{uri} line {lineno}: invalid JSON ({err})") from err
            if isinstance(row, dict) and row.get(key) in values:
                yield row
        base += lines


def read_sidecar(corpus_uri: str, rel: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Rows of an ``eval/`` sidecar whose id is in ``ids`` (streamed, prefiltered)."""
    uri = storage.join(corpus_uri, rel)
    if not ids or not storage.exists(uri):
        return {}
    return {row["id"]: row for row in rows_with(uri, rel, "id", ids)}
