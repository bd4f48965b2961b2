"""Corpus shards read as blocks of whole lines (bytes), with bounded memory.

A JSONL shard is read in blocks of about :data:`BLOCK_BYTES` that always end on a line break
(local files and S3 objects alike, streamed); a Parquet shard is read batch by batch with pyarrow
(from a local copy when on S3) and each row becomes one JSON line, so the scanners above see one
format. Line numbers are 1-based physical lines (rows for Parquet).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnops import storage

#: 1 MiB: per-block costs stay small, and each process's peak RSS stays ~15 MiB lower than at 4 MiB
BLOCK_BYTES = 1 << 20
SHARD_SUFFIXES = (".jsonl", ".parquet")
NOT_SHARDS = {"people.jsonl"}  # benchmark metadata at the corpus root, not training records


class ScopeError(ValueError):
    """Bad input to scope resolution: the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Shard:
    """One corpus file: URI, name relative to the corpus, size and version tag."""

    uri: str
    rel: str
    size: int
    etag: str

    @property
    def fmt(self) -> str:
        return "parquet" if self.uri.endswith(".parquet") else "jsonl"


def list_shards(corpus_uri: str, sub: str = "") -> list[Shard]:
    """The ``*.jsonl`` / ``*.parquet`` files directly under ``corpus_uri[/sub]`` (sorted)."""
    base = storage.join(corpus_uri, sub) if sub else corpus_uri
    try:
        files = storage.list_files(base, SHARD_SUFFIXES)
    except storage.StorageError as err:
        raise ScopeError(f"cannot list corpus {base}: {err}") from err
    root = base.rstrip("/") + "/"
    if not storage.is_s3(base):
        root = str(storage.local_path(base)).rstrip("/") + "/"
    out = []
    for info in files:
        rel = info.uri[len(root):] if info.uri.startswith(root) else Path(info.uri).name
        if "/" in rel or (not sub and rel in NOT_SHARDS):
            continue
        out.append(Shard(info.uri, f"{sub}/{rel}" if sub else rel, info.size, info.etag))
    return out


def _split_blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Re-cut byte chunks into blocks that end with a line break (the last may lack one: added)."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1:]
    if rest:
        yield rest if rest.endswith(b"\n") else rest + b"\n"


def _local_blocks(path: Path) -> Iterator[bytes]:
    """A block and the rest of its last line: one copy per block, no re-cutting."""
    with path.open("rb") as handle:
        while chunk := handle.read(BLOCK_BYTES):
            if not chunk.endswith(b"\n"):
                chunk += handle.readline()
            yield chunk if chunk.endswith(b"\n") else chunk + b"\n"


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """Drop a Parquet row's null columns (schema padding), keeping a QA record's null attribute."""
    keep_attribute = row.get("question") is not None
    return {k: v for k, v in row.items() if v is not None or (k == "attribute" and keep_attribute)}


def _parquet_blocks(path: Path) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=8192):
        rows = (json.dumps(_clean_row(r), sort_keys=True) for r in batch.to_pylist())
        yield ("\n".join(rows) + "\n").encode("utf-8")


def iter_blocks(shard: Shard) -> Iterator[bytes]:
    """Blocks of whole lines of a shard; any read failure becomes a ScopeError naming it."""
    try:
        if shard.fmt == "parquet":
            if storage.is_s3(shard.uri):
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / "shard.parquet"
                    storage.download_file(shard.uri, local)
                    yield from _parquet_blocks(local)
            else:
                yield from _parquet_blocks(storage.local_path(shard.uri))
        elif storage.is_s3(shard.uri):
            yield from _split_blocks(storage.iter_chunks(shard.uri, BLOCK_BYTES))
        else:
            yield from _local_blocks(storage.local_path(shard.uri))
    except ScopeError:
        raise
    except (OSError, storage.StorageError) as err:
        raise ScopeError(f"shard {shard.uri} is unreadable: {err}") from err
    except Exception as err:  # pyarrow raises its own types for corrupt Parquet
        if type(err).__module__.startswith("pyarrow"):
            raise ScopeError(f"shard {shard.uri} is not valid Parquet: {err}") from err
        raise


def iter_lines(shard: Shard) -> Iterator[tuple[int, bytes]]:
    """(line number, line without the break) for every line, blank ones included."""
    lineno = 0
    for block in iter_blocks(shard):
        for line in block.split(b"\n")[:-1]:
            lineno += 1
            yield lineno, line


#: :func:`lines_with_values` compares values by their last bytes packed into one integer
FINGERPRINT_BYTES = 8


def lines_with_values(block: bytes, key: str, wanted: set[bytes]) -> list[tuple[int, int]] | None:
    """(start, end) of the lines of ``block`` whose ``"key": "VALUE"`` has VALUE in ``wanted``
    (raw JSON string bodies) — a superset the caller confirms by parsing — found without a Python
    step per line; ``None`` when the block is not in the plain form this needs (the pair first on
    its line, ``{"key": "VALUE", …``, or last, ``…, "key": "VALUE"}``, as the first line shows;
    every wanted value at least :data:`FINGERPRINT_BYTES` long): the caller's general path.

    Vectorised (numpy) over the block's line breaks: 8-byte windows read as one ``uint64`` each —
    the bytes before the value's opening quote must end the pair's head, the value's first 8
    bytes must be a wanted value's — then the closing quote where a wanted length puts it; only
    those few lines are compared in full. A raw quote never sits inside a JSON string, so a span
    that holds one cannot equal a wanted value.
    """
    import numpy as np

    size = FINGERPRINT_BYTES
    if not wanted or min(map(len, wanted)) < size or len(block) < 2 * size:
        return None
    pair = b'"' + key.encode() + b'": "'
    head = pair[-size:]  # the pair's last bytes, up to the value's opening quote
    mask = np.uint64(int.from_bytes(b"\xff" * len(head), "little") << (8 * (size - len(head))))
    mark = np.uint64(int.from_bytes(head.rjust(size, b"\0"), "little"))
    b = np.frombuffer(block, dtype=np.uint8)
    windows = np.lib.stride_tricks.as_strided(b, shape=(len(b) - size + 1, size), strides=(1, 1),
                                              writeable=False)
    firsts = np.array(sorted({int.from_bytes(v[:size], "little") for v in wanted}), dtype=np.uint64)

    def grab(at: Any) -> Any:
        return np.ascontiguousarray(windows[at]).view("<u8").ravel()

    def wanted_start(at: Any) -> Any:
        got = grab(at)
        hit = firsts[np.minimum(np.searchsorted(firsts, got), len(firsts) - 1)] == got
        return hit & ((grab(at - size) & mask) == mark)

    ends = np.flatnonzero(b == 10)
    if not len(ends):
        return None
    starts = np.concatenate((np.zeros(1, dtype=ends.dtype), ends[:-1] + 1))
    lengths = sorted({len(v) for v in wanted})
    found: set[int] = set()
    if block.startswith(b"{" + pair):  # {"key": "VALUE", …
        first = starts + 1 + len(pair)
        rows = np.flatnonzero(first + size < ends)
        for i in rows[wanted_start(first[rows])].tolist():
            at, line_end = int(first[i]), int(ends[i])
            if any(at + n < line_end and block[at + n] == 34 and block[at:at + n] in wanted for n in lengths):
                found.add(i)
    elif block.startswith(b"{"):  # …, "key": "VALUE"}
        close = ends - 2
        base = np.flatnonzero((close - lengths[-1] - size > starts) & (b[ends - 1] == 125) & (b[close] == 34))
        for n in lengths:
            rows = base[b[close[base] - n - 1] == 34]  # an opening quote n bytes before the closing one
            for i in rows[wanted_start(close[rows] - n)].tolist():
                if block[int(close[i]) - n:int(close[i])] in wanted:
                    found.add(i)
    else:
        return None
    return [(int(starts[i]), int(ends[i])) for i in sorted(found)]


REQUIRED = "a record needs a string 'id' and either 'question' + 'answer' or 'text'"


def parse_record(line: bytes, shard: Shard, lineno: int) -> dict[str, Any]:
    """One JSON record, checked; errors name the shard and line."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError as err:
        raise ScopeError(f"shard {shard.uri} line {lineno}: not UTF-8 text ({err.reason})") from err
    except ValueError as err:
        msg = getattr(err, "msg", str(err))
        raise ScopeError(f"shard {shard.uri} line {lineno}: invalid JSON ({msg}); fix or remove the line") \
            from err
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not (
        ("question" in record and "answer" in record) or "text" in record
    ):
        raise ScopeError(f"shard {shard.uri} line {lineno}: {REQUIRED}")
    return record
