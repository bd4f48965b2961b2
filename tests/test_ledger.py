"""The request ledger on SQLite and PostgreSQL: filing, status moves, history, concurrency, request files."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from unlearnops.ledger import (
    DuplicateRequest,
    InvalidStatusMove,
    Ledger,
    LedgerError,
    RequestFileError,
    RequestNotFound,
    StatusConflict,
    hash_subject,
    history_table,
    load_request_file,
    metadata,
)
from unlearnops.types import STATUS_MOVES, ForgetRequest, RequestStatus

S = RequestStatus


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database URL: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sub' / 'ledger.db'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    engine = create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as led:
        yield led


def make_request(rid: str = "req-1", **overrides: Any) -> ForgetRequest:
    data: dict[str, Any] = {
        "id": rid,
        "kind": "subject",
        "selectors": {"subject_ids": ["person-0001"], "names": ["Ada Quill"]},
        "legal_basis": "gdpr-art17",
        "requester": "dpo@example.org",
        "received_at": datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        "deadline": datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
    }
    data.update(overrides)
    return ForgetRequest.model_validate(data)


# ------------------------------------------------------------------ filing and reading
def test_file_and_get(ledger: Ledger) -> None:
    req = make_request(deadline=datetime(2026, 1, 31, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    filed = ledger.file(req)
    assert filed.status == S.pending
    got = ledger.get("req-1")
    assert got.model_dump(exclude={"history", "deadline"}) == req.model_dump(exclude={"history", "deadline"})
    assert got.deadline == datetime(2026, 1, 31, 12, 0, tzinfo=UTC)  # stored as UTC
    assert got.deadline.utcoffset() == timedelta(0)
    assert [(h.status, h.reason, h.actor) for h in got.history] == [(S.pending, "filed", "dpo@example.org")]
    assert got.history[0].at.tzinfo is not None
    # A new Ledger object on the same database sees the same thing.
    with Ledger(ledger.url) as again:
        assert again.get("req-1") == got


def test_file_same_request_twice_is_a_no_op(ledger: Ledger) -> None:
    ledger.file(make_request())
    again = ledger.file(make_request())
    assert len(again.history) == 1
    assert len(ledger.list()) == 1
    # Without an explicit received_at, re-filing the same content (a re-run) is still the same request.
    loose = make_request("req-2").model_dump(exclude={"received_at", "deadline", "status", "history"})
    ledger.file(ForgetRequest.model_validate(loose))
    ledger.file(ForgetRequest.model_validate(loose))
    assert [r.id for r in ledger.list()] == ["req-1", "req-2"]


@pytest.mark.parametrize("change", [
    {"requester": "someone-else"},
    {"selectors": {"subject_ids": ["person-0002"]}},
    {"received_at": datetime(2026, 1, 2, tzinfo=UTC)},
])
def test_file_same_id_different_content_fails(ledger: Ledger, change: dict[str, Any]) -> None:
    ledger.file(make_request())
    with pytest.raises(DuplicateRequest, match="req-1 is already filed with different content"):
        ledger.file(make_request(**change))
    assert ledger.get("req-1").requester == "dpo@example.org"


def test_file_many_is_all_or_nothing(ledger: Ledger) -> None:
    ledger.file(make_request("taken"))
    batch = [make_request("new-1"), make_request("taken", requester="other"), make_request("new-2")]
    with pytest.raises(DuplicateRequest):
        ledger.file_many(batch)
    assert [r.id for r in ledger.list()] == ["taken"]
    with pytest.raises(DuplicateRequest, match="appears twice"):
        ledger.file_many([make_request("x"), make_request("x")])
    filed = ledger.file_many([make_request("new-1"), make_request("new-2")])
    assert [r.id for r in filed] == ["new-1", "new-2"]


def test_new_request_must_be_pending(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="filed as 'pending'"):
        ledger.file(make_request(status="running"))
    assert ledger.list() == []


# ------------------------------------------------------------------ status moves
def test_status_moves_and_history(ledger: Ledger) -> None:
    ledger.file(make_request())
    ledger.set_status("req-1", S.scheduled, reason="nightly batch", actor="scheduler")
    ledger.set_status("req-1", "running", reason="kfp run abc", actor="pipeline")
    done = ledger.set_status("req-1", S.unlearned, reason="gate passed; model v3", actor="pipeline")
    assert done.status == S.unlearned
    assert [(h.status, h.reason, h.actor) for h in done.history] == [
        (S.pending, "filed", "dpo@example.org"),
        (S.scheduled, "nightly batch", "scheduler"),
        (S.running, "kfp run abc", "pipeline"),
        (S.unlearned, "gate passed; model v3", "pipeline"),
    ]
    times = [h.at for h in done.history]
    assert times == sorted(times)
    assert ledger.get("req-1") == done
    with pytest.raises(InvalidStatusMove, match=r"cannot move from 'unlearned' to 'pending'.*none \(final\)"):
        ledger.set_status("req-1", S.pending)


def test_invalid_moves_are_refused(ledger: Ledger) -> None:
    ledger.file(make_request())
    for status in S:
        if status not in STATUS_MOVES[S.pending]:
            with pytest.raises(InvalidStatusMove, match=f"from 'pending' to '{status.value}'"):
                ledger.set_status("req-1", status)
    with pytest.raises(InvalidStatusMove, match="allowed from 'pending': rejected, running, scheduled"):
        ledger.set_status("req-1", S.unlearned)
    with pytest.raises(InvalidStatusMove, match="unknown status 'done'; valid: pending"):
        ledger.set_status("req-1", "done")
    assert len(ledger.get("req-1").history) == 1  # nothing appended by refused moves


def test_failed_can_be_retried(ledger: Ledger) -> None:
    ledger.file(make_request())
    for status in (S.running, S.failed, S.running, S.unlearned):
        ledger.set_status("req-1", status)
    assert [h.status for h in ledger.get("req-1").history][-1] == S.unlearned


def test_expect_is_compare_and_set(ledger: Ledger) -> None:
    ledger.file(make_request())
    with pytest.raises(StatusConflict, match="req-1 is 'pending', expected running or scheduled"):
        ledger.set_status("req-1", S.rejected, expect=[S.scheduled, S.running])
    assert ledger.set_status("req-1", S.scheduled, expect=S.pending).status == S.scheduled


def test_unknown_request(ledger: Ledger) -> None:
    with pytest.raises(RequestNotFound, match="no request 'nope' in the ledger") as info:
        ledger.get("nope")
    assert isinstance(info.value, KeyError)
    with pytest.raises(RequestNotFound):
        ledger.set_status("nope", S.scheduled)


# ------------------------------------------------------------------ queries
def test_list_and_pending_until(ledger: Ledger) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    ledger.file(make_request("a", received_at=base, deadline=base + timedelta(days=30)))
    ledger.file(make_request("b", received_at=base + timedelta(hours=1), deadline=base + timedelta(days=3)))
    ledger.file(make_request("c", received_at=base + timedelta(hours=2), deadline=None))
    ledger.file(make_request("d", received_at=base + timedelta(hours=3), deadline=base + timedelta(days=1)))
    ledger.set_status("d", S.scheduled)
    assert [r.id for r in ledger.list()] == ["a", "b", "c", "d"]
    assert [r.id for r in ledger.list(S.pending)] == ["a", "b", "c"]
    assert [r.id for r in ledger.list("scheduled")] == ["d"]
    assert ledger.list(S.unlearned) == []
    assert [r.id for r in ledger.pending_until(base + timedelta(days=60))] == ["b", "a"]
    assert [r.id for r in ledger.pending_until(base + timedelta(days=3))] == ["b"]
    naive = (base + timedelta(days=3)).replace(tzinfo=None)  # naive means UTC
    assert [r.id for r in ledger.pending_until(naive)] == ["b"]
    east = (base + timedelta(days=3)).astimezone(timezone(timedelta(hours=5)))
    assert [r.id for r in ledger.pending_until(east)] == ["b"]
    assert ledger.pending_until(base) == []


@pytest.mark.services
def test_plain_postgresql_url_uses_psycopg3(pg_url: str) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with Ledger(plain) as led:
        assert led.engine.dialect.driver == "psycopg"
        assert led.list() == []
        metadata.drop_all(led.engine)


def test_default_url_is_the_settings_sqlite(unlearnops_home: Path) -> None:
    with Ledger() as led:
        led.file(make_request())
    assert (unlearnops_home / "ledger.db").is_file()
    with Ledger() as led:
        assert led.get("req-1").id == "req-1"


# ------------------------------------------------------------------ concurrency (several processes)
TOGGLES = 6
OWN = 4


def _worker(url: str, worker: int) -> int:
    """Toggle 'shared' pending<->scheduled TOGGLES times (compare-and-set loop), file own requests."""
    from unlearnops.ledger import InvalidStatusMove as Invalid
    from unlearnops.ledger import Ledger as Led
    from unlearnops.ledger import StatusConflict as Conflict

    with Led(url) as led:
        led.file(make_request("common"))  # everyone files the same request: one row, no error
        moves = 0
        while moves < TOGGLES:
            current = led.get("shared").status
            target = S.scheduled if current == S.pending else S.pending
            try:
                led.set_status("shared", target, reason=f"w{worker}-{moves}", actor=f"w{worker}",
                               expect=current)
                moves += 1
            except (Conflict, Invalid):
                continue
        for k in range(OWN):
            led.file(make_request(f"w{worker}-r{k}"))
        return moves


def test_concurrent_writers_lose_no_update(ledger: Ledger) -> None:
    ledger.file(make_request("shared"))
    workers = 4
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.starmap(_worker, [(ledger.url, w) for w in range(workers)])
    assert results == [TOGGLES] * workers
    shared = ledger.get("shared")
    history = shared.history
    assert len(history) == 1 + workers * TOGGLES
    # Every successful change is recorded exactly once, and the chain of statuses is valid.
    reasons = [h.reason for h in history[1:]]
    assert sorted(reasons) == sorted(f"w{w}-{m}" for w in range(workers) for m in range(TOGGLES))
    for before, after in zip(history, history[1:], strict=False):
        assert after.status in STATUS_MOVES[before.status], (before, after)
    assert shared.status == history[-1].status
    with ledger.engine.connect() as conn:
        seqs = conn.execute(select(history_table.c.seq).where(history_table.c.request_id == "shared")
                            .order_by(history_table.c.seq)).scalars().all()
    assert seqs == list(range(1, len(history) + 1))
    ids = {r.id for r in ledger.list()}
    assert ids == {"shared", "common"} | {f"w{w}-r{k}" for w in range(workers) for k in range(OWN)}
    assert len(ledger.get("common").history) == 1


# ------------------------------------------------------------------ request files
REQUEST_YAML = """\
- id: req-a
  kind: subject
  selectors:
    subject_ids: [person-0001]
    names: ["Ada Quill"]
  legal_basis: gdpr-art17
  requester: dpo@example.org
  deadline: 2026-12-31
- id: req-b
  kind: document
  selectors: {record_ids: [rec-1, rec-2]}
  legal_basis: copyright
  legal_basis_detail: DMCA notice 42
  requester: legal@example.org
"""


def test_load_yaml_list_and_json(tmp_path: Path) -> None:
    path = tmp_path / "reqs.yaml"
    path.write_text(REQUEST_YAML)
    reqs = load_request_file(path)
    assert [r.id for r in reqs] == ["req-a", "req-b"]
    assert reqs[0].deadline is not None and reqs[0].deadline.year == 2026
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"id": "x", "kind": "pattern", "selectors": {"patterns": ["secret-\\d+"]},
                               "legal_basis": "safety", "requester": "red-team"}))
    assert [r.id for r in load_request_file(f"file://{one}")] == ["x"]
    wrapped = tmp_path / "wrapped.yml"
    wrapped.write_text("requests:\n" + "\n".join("  " + line for line in REQUEST_YAML.splitlines()))
    assert [r.id for r in load_request_file(wrapped)] == ["req-a", "req-b"]


@pytest.mark.parametrize(("text", "expected"), [
    ("id: r\nkind: subject\nselectors: {subject_ids: [p]}\nlegal_basis: gdpr-art17\n",
     r"request 1 of 1 \(id 'r'\): field 'requester' is required"),
    ("id: r\nkind: person\nselectors: {subject_ids: [p]}\nlegal_basis: gdpr-art17\nrequester: x\n",
     r"field 'kind': Input should be 'subject', 'document', 'pattern' or 'examples' \(got 'person'\)"),
    ("id: r\nkind: subject\nselectors: {subject_ids: [p]}\nlegal_basis: gdpr\nrequester: x\n",
     r"field 'legal_basis': Input should be 'gdpr-art17'.*\(got 'gdpr'\)"),
    ("id: r\nkind: subject\nselectors: {record_ids: [p]}\nlegal_basis: ccpa\nrequester: x\n",
     r"a 'subject' request needs selectors.subject_ids or selectors.names"),
    ("id: r\nkind: subject\nselectors: {subject_id: [p]}\nlegal_basis: ccpa\nrequester: x\n",
     r"unknown field 'selectors.subject_id'"),
    ("id: r\nkind: subject\nselectors: {subject_ids: p}\nlegal_basis: ccpa\nrequester: x\n",
     r"field 'selectors.subject_ids': Input should be a valid list \(got 'p'\)"),
    ("id: 'has space'\nkind: subject\nselectors: {subject_ids: [p]}\nlegal_basis: ccpa\nrequester: x\n",
     r"field 'id': String should match pattern"),
    ("id: r\nkind: subject\nselectors: {subject_ids: [p]}\nlegal_basis: ccpa\nrequester: x\n"
     "deadline: tomorrow\n", r"field 'deadline': Input should be a valid datetime"),
    ("- 3\n", r"request 1 of 1: expected a mapping of request fields, got int"),
    ("", r"holds no request"),
    ("[]", r"holds no request"),
    ("id: [unclosed\n", r"not valid YAML at line \d+, column \d+"),
])
def test_bad_request_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RequestFileError, match=expected) as info:
        load_request_file(path)
    assert str(path) in str(info.value)


def test_bad_request_files_other(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"id": "r",\n "kind": }')
    with pytest.raises(RequestFileError, match=r"bad.json: not valid JSON at line 2"):
        load_request_file(bad_json)
    dupes = tmp_path / "dupes.yaml"
    dupes.write_text(REQUEST_YAML + REQUEST_YAML)
    with pytest.raises(RequestFileError, match=r"request id\(s\) req-a, req-b appear more than once"):
        load_request_file(dupes)
    second_bad = tmp_path / "second.yaml"
    second_bad.write_text(REQUEST_YAML.replace("requester: legal@example.org", "requester: ''"))
    with pytest.raises(RequestFileError, match=r"request 2 of 2 \(id 'req-b'\): field 'requester'"):
        load_request_file(second_bad)
    with pytest.raises(RequestFileError, match="missing.yaml: no such file"):
        load_request_file(tmp_path / "missing.yaml")


def test_hash_subject() -> None:
    digest = hash_subject("person-0001")
    assert digest == hashlib.sha256(b"person-0001").hexdigest()
    assert len(digest) == 64 and digest != hash_subject("person-0002")
