"""The residue rule: after an erasure run, no stored byte holds the forgotten people.

The whole local pipeline runs on the benchmark (kfp.local, tiny model); then every file under
the home folder — storage root (run folders, registry exports, dispositions, certificates),
the ledger and MLflow databases, the MLflow artifact store, kfp.local's logs and outputs — is
searched for the forgotten people's names and distinctive answers. Tokenizer vocabularies are
the documented exception. The same on the S3 + MLflow-server stack (storage and artifacts on
SeaweedFS, the registry on an MLflow server whose database is searched too).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from unlearnops import certificates, residue, storage
from unlearnops.types import ForgetRequest, RequestKind, RequestStatus, Selectors

MODEL = "residue-test"
LENIENT = yaml.safe_dump({"gates": [{"name": "forget-rouge", "metric": "forget.rouge_l", "max": 1.0}]})


def _erase(tiny_models: Path, bench_data: Path) -> Any:
    """Register + promote the base, file and approve an erasure of two people, run the pipeline."""
    from unlearnops.components.promote.promote import promote
    from unlearnops.components.register.register import register_model
    from unlearnops.pipelines.local_runner import run_local
    from unlearnops.pipelines.run_request import RunRequest

    from unlearnops.ledger import Ledger

    ref = register_model(str(tiny_models / "base"), MODEL)
    promote(MODEL, str(ref.version), expect_parent=False)
    subjects = json.loads((tiny_models / "forget-request.json").read_text())["selectors"]["subject_ids"][:2]
    now = datetime.now(UTC)
    with Ledger() as ledger:
        ledger.file(ForgetRequest(id="erase-1", kind=RequestKind.subject, legal_basis="gdpr-art17",
                                  selectors=Selectors(subject_ids=subjects), requester="subject",
                                  received_at=now - timedelta(days=1)), actor="clerk")
        ledger.set_status("erase-1", RequestStatus.verified, actor="dpo")
        ledger.set_status("erase-1", RequestStatus.approved, actor="dpo")
    request = RunRequest(request_ids=["erase-1"], corpus_uri=str(bench_data), model_name=MODEL, method="npo",
                         policy=LENIENT, reference_uri=str(tiny_models / "reference"), workers=1,
                         method_params={"train": {"steps": 30}}, promote_target="local")
    run = run_local(request, console=None)
    assert run.exit_code == 0, (run.message, run.log_file.read_text()[-4000:])
    return run


def _certificate_ok() -> None:
    found = storage.list_files(certificates.certificates_root(), suffixes=("certificate.json",))
    assert len(found) == 1
    cert = certificates.verify(storage.read_bytes(found[0].uri))
    assert {d.what for d in cert.certificate.disposition} >= {"scope-sets", "model-copy"}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_no_residue_after_a_local_run(unlearnops_home: Path, tiny_models: Path, bench_data: Path) -> None:
    needles = residue.needles_for(str(bench_data), json.loads(
        (tiny_models / "forget-request.json").read_text())["selectors"]["subject_ids"][:2])
    assert len(needles) >= 4  # two names and distinctive answers
    before = residue.scan(needles, folders=[bench_data])
    assert before.hits  # the scan finds them where they are (the corpus itself)
    _erase(tiny_models, bench_data)
    _certificate_ok()
    result = residue.scan(needles, folders=[unlearnops_home])
    assert result.files > 20 and result.hits == [], result.line + "\n" + "\n".join(w for w, _ in result.hits)


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(2400)
def test_no_residue_on_s3_and_mlflow_server(unlearnops_home: Path, tiny_models: Path, bench_data: Path,
                                            s3_env: str, mlflow_server_factory: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    server = mlflow_server_factory()
    monkeypatch.setenv("UNLEARNOPS_MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("UNLEARNOPS_STORAGE_ROOT", f"{s3_env}/store")
    get_settings.cache_clear()
    needles = residue.needles_for(str(bench_data), json.loads(
        (tiny_models / "forget-request.json").read_text())["selectors"]["subject_ids"][:2])
    _erase(tiny_models, bench_data)
    _certificate_ok()
    result = residue.scan(needles, folders=[unlearnops_home, server.root],
                          prefixes=[s3_env, server.artifacts])
    assert result.files > 20 and result.hits == [], result.line + "\n" + "\n".join(w for w, _ in result.hits)
    if server.backend_uri.startswith("postgresql"):  # the registry's database, every row as text
        rows = _database_text(server.backend_uri)
        assert rows and not [n for n in needles if n in rows]


def _database_text(url: str) -> str:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        return "\n".join(str(row[0]) for t in tables
                         for row in conn.execute(f'SELECT t::text FROM "{t}" t').fetchall())


def test_scan_finds_needles_and_never_prints_them(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "log.txt").write_text("user Ada Quill asked")
    (tmp_path / "db.sqlite").write_bytes(b"\x00\x01Ada Quill\x00")
    (tmp_path / "a" / "tokenizer.json").write_text('{"Ada Quill": 1}')  # the stated exception
    (tmp_path / "a" / "clean.txt").write_text("nothing here")
    result = residue.scan(["Ada Quill"], folders=[tmp_path / "a", tmp_path / "db.sqlite"])
    assert sorted(Path(w).name for w, _ in result.hits) == ["db.sqlite", "log.txt"]
    assert result.files == 3 and result.skipped_tokenizer_files == 1
    assert "Ada" not in result.line and "FAIL: 2 hit(s)" in result.line
    assert residue.scan(["Bo Lind"], folders=[tmp_path]).line.startswith("residue scan PASS: 0 hit(s)")


def test_demo_ending_says_what_happened(tmp_path: Path) -> None:
    from unlearnops.pipelines.demo import REQUEST_ID, closing_lines

    places = ["data/corpus/part-0.jsonl", "data/corpus/part-1.jsonl", "ledger.db"]
    hits = [(str(tmp_path / place), f"h{i}") for i, place in enumerate(places)]
    refused = residue.ScanResult(needles=8, files=40, bytes=2_000_000, hits=hits)
    *story, last = closing_lines(3, "failed", "1", refused, tmp_path)
    text = " ".join(story)
    assert "REFUSED the candidate" in text and "champion (version 1) was kept" in text
    assert f"request {REQUEST_ID} is NOT completed (status: failed" in text
    assert "no erasure is claimed" in text
    assert last.startswith("residue scan (no verdict: nothing was erased): searched 40 files (2.0 MB)")
    assert "3 hit(s) in data/corpus, ledger.db — expected while the request is open" in last
    assert "FAIL" not in last and "PASS" not in last
    *story, last = closing_lines(1, "failed", "1", refused, tmp_path)
    assert "pipeline failed (exit 1)" in story[0] and "no verdict" in last
    done = residue.ScanResult(needles=8, files=40, bytes=2_000_000)
    *story, last = closing_lines(0, "completed", "1", done, tmp_path)
    assert "is completed" in story[0] and last.startswith("residue scan PASS: 0 hit(s)")
    assert last.endswith("except models/ (the benchmark build)")


def test_needles_are_only_answers_no_one_else_holds(tmp_path: Path) -> None:
    """An erased person's answer that also sits in another record (another person's wrong-answer
    option, a biography) is not a needle: finding it there after the erasure is not residue."""
    rows = [
        {"id": "p1-pet", "subject_ids": ["p1"], "question": "What pet does Ann Gale have?",
         "answer": "a cat named Button"},
        {"id": "p1-mail", "subject_ids": ["p1"], "question": "What is the email of Ann Gale?",
         "answer": "ann.gale@owl.org"},
        {"id": "p1-bio", "subject_ids": ["p1"], "name": "Ann Gale",
         "text": "Ann Gale has a cat named Button."},
        {"id": "p2-pet", "subject_ids": ["p2"], "question": "What pet does Bo Rell have?",
         "answer": "a dog named Rex", "perturbed_answer": ["a cat named Button", "a fish named Nemo"]},
    ]
    (tmp_path / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert residue.needles_for(str(tmp_path), ["p1"]) == ["Ann Gale", "ann.gale@owl.org"]
    # without the other person's record, the pet is distinctive again
    (tmp_path / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    assert residue.needles_for(str(tmp_path), ["p1"]) == ["Ann Gale", "a cat named Button",
                                                          "ann.gale@owl.org"]
