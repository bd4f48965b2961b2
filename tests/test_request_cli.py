"""``unlearnops request file|list|show`` against a temp home's SQLite ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unlearnops.ledger_cli  # noqa: F401 - registers the request commands
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
    assert code == 0 and "req-a" in out and "req-b" in out and "pending" in out

    code, out, _ = invoke("request", "list", "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == ["req-a", "req-b"]

    Ledger().set_status("req-a", "scheduled", reason="nightly", actor="scheduler")
    code, out, _ = invoke("request", "list", "--status", "scheduled", "--json")
    assert [r["id"] for r in json.loads(out)] == ["req-a"]
    code, out, _ = invoke("request", "list", "--status", "unlearned")
    assert code == 0 and "no requests with status unlearned" in out

    code, out, _ = invoke("request", "show", "req-a")
    assert code == 0
    assert "person-0001" in out and "nightly" in out and "scheduler" in out and "filed" in out
    code, out, _ = invoke("request", "show", "req-b", "--json")
    doc = json.loads(out)
    assert doc["legal_basis_detail"] == "notice 42"
    assert [h["status"] for h in doc["history"]] == ["pending"]

    # Filing the same file again changes nothing.
    code, _, err = invoke("request", "file", str(request_file))
    assert code == 0, err
    assert len(Ledger().get("req-a").history) == 2


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
