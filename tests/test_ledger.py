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
from sqlalchemy import create_engine, delete, select, update

from unlearnops import deadlines
from unlearnops.keyed_hash import keyed_hash
from unlearnops.ledger import (
    DuplicateRequest,
    GuardRefused,
    InvalidStatusMove,
    Ledger,
    LedgerError,
    RequestFileError,
    RequestNotFound,
    StatusConflict,
    audit_table,
    load_request_file,
    metadata,
    requests_table,
    selectors_table,
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
    filed = ledger.file(req, actor="clerk")
    assert filed.status == S.received and filed.filed_by == "clerk"
    got = ledger.get("req-1")
    fields = set(ForgetRequest.model_fields) - {"history", "filed_by", "due_at", "selector_hashes"}
    assert got.model_dump(include=fields) == req.model_dump(include=fields)
    assert got.deadline == datetime(2026, 1, 31, 12, 0, tzinfo=UTC)  # stored as UTC
    assert got.deadline.utcoffset() == timedelta(0) and req.deadline.utcoffset() == timedelta(0)
    assert got.due_at == got.deadline  # earlier than GDPR's one month (2026-02-01 12:00)
    assert [(h.status, h.reason, h.actor) for h in got.history] == [(S.received, "filed", "clerk")]
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


def test_new_request_must_be_received(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="filed as 'received'"):
        ledger.file(make_request(status="running"))
    with pytest.raises(LedgerError, match="needs its selectors"):
        ledger.file(make_request(purged=True, selectors={}))
    assert ledger.list() == []


# ------------------------------------------------------------------ status moves and guards
def approve(ledger: Ledger, rid: str = "req-1") -> None:
    """verified and approved by someone other than the filer."""
    ledger.set_status(rid, S.verified, "identity checked", actor="dpo")
    ledger.set_status(rid, S.approved, "approved", actor="dpo")


def test_status_moves_and_history(ledger: Ledger) -> None:
    ledger.file(make_request(), actor="clerk")
    approve(ledger)
    ledger.set_status("req-1", S.scheduled, reason="nightly batch", actor="scheduler")
    ledger.set_status("req-1", "running", reason="kfp run abc", actor="pipeline")
    done = ledger.set_status("req-1", S.completed, reason="gate passed", actor="pipeline",
                             model_uri="models:/m/3", run_id="abc")
    assert done.status == S.completed
    assert [(h.event, h.status, h.reason, h.actor) for h in done.history] == [
        ("filed", S.received, "filed", "clerk"),
        ("status", S.verified, "identity checked", "dpo"),
        ("status", S.approved, "approved", "dpo"),
        ("status", S.scheduled, "nightly batch", "scheduler"),
        ("status", S.running, "kfp run abc", "pipeline"),
        ("status", S.completed, "gate passed", "pipeline"),
        ("purged", S.completed, "raw selectors overwritten", "pipeline"),
    ]
    assert done.history[5].model_uri == "models:/m/3" and done.history[5].run_id == "abc"
    times = [h.at for h in done.history]
    assert times == sorted(times)
    assert ledger.get("req-1") == done
    with pytest.raises(InvalidStatusMove, match=r"from 'completed' to 'received'.*none \(final\)"):
        ledger.set_status("req-1", S.received)


def test_final_status_purges_raw_selectors(ledger: Ledger) -> None:
    ledger.file(make_request(), actor="clerk")
    hashes = ledger.get("req-1").selector_hashes
    assert len(hashes) == 2 and all(len(h) == 64 for h in hashes)
    ledger.set_status("req-1", S.denied, "not the data subject", actor="dpo", code="identity-not-verified")
    req = ledger.get("req-1")
    assert req.purged and req.selectors.is_empty() and req.selector_hashes == hashes
    with ledger.engine.connect() as conn:
        stored = json.dumps([list(r) for r in conn.execute(select(selectors_table))]
                            + [list(r) for r in conn.execute(select(requests_table))]
                            + [list(r) for r in conn.execute(select(audit_table))], default=str)
    assert "person-0001" not in stored and "Ada Quill" not in stored
    if ledger.engine.dialect.name == "sqlite":  # secure_delete: the old bytes are zeroed on disk
        db = Path(ledger.engine.url.database or "")
        assert b"Ada Quill" not in db.read_bytes()
        assert db.stat().st_mode & 0o777 == 0o600


def test_guards_refuse_and_change_nothing(ledger: Ledger) -> None:
    ledger.file(make_request(), actor="clerk")
    with pytest.raises(GuardRefused, match="req-1 is not verified"):
        ledger.set_status("req-1", S.approved, actor="dpo")
    with pytest.raises(InvalidStatusMove, match="cannot move from 'received' to 'running'"):
        ledger.set_status("req-1", S.running, actor="pipeline")  # nothing runs unapproved
    ledger.set_status("req-1", S.verified, actor="clerk")
    with pytest.raises(GuardRefused, match="'clerk' filed it and cannot also approve it"):
        ledger.set_status("req-1", S.approved, actor="clerk")
    with pytest.raises(GuardRefused, match="a denial needs a reason code"):
        ledger.set_status("req-1", S.denied, actor="dpo")
    with pytest.raises(GuardRefused, match="a hold needs a reason code"):
        ledger.set_status("req-1", S.on_hold, actor="dpo", code="lunch")
    assert [h.status for h in ledger.get("req-1").history] == [S.received, S.verified]
    ledger.set_status("req-1", S.on_hold, actor="dpo", code="needs-clarification")
    with pytest.raises(GuardRefused, match="put on hold from 'verified'"):
        ledger.set_status("req-1", S.received, actor="dpo")
    assert ledger.set_status("req-1", S.verified, actor="dpo").status == S.verified
    assert ledger.verify_chain().ok


def test_unverified_duplicate_cannot_be_approved(ledger: Ledger) -> None:
    ledger.file(make_request("first"), actor="clerk")
    approve(ledger, "first")
    dupe = ledger.file(make_request("second", selectors={"names": ["ada  QUILL"]}), actor="clerk")
    assert dupe.duplicate_of == "first"  # keyed hashes of normalised names match
    with pytest.raises(GuardRefused, match="second is not verified; it duplicates open request first"):
        ledger.set_status("second", S.approved, actor="dpo")
    assert ledger.get("second").status == S.received


def test_invalid_moves_are_refused(ledger: Ledger) -> None:
    ledger.file(make_request())
    for status in S:
        if status not in STATUS_MOVES[S.received]:
            with pytest.raises(InvalidStatusMove, match=f"to '{status.value}'|not verified"):
                ledger.set_status("req-1", status, actor="dpo")
    with pytest.raises(InvalidStatusMove, match="from 'received': cancelled, denied, on-hold, verified"):
        ledger.set_status("req-1", S.completed)
    with pytest.raises(InvalidStatusMove, match="unknown status 'done'; valid: received"):
        ledger.set_status("req-1", "done")
    assert len(ledger.get("req-1").history) == 1  # nothing appended by refused moves


def test_failed_can_be_retried(ledger: Ledger) -> None:
    ledger.file(make_request(), actor="clerk")
    approve(ledger)
    for status in (S.running, S.failed, S.running, S.completed):
        ledger.set_status("req-1", status, actor="pipeline")
    assert [h.status for h in ledger.get("req-1").history][-1] == S.completed


def test_expect_is_compare_and_set(ledger: Ledger) -> None:
    ledger.file(make_request())
    with pytest.raises(StatusConflict, match="req-1 is 'received', expected approved or scheduled"):
        ledger.set_status("req-1", S.cancelled, "x", expect=[S.scheduled, S.approved])
    assert ledger.set_status("req-1", S.verified, expect=S.received).status == S.verified


def test_unknown_request(ledger: Ledger) -> None:
    with pytest.raises(RequestNotFound, match="no request 'nope' in the ledger") as info:
        ledger.get("nope")
    assert isinstance(info.value, KeyError)
    with pytest.raises(RequestNotFound):
        ledger.set_status("nope", S.scheduled)


# ------------------------------------------------------------------ deadlines
def test_deadlines_per_regime(ledger: Ledger) -> None:
    jan31 = datetime(2024, 1, 31, 9, 0, tzinfo=UTC)  # 2024 is a leap year
    ledger.file(make_request("gdpr", received_at=jan31, deadline=None))
    ledger.file(make_request("uk", legal_basis="uk-gdpr", received_at=datetime(2023, 1, 31, tzinfo=UTC),
                             deadline=None))
    ledger.file(make_request("ccpa", legal_basis="ccpa", received_at=jan31, deadline=None))
    ledger.file(make_request("copy", legal_basis="copyright", received_at=jan31, deadline=None))
    assert ledger.get("gdpr").due_at == datetime(2024, 2, 29, 9, 0, tzinfo=UTC)  # month end, leap year
    assert ledger.get("uk").due_at == datetime(2023, 2, 28, tzinfo=UTC)
    assert ledger.get("ccpa").due_at == datetime(2024, 3, 16, 9, 0, tzinfo=UTC)  # 45 days
    assert ledger.get("copy").due_at is None  # no statutory clock
    extended = ledger.extend("gdpr", "complex request", actor="dpo")
    assert extended.due_at == datetime(2024, 4, 29, 9, 0, tzinfo=UTC) and extended.extended
    assert ledger.extend("ccpa", "many systems", actor="dpo").due_at == datetime(2024, 4, 30, 9, tzinfo=UTC)
    with pytest.raises(GuardRefused, match="already extended once"):
        ledger.extend("gdpr", "again", actor="dpo")
    with pytest.raises(GuardRefused, match="needs a reason"):
        ledger.extend("uk", " ", actor="dpo")
    with pytest.raises(GuardRefused, match="no statutory deadline"):
        ledger.extend("copy", "x", actor="dpo")
    assert [h.event for h in ledger.get("gdpr").history] == ["filed", "extended"]


@pytest.mark.parametrize(("start", "months", "end"), [
    (datetime(2023, 1, 31), 1, datetime(2023, 2, 28)),
    (datetime(2024, 1, 31), 1, datetime(2024, 2, 29)),
    (datetime(2024, 3, 31), 1, datetime(2024, 4, 30)),
    (datetime(2024, 12, 15), 1, datetime(2025, 1, 15)),
    (datetime(2024, 11, 30), 3, datetime(2025, 2, 28)),
    (datetime(2024, 5, 1), 2, datetime(2024, 7, 1)),
])
def test_calendar_months(start: datetime, months: int, end: datetime) -> None:
    assert deadlines.add_months(start, months) == end


def test_due_flags() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert deadlines.flag(now - timedelta(hours=1), now) == "overdue"
    assert deadlines.flag(now + timedelta(days=3), now) == "due-soon"
    assert deadlines.flag(now + timedelta(days=30), now) == ""
    assert deadlines.days_left(now + timedelta(days=3, hours=5), now) == 3
    assert deadlines.days_left(now - timedelta(hours=5), now) == -1


def test_next_batch_run_and_expected_completion() -> None:
    from unlearnops import cron

    night = datetime(2026, 3, 1, 2, tzinfo=UTC)
    assert cron.next_run("0 0 2 * * *", night - timedelta(seconds=1)) == night  # KFP: seconds first
    assert cron.next_run("0 0 2 * * *", night) == night + timedelta(days=1)  # strictly after
    assert cron.next_run("30 4 * * 1", datetime(2026, 3, 1, 12)) == datetime(2026, 3, 2, 4, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="seconds first"):
        cron.check("0 0 25 * * *")
    at = night + timedelta(days=9)
    assert deadlines.expected_completion(S.approved, None, "0 0 2 * * *", night) == night + timedelta(days=1)
    assert deadlines.expected_completion(S.scheduled, at, "0 0 2 * * *", night) == night + timedelta(days=1)
    assert deadlines.expected_completion(S.scheduled, at, None, night) == at  # no schedule: --at
    assert deadlines.expected_completion(S.received, None, "0 0 2 * * *", night) is None  # not approved


# ------------------------------------------------------------------ the audit hash chain
def test_audit_chain_detects_an_edited_or_deleted_row(ledger: Ledger) -> None:
    ledger.file(make_request("a"), actor="clerk")
    ledger.file(make_request("b", selectors={"subject_ids": ["p9"]}), actor="clerk")
    approve(ledger, "a")
    report = ledger.verify_chain()
    assert report.ok and report.events == 4
    with ledger.engine.begin() as conn:  # someone rewrites who approved
        conn.execute(update(audit_table).where(audit_table.c.seq == 4).values(actor="clerk"))
    report = ledger.verify_chain()
    assert report.problems == ["event 4 (request a): content does not match its hash (the row was edited)"]
    with ledger.engine.begin() as conn:
        conn.execute(update(audit_table).where(audit_table.c.seq == 4).values(actor="dpo"))
        conn.execute(delete(audit_table).where(audit_table.c.seq == 2))
    problems = ledger.verify_chain().problems
    assert any("event 2 is missing" in p for p in problems)
    assert any("request b" in p and "not the one its audit trail ends in" in p for p in problems)


def test_override_is_an_audit_event_on_each_request(ledger: Ledger) -> None:
    """Issue 12: an operator's override is in the hash chain of each request; status unchanged."""
    ledger.file(make_request("a"), actor="clerk")
    ledger.file(make_request("b", selectors={"subject_ids": ["p9"]}), actor="clerk")
    approve(ledger, "a")
    details = {"model": "m", "report_uri": "/r", "from": "failed", "to": "passed"}
    kwargs = {"actor": "ana.ops", "reason": "MIA gap within noise (INC-42)", "code": "gate-override",
              "details": details}
    with pytest.raises(RequestNotFound, match="nope"):  # all or nothing
        ledger.record_override(["a", "nope"], **kwargs)  # type: ignore[arg-type]
    assert ledger.verify_chain().events == 4
    out = ledger.record_override(["a", "b"], **kwargs)  # type: ignore[arg-type]
    assert [r.status for r in out] == [S.approved, S.received]
    for req in out:
        last = req.history[-1]
        assert (last.event, last.actor, last.code) == ("override", "ana.ops", "gate-override")
        assert last.status == req.status and last.reason.startswith("MIA gap")
    ledger.record_override(["a", "b"], **kwargs)  # type: ignore[arg-type]  # a retry: recorded once
    report = ledger.verify_chain()
    assert report.ok and report.events == 6, report.problems
    with pytest.raises(GuardRefused, match="operator"):
        ledger.record_override(["a"], **{**kwargs, "actor": " "})  # type: ignore[arg-type]



def test_claim_upgrade_is_an_audit_event_on_a_completed_request(ledger: Ledger) -> None:
    """Issue 16: a retrain raising a completed request's claim to "retrained" is in its hash chain,
    with the model and both certificate ids (no data); the status stays completed; a retry once."""
    ledger.file(make_request("a"), actor="clerk")
    approve(ledger, "a")
    for status in (S.scheduled, S.running, S.completed):
        ledger.set_status("a", status, "pipeline", actor="pipeline:r1")
    details = {"run_id": "r2", "model_uri": "models:/m/4", "certificate": "c-new", "supersedes": "c-old"}
    kwargs = {"actor": "pipeline:r2", "claim_level": "retrained", "details": details}
    (req,) = ledger.record_claim_upgrade(["a"], **kwargs)  # type: ignore[arg-type]
    last = req.history[-1]
    assert (req.status, last.event, last.code) == (S.completed, "claim", "retrained")
    assert last.status == S.completed
    assert (last.model_uri, last.run_id, last.actor) == ("models:/m/4", "r2", "pipeline:r2")
    events = ledger.verify_chain().events
    ledger.record_claim_upgrade(["a"], **kwargs)  # type: ignore[arg-type]  # a retried task
    report = ledger.verify_chain()
    assert report.ok and report.events == events, report.problems
    with pytest.raises(GuardRefused, match="claim level"):
        ledger.record_claim_upgrade(["a"], **{**kwargs, "claim_level": ""})  # type: ignore[arg-type]

# ------------------------------------------------------------------ queries
def test_list_and_pending_until(ledger: Ledger) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    ledger.file(make_request("a", received_at=base, deadline=base + timedelta(days=30)))
    ledger.file(make_request("b", received_at=base + timedelta(hours=1), deadline=base + timedelta(days=3),
                             selectors={"subject_ids": ["p2"]}))
    ledger.file(make_request("c", received_at=base + timedelta(hours=2), deadline=None, legal_basis="other",
                             selectors={"subject_ids": ["p3"]}))
    ledger.file(make_request("d", received_at=base + timedelta(hours=3), deadline=base + timedelta(days=1),
                             selectors={"subject_ids": ["p4"]}))
    ledger.file(make_request("e", received_at=base + timedelta(days=4), deadline=None,
                             selectors={"subject_ids": ["p5"]}))
    for rid in "abcde":
        approve(ledger, rid)
    ledger.set_status("d", S.scheduled, actor="scheduler", expected_at=base + timedelta(hours=20))
    assert ledger.get("d").expected_at == base + timedelta(hours=20)
    assert [r.id for r in ledger.list()] == ["a", "b", "c", "d", "e"]
    assert [r.id for r in ledger.list(S.approved)] == ["a", "b", "c", "e"]
    assert [r.id for r in ledger.list("scheduled")] == ["d"]
    assert ledger.list(S.completed) == []
    # ready to run, received up to the cutoff, earliest effective deadline first (none last)
    assert [r.id for r in ledger.pending_until(base + timedelta(days=60))] == ["d", "b", "a", "e", "c"]
    assert [r.id for r in ledger.pending_until(base + timedelta(days=3))] == ["d", "b", "a", "c"]
    naive = (base + timedelta(hours=1)).replace(tzinfo=None)  # naive means UTC
    assert [r.id for r in ledger.pending_until(naive)] == ["b", "a"]
    east = (base + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5)))
    assert [r.id for r in ledger.pending_until(east)] == ["b", "a"]
    assert ledger.pending_until(base - timedelta(seconds=1)) == []


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
    """Toggle 'shared' approved<->scheduled TOGGLES times (compare-and-set loop), file own requests."""
    from unlearnops.ledger import InvalidStatusMove as Invalid
    from unlearnops.ledger import Ledger as Led
    from unlearnops.ledger import StatusConflict as Conflict

    with Led(url) as led:
        led.file(make_request("common"), actor="clerk")  # everyone files the same request: one row
        moves = 0
        while moves < TOGGLES:
            current = led.get("shared").status
            target = S.scheduled if current == S.approved else S.approved
            try:
                led.set_status("shared", target, reason=f"w{worker}-{moves}", actor=f"w{worker}",
                               expect=current)
                moves += 1
            except (Conflict, Invalid):
                continue
        for k in range(OWN):
            led.file(make_request(f"w{worker}-r{k}", selectors={"record_ids": [f"w{worker}-{k}"]},
                                  kind="document"), actor="clerk")
        return moves


def test_concurrent_writers_lose_no_update(ledger: Ledger) -> None:
    ledger.file(make_request("shared"), actor="clerk")
    approve(ledger, "shared")
    workers = 4
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.starmap(_worker, [(ledger.url, w) for w in range(workers)])
    assert results == [TOGGLES] * workers
    shared = ledger.get("shared")
    history = shared.history[3:]  # after filed, verified, approved
    assert len(history) == workers * TOGGLES
    # Every successful change is recorded exactly once, and the chain of statuses is valid.
    reasons = [h.reason for h in history]
    assert sorted(reasons) == sorted(f"w{w}-{m}" for w in range(workers) for m in range(TOGGLES))
    for before, after in zip(shared.history, shared.history[1:], strict=False):
        assert after.status in STATUS_MOVES[before.status], (before, after)
    assert shared.status == history[-1].status
    report = ledger.verify_chain()  # one unbroken chain over every writer's events
    assert report.ok, report.problems
    assert report.events == 3 + workers * TOGGLES + 1 + workers * OWN
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


def test_keyed_hash(unlearnops_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    monkeypatch.delenv("UNLEARNOPS_HASH_SECRET", raising=False)
    get_settings.cache_clear()
    digest = keyed_hash("person-0001")
    assert len(digest) == 64 and digest != hashlib.sha256(b"person-0001").hexdigest()  # not a dictionary hash
    assert digest == keyed_hash(" PERSON-0001 ") and digest != keyed_hash("person-0002")
    key_file = unlearnops_home / "keys" / "hash-secret"
    assert key_file.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("UNLEARNOPS_HASH_SECRET", "shared-cluster-secret")
    get_settings.cache_clear()
    assert keyed_hash("person-0001") != digest  # another key, another hash


# ------------------------------------------------------------------ queries the dashboard pages use
def test_page_filters_sorts_by_deadline_and_counts(ledger: Ledger) -> None:
    day = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for i, basis in enumerate(["gdpr-art17", "ccpa", "copyright", "gdpr-art17"]):
        ledger.file(make_request(f"r{i}", legal_basis=basis, external_ref=f"EXT-{i}", received_at=day,
                                 deadline=day + timedelta(days=30 - 5 * i) if basis != "copyright" else None),
                    actor="clerk" if i < 3 else "other")
    reqs, total = ledger.page(limit=10)
    assert total == 4 and [r.id for r in reqs] == ["r3", "r1", "r0", "r2"]  # soonest first, none last
    assert [r.id for r in ledger.page(limit=2, offset=2)[0]] == ["r0", "r2"]
    assert ledger.page(regimes=["gdpr-art17"])[1] == 2 and ledger.page(kinds=["document"])[1] == 0
    assert [r.id for r in ledger.page(text="EXT-1")[0]] == ["r1"] and ledger.page(text="r%")[1] == 0
    assert [r.id for r in ledger.page(filed_by="other")[0]] == ["r3"]
    assert {r.id for r in ledger.page(due_before=day + timedelta(days=26))[0]} == {"r3", "r1"}
    approve(ledger, "r0")
    assert [r.id for r in ledger.page(statuses=[S.approved])[0]] == ["r0"]
    assert ledger.by_external_ref("EXT-2").id == "r2" and ledger.by_external_ref("nope") is None


def test_events_after_batch_cron_and_completions(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.settings import get_settings

    ledger.file(make_request())
    approve(ledger)
    events = ledger.events_after(0)
    assert [e[0] for e in events] == list(range(1, len(events) + 1)) and {e[1] for e in events} == {"req-1"}
    assert [e[2].status for e in events][-1] == S.approved and ledger.events_after(events[-1][0]) == []
    monkeypatch.setenv("UNLEARNOPS_BATCH_CRON", "0 0 3 * * *")
    get_settings.cache_clear()
    assert ledger.batch_cron() == "0 0 3 * * *"  # the setting, until one is stored
    ledger.set_batch_cron("0 30 1 * * 1", actor="ops")
    assert ledger.batch_cron() == "0 30 1 * * 1"
    assert ledger.get("req-1").expected_at.weekday() == 0  # approved: the stored schedule's next Monday
    with pytest.raises(ValueError):
        ledger.set_batch_cron("every day", actor="ops")
    ledger.set_batch_cron("", actor="ops")
    assert ledger.batch_cron() is None and ledger.get("req-1").expected_at is None
    ledger.set_status("req-1", S.running, actor="pipeline")
    ledger.set_status("req-1", S.completed, actor="pipeline", model_uri="models:/m/2")
    assert ledger.completions() == {"models:/m/2": ["req-1"]}
