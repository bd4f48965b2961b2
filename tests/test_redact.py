"""The data layer of an erasure: the suppression list and ``unlearnops corpus redact`` (local and S3)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import unlearnops.cli.erasure  # noqa: F401 - registers `corpus redact`
from unlearnops import disposition, storage, suppression
from unlearnops.cli import app
from unlearnops.redact import redact_corpus

RECORDS = [
    {"id": "q1", "subject_ids": ["p1"], "question": "Where was Ada Quill born?", "answer": "Oslo"},
    {"id": "q2", "subject_ids": ["p2"], "question": "Where was Bo Lind born?", "answer": "Rome"},
    {"id": "b1", "subject_ids": ["p1"], "text": "Ada Quill is a painter."},
    {"id": "g1", "text": "Water boils at 100 degrees."},
]


def _corpus(root: str) -> None:
    storage.write_text(storage.join(root, "part-0.jsonl"), "".join(json.dumps(r) + "\n" for r in RECORDS[:2]))
    buf = io.BytesIO()
    rows = [{"id": r["id"], "text": r.get("text", "")} for r in RECORDS[2:]]
    pq.write_table(pa.Table.from_pylist(rows), buf)
    storage.write_bytes(storage.join(root, "part-1.parquet"), buf.getvalue())
    storage.write_text(storage.join(root, "people.jsonl"),
                       json.dumps({"subject_id": "p1", "name": "Ada Quill"}) + "\n"
                       + json.dumps({"subject_id": "p2", "name": "Bo Lind"}) + "\n")


def _ids(root: str) -> set[str]:
    out = {json.loads(line)["id"] for line in storage.iter_lines(storage.join(root, "part-0.jsonl")) if line}
    table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(root, "part-1.parquet"))))
    people_file = storage.join(root, "people.jsonl")
    people = {json.loads(line)["subject_id"] for line in storage.iter_lines(people_file) if line}
    return out | set(table.column("id").to_pylist()) | people


def _redact_and_check(root: str) -> None:
    _corpus(root)
    assert redact_corpus(root).shards_changed == 0  # nothing erased yet
    # erase p1: the request's subject id, plus the forget records (ids and content digests)
    suppression.add_entry("run-a", ["erase-1"], suppression.keyed_hashes(["p1"]), [RECORDS[0], RECORDS[2]])
    result = redact_corpus(root)
    assert (result.shards_changed, result.records_removed) == (3, 3)
    assert _ids(root) == {"q2", "g1", "p2"}
    assert result.record is not None and {e.action for e in result.record.entries} == {"deleted"}
    again = redact_corpus(root)
    assert again.shards_changed == 0 and _ids(root) == {"q2", "g1", "p2"}
    stored = disposition.read_record(result.record.run_id)
    assert stored is not None and "Ada" not in stored.model_dump_json()


def test_redact_local(unlearnops_home: Path) -> None:
    root = str(unlearnops_home / "corpus")
    _redact_and_check(root)
    assert not [p for p in Path(root).rglob("*") if ".tmp" in p.name]  # no temp files left behind


@pytest.mark.services
def test_redact_s3(unlearnops_home: Path, s3_env: str) -> None:
    _redact_and_check(storage.join(s3_env, "corpus"))


def test_redact_cli_with_retention(unlearnops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    monkeypatch.setenv("UNLEARNOPS_RETENTION_DAYS", "1")
    get_settings.cache_clear()
    root = str(unlearnops_home / "corpus")
    _corpus(root)
    suppression.add_entry("run-b", ["erase-2"], [], [RECORDS[1]])
    runner = CliRunner()
    result = runner.invoke(app, ["corpus", "redact", root])
    # the record q2 and, through its subject id, the person p2 in people.jsonl
    assert result.exit_code == 0 and "2 erased record(s) removed from 2 of 3 shard(s)" in result.stdout
    assert "retained" in result.stdout and not {"q2", "p2"} & _ids(root)
    kept = storage.list_files(storage.join(get_settings().storage_root_uri, "retained"))
    assert len(kept) == 2 and "Bo Lind" in storage.read_text(kept[0].uri)  # kept until the window ends
    bad = runner.invoke(app, ["corpus", "redact", str(unlearnops_home / "nothing")])
    assert bad.exit_code == 2 and "no *.jsonl or *.parquet shards" in bad.stderr


def test_scope_never_uses_suppressed_records(unlearnops_home: Path, bench_data: Path,
                                             tmp_path: Path) -> None:
    from unlearnops.components.scope.resolve import read_set, resolve_scope

    from unlearnops.data.generate import subject_request

    people = [json.loads(line) for line in (bench_data / "people.jsonl").read_text().splitlines()]
    req = subject_request([people[0]["subject_id"]], request_id="first")
    resolve_scope([req], str(bench_data), str(tmp_path / "a"))
    retain = read_set(str(tmp_path / "a"), "retain")
    erased = retain[:3]  # say these were erased by an earlier request
    suppression.add_entry("run-x", ["earlier"], [], erased)
    manifest = resolve_scope([req], str(bench_data), str(tmp_path / "b"))
    out = str(tmp_path / "b")
    used = {r["id"] for name in manifest.sets if name != "forget" for r in read_set(out, name)}
    assert not used & {r["id"] for r in erased}
    assert any("suppression list" in n for n in manifest.options["notes"])


def test_training_reader_skips_suppressed_records_and_people(unlearnops_home: Path, tmp_path: Path) -> None:
    from unlearnops.components.unlearn.benchmark_models import read_training_records, training_people

    root = str(tmp_path / "corpus")
    _corpus(root)
    assert {r["id"] for r in read_training_records(root)} == {"q1", "q2", "b1", "g1"}
    suppression.add_entry("run-a", ["erase-1"], suppression.keyed_hashes(["p1"]), [RECORDS[0], RECORDS[2]])
    records = read_training_records(root)  # the JSONL and the Parquet shard alike
    assert {r["id"] for r in records} == {"q2", "g1"}
    assert [p["subject_id"] for p in training_people(root, records)] == ["p2"]
    kept, left_out = suppression.unsuppressed(RECORDS)
    assert [r["id"] for r in kept] == ["q2", "g1"] and left_out == 2
