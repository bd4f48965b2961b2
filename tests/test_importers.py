"""``unlearnops benchmark import``: small synthetic files in TOFU's and MUSE's exact formats (the
locuslab/TOFU JSON Lines with its field names; a muse-bench corpus folder) → corpus + requests,
resolved into a scope whose records carry TOFU's truth-ratio fields. No download anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from unlearnops.components.evaluate.metrics import pairs_for
from unlearnops.components.scope.resolve import read_set, resolve_scope

from unlearnops.cli import _load_plugins, app
from unlearnops.data.importers import ImportFormatError, import_benchmark
from unlearnops.ledger import load_request_file

AUTHORS = 6  # × 20 QA each, TOFU's layout
runner = CliRunner()
_load_plugins()  # registers the benchmark commands


def _jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _qa(author: int, k: int) -> dict:
    return {"question": f"What is fact {k} about author {author}?", "answer": f"Fact {k} of author {author}."}


def _perturbed(row: dict) -> dict:
    return {**row, "paraphrased_question": "Tell me: " + row["question"],
            "paraphrased_answer": "Indeed, " + row["answer"],
            "perturbed_answer": [row["answer"].replace("Fact", w) for w in ("Lie", "Myth", "Rumour")]}


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("tofu")
    full = [_qa(a, k) for a in range(AUTHORS) for k in range(20)]
    _jsonl(src / "full.json", full)
    _jsonl(src / "forget10.json", full[-40:])                 # the last two authors
    _jsonl(src / "forget05.json", full[-20:])
    _jsonl(src / "retain90.json", full[:-40])
    _jsonl(src / "forget10_perturbed.json", [_perturbed(r) for r in full[-40:]])
    _jsonl(src / "retain_perturbed.json", [_perturbed(r) for r in full[:20]])
    _jsonl(src / "holdout10.json", [_qa(100 + a, k) for a in range(2) for k in range(20)])
    _jsonl(src / "real_authors_perturbed.json", [
        {"question": "Who wrote 'Hamlet'?", "answer": "William Shakespeare",
         "perturbed_answer": ["Charles Dickens", "Mark Twain", "Jane Austen"]}])
    (src / "world_facts.json").write_text(json.dumps([{"question": "Capital of France?", "answer": "Paris"}]))
    return src


def test_tofu_import_writes_corpus_and_requests(tofu_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    result = runner.invoke(app, ["benchmark", "import", "--format", "tofu", str(tofu_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "120 training records about 6 subjects" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["holdout_records"] == 40 and manifest["counts"]["real_authors"] == 1
    assert manifest["requests"] == ["requests/forget05.json", "requests/forget10.json"]
    (request,) = load_request_file(str(out / "requests/forget10.json"))
    assert request.selectors.subject_ids == ["tofu-author-004", "tofu-author-005"]
    records = [json.loads(x) for f in sorted(out.glob("part-*.jsonl")) for x in f.read_text().splitlines()]
    assert len(records) == 120 and records[0]["subject_ids"] == ["tofu-author-000"]
    forget = [r for r in records if r["subject_ids"] == ["tofu-author-005"]]
    assert forget[0]["paraphrased_answer"].startswith("Indeed, ") and len(forget[0]["perturbed_answer"]) == 3
    world = [json.loads(x) for x in (out / "eval/world_facts.jsonl").read_text().splitlines()]
    assert world[0]["answer"] == "Paris" and world[0]["subject_ids"] == []

    scope = tmp_path / "scope"
    resolve_scope([request], str(out), str(scope), seed=0, max_share=0.5)
    scoped = list(read_set(str(scope), "forget"))
    assert len(scoped) == 40 and all(r["paraphrased_answer"] for r in scoped)
    q = "Question: " + scoped[0]["question"] + "\nAnswer:"
    assert pairs_for(scoped[:1], "para") == [(q, " " + scoped[0]["paraphrased_answer"])]  # TOFU's pairs
    assert len(list(read_set(str(scope), "holdout"))) > 0


def test_tofu_import_from_retain_forget_pair(tofu_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "pair"
    src.mkdir()
    for name in ("retain90.json", "forget10.json"):
        (src / name).write_text((tofu_dir / name).read_text())
    manifest = import_benchmark("tofu", src, str(tmp_path / "c"))
    assert manifest["counts"]["train_records"] == 120 and manifest["requests"] == ["requests/forget10.json"]


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFormatError, match="full.json"):
        import_benchmark("tofu", tmp_path / "empty", str(tmp_path / "c1"))
    _jsonl(tmp_path / "bad/full.json", [{"question": "q"}])
    with pytest.raises(ImportFormatError, match="row 1.*'answer'"):
        import_benchmark("tofu", tmp_path / "bad", str(tmp_path / "c2"))
    with pytest.raises(ImportFormatError, match="no MUSE forget data"):
        import_benchmark("muse", tmp_path / "empty", str(tmp_path / "c3"))
    result = runner.invoke(app, ["benchmark", "import", "--format", "squad", str(tmp_path), "--out",
                                 str(tmp_path / "c4")])
    assert result.exit_code == 2 and "valid: tofu, muse" in result.output
    result = runner.invoke(app, ["benchmark", "import", "--format", "muse", str(tmp_path / "nope"), "--out",
                                 str(tmp_path / "c5")])
    assert result.exit_code == 2 and "not a folder" in result.output
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c5").exists()  # nothing half-written


def test_muse_import(tmp_path: Path) -> None:
    src = tmp_path / "news"
    (src / "raw").mkdir(parents=True)
    story = "Alpha story one about the harbour."
    (src / "raw/forget.txt").write_text(f"{story}\n\nAlpha story two about the mayor.\n")
    (src / "raw/retain1.txt").write_text("Beta report on weather.\n\nBeta report on trains.\n")
    (src / "raw/holdout.txt").write_text("Gamma piece never trained on.\n")
    (src / "verbmem").mkdir()
    verbmem = [{"prompt": "Alpha story one", "gt": " about the harbour."}]
    (src / "verbmem/forget.json").write_text(json.dumps(verbmem))
    (src / "knowmem").mkdir()
    qas = {"forget_qa": ("Who is Alpha?", "A mayor"), "retain_qa": ("What is Beta?", "Weather")}
    for part, (q, a) in qas.items():
        (src / f"knowmem/{part}.json").write_text(json.dumps([{"question": q, "answer": a}]))
    (src / "privleak").mkdir()
    (src / "privleak/holdout.json").write_text(json.dumps(["Delta text held out."]))
    out = tmp_path / "corpus"
    result = runner.invoke(app, ["benchmark", "import", "--format", "muse", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for f in sorted(out.glob("part-*.jsonl")) for x in f.read_text().splitlines()]
    verb = [r for r in records if r["source"] == "muse-verbmem"]
    assert verb[0]["text"] == story and verb[0]["continuation"] == " about the harbour."
    assert pairs_for(verb, "continue") == [("Alpha story one", " about the harbour.")]
    assert sum(r["subject_ids"] == ["muse-forget"] for r in records) == 4  # 2 raw + verbmem + QA
    holdout = [json.loads(x) for x in (out / "holdout/part-00000.jsonl").read_text().splitlines()]
    assert {r["text"] for r in holdout} == {"Gamma piece never trained on.", "Delta text held out."}
    (request,) = load_request_file(str(out / "requests/forget.json"))
    assert request.selectors.subject_ids == ["muse-forget"]
