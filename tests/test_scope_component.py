"""The scope step as a KFP component (python_func) and as the `unlearnops scope resolve` CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner
from unlearnops.components.scope.component import resolve_scope_op
from unlearnops.components.scope.resolve import read_manifest, read_set

from unlearnops.cli import _load_plugins, app
from unlearnops.data.generate import read_people, subject_request
from unlearnops.ledger import Ledger


def _people(corpus: Path) -> list[dict]:
    return [p for p in read_people(str(corpus)) if p["split"] == "train"]


def test_component_resolves_ledger_requests(bench_data: Path, tmp_path: Path, unlearnops_home: Path) -> None:
    people = _people(bench_data)
    with Ledger() as ledger:
        ledger.file(subject_request([people[0]["subject_id"]], request_id="req-a"))
        ledger.file(subject_request([people[1]["subject_id"]], [people[1]["name"]], request_id="req-b"))
    out = str(tmp_path / "scope")
    assert resolve_scope_op.python_func(request_ids=["req-a", "req-b"], corpus_uri=str(bench_data),
                                        out_uri=out, retain_multiple=1.0, seed=3) == out
    manifest = read_manifest(out)
    assert manifest.request_ids == ["req-a", "req-b"] and manifest.seed == 3
    # retain-train: retain_multiple x forget, plus the hard negatives (shared attributes, not neighbors)
    hard = [r for r in read_set(out, "retain") if r.get("retain_reason", "").startswith("hard_negative_")]
    assert manifest.sets["forget"].count == 18 and manifest.sets["retain"].count == 18 + len(hard)
    assert {r["subject_ids"][0] for r in read_set(out, "forget")} == {p["subject_id"] for p in people[:2]}


def test_cli_resolves_request_files_and_ledger_ids(bench_data: Path, tmp_path: Path,
                                                   unlearnops_home: Path) -> None:
    _load_plugins()
    people = _people(bench_data)
    req_file = tmp_path / "req.json"
    req_file.write_text(subject_request([people[2]["subject_id"]], request_id="from-file")
                        .model_dump_json())
    with Ledger() as ledger:
        ledger.file(subject_request([people[3]["subject_id"]], request_id="from-ledger"))
    out = tmp_path / "scope"
    result = CliRunner().invoke(app, ["scope", "resolve", "--request", str(req_file),
                                      "--request", "from-ledger", "--corpus", str(bench_data),
                                      "--out", str(out), "--retain-multiple", "1.5", "--seed", "2",
                                      "--retain-eval-multiple", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["request_ids"] == ["from-file", "from-ledger"]
    hard = sum(1 for line in (out / "retain.jsonl").read_text().splitlines() if "hard_negative_" in line)
    assert manifest["sets"]["retain"]["count"] == 27 + hard  # 1.5 x 18 forget records (+ hard negatives)
    assert manifest["sets"]["retain_eval"]["count"] == 18


def test_cli_bad_input_exits_2(bench_data: Path, tmp_path: Path, unlearnops_home: Path) -> None:
    _load_plugins()
    runner = CliRunner()
    base = ["--corpus", str(bench_data), "--out", str(tmp_path / "s")]
    unknown = runner.invoke(app, ["scope", "resolve", "--request", "no-such-request", *base])
    assert unknown.exit_code == 2 and "no-such-request" in unknown.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("id: nobody\nkind: subject\nselectors: {names: [Nobody Atall]}\n"
                     "legal_basis: gdpr-art17\nrequester: t\n")
    result = runner.invoke(app, ["scope", "resolve", "--request", str(empty), *base])
    assert result.exit_code == 2 and "empty forget set" in result.output and "nobody" in result.output
    wide = tmp_path / "wide.yaml"
    wide.write_text("id: wide\nkind: pattern\nselectors: {patterns: ['\\?']}\n"
                    "legal_basis: other\nrequester: t\n")
    result = runner.invoke(app, ["scope", "resolve", "--request", str(wide), *base])
    assert result.exit_code == 2 and "allow-large-scope" in result.output
    assert runner.invoke(app, ["scope", "resolve", "--request", str(wide), *base,
                               "--allow-large-scope"]).exit_code == 0
    malformed = tmp_path / "bad.yaml"
    malformed.write_text("id: x\nkind: subject\nselectors: {}\nlegal_basis: gdpr-art17\nrequester: t\n")
    result = runner.invoke(app, ["scope", "resolve", "--request", str(malformed), *base])
    assert result.exit_code == 2 and "selectors" in result.output
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = runner.invoke(app, ["scope", "resolve", "--request", str(empty), "--corpus", str(bench_data),
                                 "--out", str(blocker / "scope")])
    assert result.exit_code == 2 and "is a file" in result.output and result.exception is not None
    assert blocker.read_text() == "x"


def test_cli_fold_accents_flag_and_setting(tmp_path: Path, unlearnops_home: Path, monkeypatch) -> None:
    """Issue 12: accent folding of names is a setting (match_fold_accents) and a resolve flag."""
    from unlearnops.settings import get_settings

    _load_plugins()
    corpus = tmp_path / "c"
    corpus.mkdir()
    texts = {"a": "José Alvarez signed", "b": "Jose Alvarez signed", "c": "JOSÉ  ALVAREZ, again",
             **{f"f{i}": f"filler sentence number {i}" for i in range(30)}}
    (corpus / "part-00000.jsonl").write_text("".join(
        json.dumps({"id": k, "kind": "text", "text": t, "subject_ids": [], "source": "web"}) + "\n"
        for k, t in texts.items()))
    req = tmp_path / "r.yaml"
    req.write_text("id: r\nkind: subject\nselectors: {names: [Jose Alvarez]}\nlegal_basis: other\n"
                   "requester: t\n")

    def forget(*flags: str) -> tuple[list[str], bool]:
        out = tmp_path / f"s{len(list(tmp_path.glob('s*')))}"
        result = CliRunner().invoke(app, ["scope", "resolve", "--request", str(req), "--corpus", str(corpus),
                                          "--out", str(out), *flags])
        assert result.exit_code == 0, result.output
        ids = [r["id"] for r in read_set(str(out), "forget")]
        return ids, read_manifest(str(out)).options["fold_accents"]

    assert forget() == (["b"], False)  # accents kept by default
    assert forget("--fold-accents") == (["a", "b", "c"], True)
    monkeypatch.setenv("UNLEARNOPS_MATCH_FOLD_ACCENTS", "true")
    get_settings.cache_clear()
    assert forget() == (["a", "b", "c"], True)
    assert forget("--no-fold-accents") == (["b"], False)
