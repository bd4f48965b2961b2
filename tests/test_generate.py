"""The benchmark data generator: determinism, layout, record format, sidecars, neighbors, CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearnops.cli import _load_plugins, app
from unlearnops.data.generate import generate_benchmark, read_people, subject_request
from unlearnops.types import RequestKind


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train(root: Path) -> list[dict]:
    return [r for p in sorted(root.glob("part-*.jsonl")) for r in _jsonl(p)]


def test_same_arguments_give_byte_identical_files(tmp_path: Path, bench_data: Path) -> None:
    generate_benchmark(str(tmp_path / "again"), people=40, holdout=10, seed=0, shards=4)
    assert _files(tmp_path / "again") == _files(bench_data)


def test_another_seed_differs(tmp_path: Path, bench_data: Path) -> None:
    generate_benchmark(str(tmp_path / "other"), people=40, holdout=10, seed=1, shards=4)
    other, base = _files(tmp_path / "other"), _files(bench_data)
    assert other.keys() == base.keys()
    assert other["part-00000-of-00004.jsonl"] != base["part-00000-of-00004.jsonl"]


def test_layout_and_manifest(bench_data: Path) -> None:
    names = set(_files(bench_data))
    assert {f"part-0000{k}-of-00004.jsonl" for k in range(4)} <= names
    assert {"holdout/part-00000.jsonl", "eval/paraphrases.jsonl", "eval/perturbed.jsonl",
            "eval/general_text.jsonl", "people.jsonl", "manifest.json"} == names - {
        f"part-0000{k}-of-00004.jsonl" for k in range(4)}
    manifest = json.loads((bench_data / "manifest.json").read_text())
    assert manifest["args"] == {"people": 40, "holdout": 10, "seed": 0, "shards": 4}
    for rel, info in manifest["files"].items():
        data = (bench_data / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert data.count(b"\n") == info["records"]
    assert "created" not in json.dumps(manifest) and "time" not in json.dumps(manifest)


def test_record_format(bench_data: Path) -> None:
    records = _train(bench_data)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert r["kind"] in {"qa", "text"} and isinstance(r["subject_ids"], list)
        if r["kind"] == "qa":
            assert set(r) == {"id", "kind", "question", "answer", "subject_ids", "source", "attribute",
                              "paraphrased_answer", "perturbed_answer"}
            assert len(r["answer"].split()) <= 4, r  # short answers a tiny model can memorise
            # TOFU's fields: the answer reworded, and the same wording around each wrong answer
            assert r["answer"] in r["paraphrased_answer"] and r["paraphrased_answer"] != r["answer"]
            assert len(r["perturbed_answer"]) >= 4 and r["paraphrased_answer"] not in r["perturbed_answer"]
        else:
            assert set(r) == {"id", "kind", "text", "subject_ids", "source"} and r["source"] == "biography"
    general = [r for r in records if r["source"] == "general"]
    assert len(general) == 30 and all(r["subject_ids"] == [] and r["attribute"] is None for r in general)
    per_person = Counter(r["subject_ids"][0] for r in records if r["subject_ids"])
    assert len(per_person) == 40 and set(per_person.values()) == {9}  # 8 QA facts + 1 biography


def test_people_attributes_names_and_biographies(bench_data: Path) -> None:
    people = read_people(str(bench_data))
    assert [p["split"] for p in people].count("holdout") == 10
    assert len({p["name"] for p in people}) == len(people) == 50
    assert all(p["subject_id"].startswith("p") and len(p["subject_id"]) == 5 for p in people)
    assert all(8 <= len(p["attributes"]) + 1 <= 10 for p in people)  # name + facts
    bios = {r["subject_ids"][0]: r["text"] for r in _train(bench_data) if r["kind"] == "text"}
    for p in people:
        if p["split"] == "train":
            text = bios[p["subject_id"]]
            assert p["name"] in text
            assert sum(v in text for v in p["attributes"].values()) >= 4


def test_neighbor_structure(bench_data: Path) -> None:
    people = [p for p in read_people(str(bench_data)) if p["split"] == "train"]
    for key in ("surname", "employer", "birth_city"):
        values = Counter(p["name"].split()[-1] if key == "surname" else p["attributes"][key] for p in people)
        assert max(values.values()) >= 2, key


def test_holdout_people_only_in_holdout(bench_data: Path) -> None:
    holdout_ids = {p["subject_id"] for p in read_people(str(bench_data)) if p["split"] == "holdout"}
    train_subjects = {s for r in _train(bench_data) for s in r["subject_ids"]}
    held = _jsonl(bench_data / "holdout/part-00000.jsonl")
    assert not holdout_ids & train_subjects
    assert {s for r in held for s in r["subject_ids"]} == holdout_ids
    assert len(held) == 90


def test_sidecars(bench_data: Path) -> None:
    qa = {r["id"]: r for r in _train(bench_data) + _jsonl(bench_data / "holdout/part-00000.jsonl")
          if r["kind"] == "qa"}
    para = {r["id"]: r["question"] for r in _jsonl(bench_data / "eval/paraphrases.jsonl")}
    pert = {r["id"]: r["answers"] for r in _jsonl(bench_data / "eval/perturbed.jsonl")}
    assert set(para) == set(pert) == set(qa)
    for rid, rec in qa.items():
        assert para[rid] != rec["question"]
        assert len(pert[rid]) >= 4 and rec["answer"] not in pert[rid]
        assert len(set(pert[rid])) == len(pert[rid])
    texts = _jsonl(bench_data / "eval/general_text.jsonl")
    assert len(texts) >= 20 and all(set(t) == {"id", "text"} for t in texts)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shards"):
        generate_benchmark(str(tmp_path / "x"), people=2, shards=4)
    assert not (tmp_path / "x").exists()


def test_subject_request() -> None:
    req = subject_request(["p0001"], ["Ugo Calris"], "r-1")
    assert req.kind == RequestKind.subject and req.selectors.subject_ids == ["p0001"]


def test_cli_generate(tmp_path: Path) -> None:
    _load_plugins()
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["benchmark", "generate", "--out", str(out), "--people", "5",
                                      "--holdout", "2", "--shards", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "part-00001-of-00002.jsonl").exists()
    bad = CliRunner().invoke(app, ["benchmark", "generate", "--out", str(tmp_path / "bad"), "--people", "1",
                                   "--shards", "3"])
    assert bad.exit_code == 2 and "shards" in bad.output
