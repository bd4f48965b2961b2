"""``unlearnops request file|list|show`` against a temp home's SQLite ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unlearnops.cli.ledger  # noqa: F401 - registers the request commands
from unlearnops.cli import app
from unlearnops.ledger import Ledger

REQUESTS = """\
- id: req-a
  kind: subject
  selectors: {subject_ids: [person-0001], names: ["Ada Quill"]}
  legal_basis: gdpr-art17
  requester: dpo@example.org
  deadline: 2030-12-31T00:00:00Z
- id: req-b
  kind: pattern
  selectors: {patterns: ["ACME-\\\\d{4}"]}
  legal_basis: copyright
  legal_basis_detail: notice 42
  requester: legal@example.org
"""

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr (whitespace-normalised: rich wraps long messages)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "requests.yaml"
    path.write_text(REQUESTS)
    return path


def test_file_list_show(unlearnops_home: Path, request_file: Path) -> None:
    code, out, err = invoke("request", "file", str(request_file))
    assert code == 0, err
    assert "filed 2 request(s)" in out and "req-a" in out and "req-b" in out
    assert (unlearnops_home / "ledger.db").is_file()

    code, out, _ = invoke("request", "list")
    assert code == 0 and "req-a" in out and "req-b" in out and "received" in out

    code, out, _ = invoke("request", "list", "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == ["req-a", "req-b"]

    Ledger().set_status("req-a", "verified", reason="id checked", actor="dpo")
    Ledger().set_status("req-a", "approved", reason="ok", actor="dpo")
    Ledger().set_status("req-a", "scheduled", reason="nightly", actor="scheduler")
    code, out, _ = invoke("request", "list", "--status", "scheduled", "--json")
    assert [r["id"] for r in json.loads(out)] == ["req-a"]
    code, out, _ = invoke("request", "list", "--status", "completed")
    assert code == 0 and "no requests with status completed" in out

    code, out, _ = invoke("request", "show", "req-a")
    assert code == 0
    assert "nightly" in out and "scheduler" in out and "filed" in out
    assert "person-0001" not in out and "Ada Quill" not in out  # counts and keyed hashes only
    code, out, _ = invoke("request", "show", "req-b", "--json")
    doc = json.loads(out)
    assert doc["legal_basis_detail"] == "notice 42"
    assert [h["status"] for h in doc["history"]] == ["received"]

    # Filing the same file again changes nothing.
    code, _, err = invoke("request", "file", str(request_file))
    assert code == 0, err
    assert len(Ledger().get("req-a").history) == 4


def test_malformed_file_exits_2_and_writes_nothing(unlearnops_home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(REQUESTS.replace("legal_basis: copyright", "legal_basis: copyrite"))
    code, out, err = invoke("request", "file", str(bad))
    assert code == 2
    assert "request 2 of 2 (id 'req-b')" in err
    assert "field 'legal_basis'" in err and "copyrite" in err
    assert "nothing was filed" in err
    code, out, _ = invoke("request", "list", "--json")
    assert json.loads(out) == []  # req-a, valid, was not filed either


def test_conflicting_refile_exits_2(unlearnops_home: Path, request_file: Path, tmp_path: Path) -> None:
    assert invoke("request", "file", str(request_file))[0] == 0
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps([
        {"id": "req-new", "kind": "document", "selectors": {"record_ids": ["r1"]},
         "legal_basis": "other", "requester": "x"},
        {"id": "req-b", "kind": "pattern", "selectors": {"keywords": ["other"]},
         "legal_basis": "copyright", "requester": "legal@example.org"},
    ]))
    code, _, err = invoke("request", "file", str(changed))
    assert code == 2
    assert "req-b is already filed with different content" in err
    assert [r.id for r in Ledger().list()] == ["req-a", "req-b"]  # req-new not filed


def test_usage_errors(unlearnops_home: Path, tmp_path: Path) -> None:
    code, _, err = invoke("request", "file", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: no such file" in err
    code, _, err = invoke("request", "show", "nope")
    assert code == 1 and "no request 'nope'" in err
    code, _, err = invoke("request", "list", "--status", "done")
    assert code == 2 and "done" in err


def test_bad_ledger_url_exits_1(unlearnops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    monkeypatch.setenv("UNLEARNOPS_LEDGER_URL", "nosuchdb://x/y")
    get_settings.cache_clear()
    code, _, err = invoke("request", "list")
    assert code == 1 and "cannot open the ledger" in err and "UNLEARNOPS_LEDGER_URL" in err


def test_installed_command(unlearnops_home: Path, request_file: Path) -> None:
    """The console script finds the request commands through the entry point."""
    exe = Path(sys.executable).parent / "unlearnops"
    if not exe.is_file():
        pytest.skip("unlearnops console script not installed next to this Python")
    env = {**os.environ, "UNLEARNOPS_HOME": str(unlearnops_home)}
    done = subprocess.run([str(exe), "request", "file", str(request_file), "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in json.loads(done.stdout)] == ["req-a", "req-b"]
    done = subprocess.run([str(exe), "request", "show", "req-a", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["selectors"]["names"] == ["Ada Quill"]


# ------------------------------------------------------------------ guards, actors, deadlines (issues 11, 12)
def as_actor(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Act as ``name`` from now on (the ``actor`` setting)."""
    from unlearnops.settings import get_settings

    monkeypatch.setenv("UNLEARNOPS_ACTOR", name)
    get_settings.cache_clear()


def test_lifecycle_as_two_people(unlearnops_home: Path, request_file: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    as_actor(monkeypatch, "alice")
    assert invoke("request", "file", str(request_file))[0] == 0
    assert invoke("request", "verify", "req-a")[0] == 0
    code, _, err = invoke("request", "approve", "req-a")  # the filer approving her own request
    assert code == 2 and "'alice' filed it and cannot also approve it" in err and "nothing was changed" in err
    assert Ledger().get("req-a").status == "verified"
    as_actor(monkeypatch, "bob")
    assert invoke("request", "approve", "req-a")[0] == 0
    assert invoke("request", "hold", "req-a", "--code", "legal-hold", "-r", "litigation")[0] == 0
    assert invoke("request", "resume", "req-a")[0] == 0
    req = Ledger().get("req-a")
    assert req.status == "approved"
    assert [(c.status.value, c.actor) for c in req.history] == [
        ("received", "alice"), ("verified", "alice"), ("approved", "bob"), ("on-hold", "bob"),
        ("approved", "bob")]
    code, _, err = invoke("request", "deny", "req-b", "--code", "because")
    assert code == 2 and "reason code" in err
    code, _, err = invoke("request", "hold", "req-b")  # deny and hold share one helper: --code required
    assert code == 2 and "--code" in err and Ledger().get("req-b").status == "received"
    assert invoke("request", "cancel", "req-b", "-r", "withdrawn by requester")[0] == 0
    assert Ledger().get("req-b").purged
    code, out, _ = invoke("audit", "verify")
    assert code == 0 and "audit trail intact: 8 event(s)" in out


def test_run_unapproved_is_refused(unlearnops_home: Path, request_file: Path, tmp_path: Path) -> None:
    assert invoke("request", "file", str(request_file))[0] == 0
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "part-0.jsonl").write_text('{"id": "x", "text": "t"}\n')
    import unlearnops.pipelines.cli  # noqa: F401 - registers `unlearnops run`

    code, _, err = invoke("run", "--request", "req-a", "--corpus", str(corpus))
    assert code == 2 and "req-a is 'received': only approved requests run" in err
    assert [c.status.value for c in Ledger().get("req-a").history] == ["received"]


def test_approving_an_unverified_duplicate_is_refused(
        unlearnops_home: Path, request_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke("request", "file", str(request_file))[0] == 0
    dupe = tmp_path / "dupe.yaml"
    dupe.write_text(REQUESTS.split("- id: req-b")[0].replace("req-a", "req-a2"))
    code, out, _ = invoke("request", "file", str(dupe))
    assert code == 0 and "open request req-a" in " ".join(out.split())
    as_actor(monkeypatch, "someone-else")
    code, _, err = invoke("request", "approve", "req-a2")
    assert code == 2 and "req-a2 is not verified; it duplicates open request req-a" in err
    assert Ledger().get("req-a2").status == "received"


def test_extend_once(unlearnops_home: Path, request_file: Path) -> None:
    assert invoke("request", "file", str(request_file))[0] == 0
    before = Ledger().get("req-a").due_at
    code, out, _ = invoke("request", "extend", "req-a", "-r", "complex: many systems")
    assert code == 0 and "(extended)" in out
    assert Ledger().get("req-a").due_at > before
    code, _, err = invoke("request", "extend", "req-a", "-r", "again")
    assert code == 2 and "already extended once" in err
    code, _, err = invoke("request", "extend", "req-b", "-r", "x")  # copyright: no statutory clock
    assert code == 2 and "no statutory deadline" in err


def test_user_text_is_printed_literally(unlearnops_home: Path, tmp_path: Path) -> None:
    """A requester or reference with rich markup ('[/oops]') is shown as typed, never parsed."""
    path = tmp_path / "markup.yaml"
    path.write_text(REQUESTS.replace("legal@example.org", "'[/oops] [bold]x'").replace(
        "legal_basis_detail: notice 42", "legal_basis_detail: '[red]notice[/red]'\n  external_ref: '[/x]'"))
    code, out, err = invoke("request", "file", str(path))
    assert code == 0, err
    code, out, err = invoke("request", "list")
    assert code == 0 and "[/x]" in out, err
    code, out, err = invoke("request", "show", "req-b")
    assert code == 0 and "[/oops] [bold]x" in out and "[red]notice[/red]" in out, err
    code, _, err = invoke("request", "show", "[/nope]")
    assert code == 1 and "no request '[/nope]'" in err


def test_naive_deadline_is_taken_as_utc(unlearnops_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "naive.yaml"
    path.write_text(REQUESTS.replace("2030-12-31T00:00:00Z", "2030-12-31T00:00:00").replace(
        "  requester: legal@example.org", "  requester: legal@example.org\n  deadline: 2031-01-02 10:00"))
    assert invoke("request", "file", str(path))[0] == 0
    code, out, err = invoke("request", "list")
    assert code == 0, err
    req = Ledger().get("req-b")
    assert req.deadline is not None and req.deadline.utcoffset() is not None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("requester", "x" * 300, "at most 256 characters"),
    ("requester", "a\u0000b", "NUL character"),
    ("legal_basis_detail", "y" * 5000, "at most 4000 characters"),
    ("external_ref", "ref\u0000", "NUL character"),
])
def test_size_limits_and_nul(unlearnops_home: Path, tmp_path: Path, field: str, value: str,
                             message: str) -> None:
    doc = {"id": "big", "kind": "subject", "selectors": {"subject_ids": ["p1"]},
           "legal_basis": "gdpr-art17", "requester": "r", field: value}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    code, _, err = invoke("request", "file", str(path))
    assert code == 2 and f"field '{field}'" in err and message in err and "nothing was filed" in err
    assert Ledger().list() == []


def test_list_flags_overdue_and_due_soon(unlearnops_home: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    path = tmp_path / "due.json"
    path.write_text(json.dumps([
        {"id": "late", "kind": "subject", "selectors": {"subject_ids": ["p1"]}, "legal_basis": "gdpr-art17",
         "requester": "r", "received_at": (now - timedelta(days=40)).isoformat()},
        {"id": "soon", "kind": "subject", "selectors": {"subject_ids": ["p2"]}, "legal_basis": "ccpa",
         "requester": "r", "received_at": (now - timedelta(days=41)).isoformat()},
        {"id": "fine", "kind": "subject", "selectors": {"subject_ids": ["p3"]}, "legal_basis": "ccpa",
         "requester": "r"},
    ]))
    assert invoke("request", "file", str(path))[0] == 0
    code, out, _ = invoke("request", "list")
    ids = {"late", "soon", "fine"}
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()[:4] in ids}
    assert code == 0 and "overdue" in rows["late"] and "due-soon" in rows["soon"]
    assert "overdue" not in rows["fine"] and "due-soon" not in rows["fine"]


def test_expected_completion_is_the_next_batch_run(unlearnops_home: Path, request_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    as_actor(monkeypatch, "alice")
    assert invoke("request", "file", str(request_file))[0] == 0
    assert invoke("request", "verify", "req-a")[0] == 0
    as_actor(monkeypatch, "bob")
    assert invoke("request", "approve", "req-a")[0] == 0
    assert invoke("request", "schedule", "req-a", "--at", "2030-06-01T10:00:00Z")[0] == 0
    code, out, _ = invoke("request", "show", "req-a")  # no batch schedule configured: the --at time
    assert code == 0 and "expected completion: 2030-06-01 10:00 UTC (request schedule --at)" in out
    monkeypatch.setenv("UNLEARNOPS_BATCH_CRON", "0 30 2 * * *")
    get_settings.cache_clear()
    code, out, _ = invoke("request", "show", "req-a")
    shown = " ".join(out.split())
    assert code == 0 and "02:30 UTC (next compliance-batch run, batch_cron '0 30 2 * * *')" in shown
    expected = Ledger().get("req-a").expected_at
    assert expected is not None and (expected.hour, expected.minute) == (2, 30)
    assert Ledger().get("req-b").expected_at is None  # not approved: no run will pick it up
    code, out, _ = invoke("request", "list", "--json")
    assert code == 0 and [r["expected_at"] is not None for r in json.loads(out)] == [True, False]
