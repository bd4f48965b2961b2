"""The request ledger: every ForgetRequest, its status, and a tamper-evident audit trail.

Stored through SQLAlchemy 2 (a SQLite file by default, PostgreSQL by URL) in three tables:

- ``forget_requests``: one row per request — status, dates (received, requested deadline,
  effective ``due_at``), filer, external reference, and the request document *without* its
  raw selectors (it keeps their keyed hashes);
- ``request_selectors``: the raw selectors, kept apart and overwritten when the request reaches
  a final status (completed, denied, cancelled); SQLite runs with ``secure_delete`` so the old
  bytes are zeroed on disk, and the database file is made 0600;
- ``audit_events``: append-only, one row per event (filing, status move, extension, purge,
  an operator's override such as a gate verdict changed at registration), each carrying the
  SHA-256 of the previous event (a hash chain over the whole ledger):
  :meth:`Ledger.verify_chain` finds an edited, inserted or deleted row.

Guards live here, not in the callers (:class:`GuardRefused`): nothing runs unapproved, the
approver is never the filer, a denial or hold carries a reason code, a request leaves on-hold to
where it was. Deadlines follow :mod:`unlearnops.deadlines`. Concurrent writers lose no update:
every write locks the row it changes (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN
IMMEDIATE`` on SQLite) and checks the version it read; a conflict, a busy database or a
deadlock is retried (tenacity).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from . import deadlines, storage
from .keyed_hash import current_actor, selector_hashes
from .settings import get_settings
from .types import (
    DENY_CODES,
    FINAL_STATUSES,
    HOLD_CODES,
    STATUS_MOVES,
    ForgetRequest,
    RequestStatus,
    StatusChange,
    utcnow,
)

T = TypeVar("T")
S = RequestStatus

metadata = MetaData()

requests_table = Table(
    "forget_requests",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("legal_basis", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("received_at", DateTime(), nullable=False),  # naive UTC (all times here)
    Column("deadline", DateTime(), nullable=True),  # the deadline asked for, if any
    Column("due_at", DateTime(), nullable=True, index=True),  # effective deadline
    Column("extended", Boolean, nullable=False, default=False),
    Column("expected_at", DateTime(), nullable=True),  # expected completion (scheduled run)
    Column("filed_by", String(256), nullable=False),
    Column("external_ref", String(256), nullable=False, default=""),
    Column("duplicate_of", String(128), nullable=False, default=""),
    Column("held_from", String(16), nullable=False, default=""),
    Column("document", JSON, nullable=False),  # the request without status/history/raw selectors
    Column("version", Integer, nullable=False),  # = number of audit events of this request
)

selectors_table = Table(
    "request_selectors",
    metadata,
    Column("request_id", String(128), ForeignKey("forget_requests.id"), primary_key=True),
    Column("selectors", JSON, nullable=False),  # {} once purged
    Column("purged_at", DateTime(), nullable=True),
)

audit_table = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 1, 2, ... over the ledger
    Column("request_id", String(128), ForeignKey("forget_requests.id"), nullable=False, index=True),
    Column("at", DateTime(), nullable=False),
    Column("event", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("code", String(64), nullable=False),
    Column("actor", String(256), nullable=False, index=True),
    Column("details", JSON, nullable=False),  # run_id, model_uri, gate_reasons (no personal data)
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

settings_table = Table(
    "ledger_settings",
    metadata,
    Column("key", String(64), primary_key=True),  # batch_cron: the compliance batch's schedule
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    Column("updated_by", String(256), nullable=False),
)

GENESIS = "0" * 64
_DETAIL_FIELDS = ("run_id", "model_uri", "gate_reasons")


# ------------------------------------------------------------------ errors
class LedgerError(RuntimeError):
    """A ledger operation was refused; the message says why and what to do."""


class RequestNotFound(LedgerError, KeyError):
    """No request with this id is in the ledger."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else "request not found"


class InvalidStatusMove(LedgerError, ValueError):
    """The status change is not allowed by STATUS_MOVES."""


class GuardRefused(InvalidStatusMove):
    """A lifecycle guard refused the move (self-approval, missing reason code, ...)."""


class StatusConflict(LedgerError):
    """The request's current status is not the one the caller expected (``expect=``)."""


class DuplicateRequest(LedgerError, ValueError):
    """A request with this id was already filed with different content."""


class RequestFileError(ValueError):
    """A request file cannot be read or does not describe valid requests."""


class _VersionConflict(Exception):
    """Another writer changed the row between our read and our update (retried)."""


# ------------------------------------------------------------------ helpers
def _utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _db_time(value: datetime | None) -> datetime | None:
    """Naive UTC for the database (the same on SQLite and PostgreSQL)."""
    return None if value is None else _utc(value).replace(tzinfo=None)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


#: Fields the ledger sets (never part of a request's identity or its stored document).
_LEDGER_FIELDS = {"status", "history", "selectors", "filed_by", "due_at", "extended", "expected_at",
                  "duplicate_of", "selector_hashes", "purged"}


def _document(req: ForgetRequest, with_received: bool) -> dict[str, Any]:
    """The stored document (and what makes two filings 'the same request'): no raw selectors."""
    exclude = _LEDGER_FIELDS | (set() if with_received else {"received_at"})
    doc = req.model_dump(mode="json", exclude=exclude)
    doc["selector_hashes"] = req.selector_hashes or selector_hashes(req.selectors)
    return doc


def _transient(err: BaseException) -> bool:
    if isinstance(err, _VersionConflict):
        return True
    if isinstance(err, OperationalError):
        text = str(err).lower()
        return any(w in text for w in ("locked", "busy", "deadlock", "serialize", "could not obtain lock"))
    return False


def event_hash(prev: str, row: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the event's canonical JSON (sorted keys)."""
    body = {k: row[k] for k in ("seq", "request_id", "event", "status", "reason", "code", "actor",
                                "details")}
    at = row["at"]
    body["at"] = (_db_time(at) if isinstance(at, datetime) else at).isoformat()  # type: ignore[union-attr]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()


# ------------------------------------------------------------------ engine
def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2; we ship psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    db = parsed.database
    if db and db != ":memory:" and not db.startswith("file:"):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        if not Path(db).exists():  # the ledger holds raw selectors until purge: owner-only
            os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
    engine = create_engine(parsed, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not BEGIN on its own; we do below
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA secure_delete=ON")  # overwritten selectors are zeroed on disk

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock when the transaction starts (waits up to the timeout): a
        # read-then-write transaction can then never be overtaken by another writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass(frozen=True)
class ChainReport:
    """What :meth:`Ledger.verify_chain` found: events checked and the problems (empty = intact)."""

    events: int
    problems: list[str]
    head: str

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ the ledger
_Requests = list[ForgetRequest]
_Events = list[tuple[int, str, StatusChange]]
_Ids = list[str]  # (seq, request id, event)


class Ledger:
    """Forget requests, their lifecycle and audit trail in a SQL database (SQLite or PostgreSQL)."""

    def __init__(self, url: str | None = None, *, max_attempts: int = 50) -> None:
        self.url = url or get_settings().ledger_sqlalchemy_url
        self.engine = _make_engine(self.url)
        self._retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(max_attempts),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )
        try:
            self._retry(lambda: metadata.create_all(self.engine))
        except (IntegrityError, ProgrammingError):  # another process created the tables meanwhile
            metadata.create_all(self.engine)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def _retry(self, fn: Callable[[], T]) -> T:
        return self._retrying.copy()(fn)

    # -------------------------------------------------------------- rows → documents
    @staticmethod
    def _txn_rows(conn: Connection, rows: Iterable[Row[Any]]) -> _Requests:
        rows = list(rows)
        if not rows:
            return []
        ids = [row.id for row in rows]
        history: dict[str, list[StatusChange]] = {i: [] for i in ids}
        for h in conn.execute(select(audit_table).where(audit_table.c.request_id.in_(ids))
                              .order_by(audit_table.c.seq)):
            history[h.request_id].append(_change(h))
        raw = {r.request_id: r for r in conn.execute(
            select(selectors_table).where(selectors_table.c.request_id.in_(ids)))}
        batch_cron, now = Ledger._batch_cron(conn), utcnow()
        out = []
        for row in rows:
            sel = raw.get(row.id)
            purged = sel is None or sel.purged_at is not None
            out.append(ForgetRequest.model_validate({
                **row.document, "selectors": {} if purged else sel.selectors, "purged": purged,
                "status": row.status, "history": history[row.id], "filed_by": row.filed_by,
                "due_at": _opt_utc(row.due_at), "extended": bool(row.extended),
                "expected_at": deadlines.expected_completion(
                    RequestStatus(row.status), _opt_utc(row.expected_at), batch_cron, now),
                "duplicate_of": row.duplicate_of,
            }))
        return out

    @staticmethod
    def _append(conn: Connection, request_id: str, event_name: str, status: RequestStatus, *,
                reason: str = "", code: str = "", actor: str = "",
                details: dict[str, Any] | None = None, at: datetime | None = None) -> None:
        """Append one event to the chain (a concurrent appender makes the insert conflict: retried)."""
        last = conn.execute(select(audit_table.c.seq, audit_table.c.hash)
                            .order_by(audit_table.c.seq.desc()).limit(1).with_for_update()).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
        row = {"seq": seq, "request_id": request_id, "at": _db_time(at or utcnow()), "event": event_name,
               "status": status.value, "reason": reason, "code": code, "actor": actor,
               "details": details or {}}
        try:
            conn.execute(insert(audit_table).values(**row, prev_hash=prev, hash=event_hash(prev, row)))
        except IntegrityError as err:
            raise _VersionConflict(request_id) from err

    # -------------------------------------------------------------- writes
    def file(self, req: ForgetRequest, actor: str = "") -> ForgetRequest:
        """Record a new request as ``received`` (filing the identical request again is a no-op)."""
        return self.file_many([req], actor)[0]

    def file_many(self, reqs: Iterable[ForgetRequest], actor: str = "") -> _Requests:
        """File several requests in one transaction: all are recorded, or none is.

        ``actor`` (default: the configured or OS user) is the filer; the ``requester`` field
        is what the data subject or their agent wrote, not an identity.
        """
        reqs = list(reqs)
        actor = actor or current_actor()
        seen: set[str] = set()
        for req in reqs:
            if req.id in seen:
                raise DuplicateRequest(f"request id {req.id!r} appears twice; ids must be unique")
            seen.add(req.id)
            if req.status != S.received or req.history:
                raise LedgerError(f"request {req.id}: a new request is filed as 'received' with no "
                                  f"history; remove 'status'/'history' (got status {req.status.value!r})")
            if req.purged or req.selectors.is_empty():
                raise LedgerError(f"request {req.id}: a new request needs its selectors (and no 'purged')")

        def attempt() -> _Requests:
            try:
                with self.engine.begin() as conn:
                    return [self._file_one(conn, req, actor) for req in reqs]
            except IntegrityError as err:  # a concurrent filing of the same id won the race
                raise _VersionConflict(str(err)) from err

        return self._retry(attempt)

    def _file_one(self, conn: Connection, req: ForgetRequest, actor: str) -> ForgetRequest:
        explicit_time = "received_at" in req.model_fields_set
        req = req.model_copy(update={"selector_hashes": selector_hashes(req.selectors)})
        row = conn.execute(
            select(requests_table).where(requests_table.c.id == req.id).with_for_update()
        ).first()
        if row is not None:
            [stored] = self._txn_rows(conn, [row])
            if _document(stored, explicit_time) != _document(req, explicit_time):
                raise DuplicateRequest(
                    f"request {req.id} is already filed with different content; "
                    "use a new id (the ledger never overwrites a request)"
                )
            return stored
        due = deadlines.effective_due(req.legal_basis, req.received_at, req.deadline)
        conn.execute(insert(requests_table).values(
            id=req.id, kind=req.kind.value, legal_basis=req.legal_basis.value, status=S.received.value,
            received_at=_db_time(req.received_at), deadline=_db_time(req.deadline), due_at=_db_time(due),
            extended=False, filed_by=actor, external_ref=req.external_ref,
            duplicate_of=self._duplicate_of(conn, req), held_from="",
            document=_document(req, True), version=1,
        ))
        conn.execute(insert(selectors_table).values(
            request_id=req.id, selectors=req.selectors.model_dump(mode="json"), purged_at=None))
        self._append(conn, req.id, "filed", S.received, reason="filed", actor=actor)
        fresh = conn.execute(select(requests_table).where(requests_table.c.id == req.id)).one()
        return self._txn_rows(conn, [fresh])[0]

    @staticmethod
    def _duplicate_of(conn: Connection, req: ForgetRequest) -> str:
        """The first open request sharing a selector hash with ``req`` ('' if none)."""
        mine = set(req.selector_hashes)
        for row in conn.execute(select(requests_table.c.id, requests_table.c.document)
                                .where(requests_table.c.status.not_in([s.value for s in FINAL_STATUSES]))
                                .order_by(requests_table.c.received_at, requests_table.c.id)):
            if mine & set(row.document.get("selector_hashes", [])):
                return str(row.id)
        return ""

    def set_status(
        self,
        request_id: str,
        status: RequestStatus | str,
        reason: str = "",
        actor: str = "",
        *,
        code: str = "",
        expect: RequestStatus | Iterable[RequestStatus] | None = None,
        run_id: str = "",
        model_uri: str = "",
        gate_reasons: Iterable[str] = (),
        expected_at: datetime | None = None,
    ) -> ForgetRequest:
        """Move a request to ``status`` (STATUS_MOVES and the guards) and append an audit event.

        ``expect``: only move if the current status is this one (or one of these), else
        :class:`StatusConflict` — a compare-and-set for callers that read the status first.
        Reaching a final status purges (overwrites) the raw selectors.
        """
        new = _status(status)
        actor = actor or current_actor()
        wanted = None if expect is None else (
            {_status(expect)} if isinstance(expect, str) else {_status(s) for s in expect})
        details = {k: v for k, v in (("run_id", run_id), ("model_uri", model_uri),
                                     ("gate_reasons", list(gate_reasons))) if v}

        def attempt() -> ForgetRequest:
            with self.engine.begin() as conn:
                row = self._locked(conn, request_id)
                current = RequestStatus(row.status)
                if wanted is not None and current not in wanted:
                    raise StatusConflict(
                        f"request {request_id} is {current.value!r}, expected "
                        f"{' or '.join(sorted(s.value for s in wanted))}")
                _check_move(row, current, new, actor, code, reason)
                values: dict[str, Any] = {"status": new.value, "version": row.version + 1,
                                          "held_from": current.value if new == S.on_hold else ""}
                if new == S.scheduled:
                    values["expected_at"] = _db_time(expected_at)
                self._update(conn, row, values)
                self._append(conn, request_id, "status", new, reason=reason, code=code, actor=actor,
                              details=details)
                if new in FINAL_STATUSES:
                    self._purge(conn, request_id, new, actor)
                return self._fresh(conn, request_id)

        return self._retry(attempt)

    def resume(self, request_id: str, reason: str = "", actor: str = "") -> ForgetRequest:
        """Take a request off hold, back to the status it was held from."""
        def held_from() -> str:
            with self.engine.begin() as conn:
                row = conn.execute(select(requests_table.c.status, requests_table.c.held_from)
                                   .where(requests_table.c.id == request_id)).first()
            if row is None:
                raise RequestNotFound(f"no request {request_id!r} in the ledger ({self._where()})")
            if row.status != S.on_hold.value or not row.held_from:
                raise GuardRefused(f"request {request_id} is {row.status!r}, not on hold")
            return str(row.held_from)

        back = self._retry(held_from)
        return self.set_status(request_id, back, reason or "resumed", actor, expect=S.on_hold)

    def extend(self, request_id: str, reason: str, actor: str = "") -> ForgetRequest:
        """Extend the statutory deadline once (GDPR +2 months, CCPA +45 days), with a reason."""
        actor = actor or current_actor()
        if not reason.strip():
            raise GuardRefused(f"request {request_id}: an extension needs a reason (it is recorded "
                               "and must be told to the requester); pass --reason")

        def attempt() -> ForgetRequest:
            with self.engine.begin() as conn:
                row = self._locked(conn, request_id)
                req = self._txn_rows(conn, [row])[0]
                if row.extended:
                    raise GuardRefused(f"request {request_id} was already extended once; "
                                       "the law allows one extension")
                if RequestStatus(row.status) in FINAL_STATUSES:
                    raise GuardRefused(f"request {request_id} is {row.status!r} (final); nothing to extend")
                if not deadlines.can_extend(req.legal_basis):
                    raise GuardRefused(f"request {request_id}: a {req.legal_basis.value} request has no "
                                       "statutory deadline to extend")
                due = deadlines.effective_due(req.legal_basis, req.received_at, None, extended=True)
                self._update(conn, row, {"extended": True, "due_at": _db_time(due),
                                         "version": row.version + 1})
                self._append(conn, request_id, "extended", RequestStatus(row.status), reason=reason,
                              actor=actor)
                return self._fresh(conn, request_id)

        return self._retry(attempt)

    def record_override(self, request_ids: Iterable[str], *, actor: str, reason: str, code: str,
                        details: dict[str, str]) -> _Requests:
        """Record an operator's override (e.g. of a gate verdict) on each request; status unchanged.

        One ``override`` audit event per request, all in one transaction (an unknown request
        records nothing); the same override (actor, reason, code, details) is not recorded twice.
        """
        if not actor.strip() or not reason.strip():
            raise GuardRefused("an override needs the operator who made it and a reason")
        return self._record_once(request_ids, "override", actor=actor, reason=reason, code=code,
                                 details=details)

    def record_claim_upgrade(self, request_ids: Iterable[str], *, actor: str, claim_level: str,
                             details: dict[str, str]) -> _Requests:
        """Record that each request's erasure claim was raised to ``claim_level`` (e.g. from
        ``unlearned`` to ``retrained`` when an exact retrain covered it); status unchanged.

        One ``claim`` audit event per request in one transaction, not recorded twice for the same
        details (a retried task); ``details`` holds the certificate ids and the model, never data.
        """
        if not actor.strip() or not claim_level.strip():
            raise GuardRefused("a claim upgrade needs the actor that made it and the new claim level")
        return self._record_once(request_ids, "claim", actor=actor, code=claim_level,
                                 reason=f"erasure claim upgraded to {claim_level!r}", details=details)

    def _record_once(self, request_ids: Iterable[str], event_name: str, *, actor: str, reason: str,
                     code: str, details: dict[str, str]) -> _Requests:
        """Append one ``event_name`` event to each request unless the same one is already there."""
        ids = list(dict.fromkeys(request_ids))

        def attempt() -> _Requests:
            with self.engine.begin() as conn:
                rows = [self._locked(conn, rid) for rid in ids]
                for row in rows:
                    if self._has_event(conn, row.id, event_name, actor, reason, code, details):
                        continue
                    self._update(conn, row, {"version": row.version + 1})
                    self._append(conn, row.id, event_name, RequestStatus(row.status), reason=reason,
                                 code=code, actor=actor, details=details)
                return [self._fresh(conn, rid) for rid in ids]

        return self._retry(attempt)

    @staticmethod
    def _has_event(conn: Connection, request_id: str, event_name: str, actor: str, reason: str, code: str,
                   details: dict[str, str]) -> bool:
        found = conn.execute(select(audit_table.c.details).where(
            audit_table.c.request_id == request_id, audit_table.c.event == event_name,
            audit_table.c.actor == actor, audit_table.c.reason == reason, audit_table.c.code == code))
        return any(d == details for (d,) in found)

    def _locked(self, conn: Connection, request_id: str) -> Row[Any]:
        row = conn.execute(
            select(requests_table).where(requests_table.c.id == request_id).with_for_update()
        ).first()
        if row is None:
            raise RequestNotFound(f"no request {request_id!r} in the ledger ({self._where()})")
        return row

    @staticmethod
    def _update(conn: Connection, row: Row[Any], values: dict[str, Any]) -> None:
        done = conn.execute(update(requests_table)
                            .where(requests_table.c.id == row.id, requests_table.c.version == row.version)
                            .values(**values))
        if done.rowcount != 1:
            raise _VersionConflict(row.id)

    def _purge(self, conn: Connection, request_id: str, status: RequestStatus, actor: str) -> None:
        """Overwrite the raw selectors (the audit record keeps their keyed hashes)."""
        conn.execute(update(selectors_table).where(selectors_table.c.request_id == request_id)
                     .values(selectors={}, purged_at=_db_time(utcnow())))
        row = self._locked(conn, request_id)
        self._update(conn, row, {"version": row.version + 1})
        self._append(conn, request_id, "purged", status, reason="raw selectors overwritten", actor=actor)

    def _fresh(self, conn: Connection, request_id: str) -> ForgetRequest:
        fresh = conn.execute(select(requests_table).where(requests_table.c.id == request_id)).one()
        return self._txn_rows(conn, [fresh])[0]

    # -------------------------------------------------------------- reads
    def get(self, request_id: str) -> ForgetRequest:
        """The request with its full history; :class:`RequestNotFound` if unknown."""
        def attempt() -> ForgetRequest:
            with self.engine.begin() as conn:
                row = conn.execute(select(requests_table).where(requests_table.c.id == request_id)).first()
                if row is None:
                    raise RequestNotFound(f"no request {request_id!r} in the ledger ({self._where()})")
                return self._txn_rows(conn, [row])[0]

        return self._retry(attempt)

    def list(self, status: RequestStatus | str | None = None) -> _Requests:
        """All requests (oldest received first), optionally only those in ``status``."""
        query = select(requests_table).order_by(requests_table.c.received_at, requests_table.c.id)
        if status is not None:
            query = query.where(requests_table.c.status == _status(status).value)
        return self._read(query)

    def pending_until(self, cutoff: datetime) -> _Requests:
        """Requests ready to run (approved or scheduled) received at or before ``cutoff``.

        Earliest effective deadline first (none last), then oldest received: the one order the
        compliance batch takes them in.
        """
        return self._read(self._pending(select(requests_table), cutoff))

    def pending_ids(self, cutoff: datetime) -> _Ids:
        """The ids of :meth:`pending_until`, in its order (no documents read)."""
        query = self._pending(select(requests_table.c.id), cutoff)

        def attempt() -> _Ids:
            with self.engine.begin() as conn:
                return [row.id for row in conn.execute(query)]

        return self._retry(attempt)

    @staticmethod
    def _pending(query: Any, cutoff: datetime) -> Any:
        due = requests_table.c.due_at
        return (query.where(requests_table.c.status.in_([S.approved.value, S.scheduled.value]),
                            requests_table.c.received_at <= _db_time(cutoff))
                .order_by(due.is_(None), due, requests_table.c.received_at, requests_table.c.id))

    def acted_on_by(self, actor: str) -> _Requests:
        """Requests with an audit event made by ``actor`` (e.g. one pipeline run), oldest first."""
        ids = select(audit_table.c.request_id).where(audit_table.c.actor == actor).distinct()
        return self._read(select(requests_table).where(requests_table.c.id.in_(ids))
                          .order_by(requests_table.c.received_at, requests_table.c.id))

    def page(self, *, statuses: Iterable[RequestStatus | str] = (), regimes: Iterable[str] = (),
             kinds: Iterable[str] = (), text: str = "", due_before: datetime | None = None,
             filed_by: str = "", limit: int = 50, offset: int = 0) -> tuple[_Requests, int]:
        """One page of requests matching the filters, soonest effective deadline first (none last),
        and how many match in all. ``text`` matches the id or the external reference (substring);
        ``due_before``: only requests due before then (e.g. now: the overdue ones); ``filed_by``:
        only those this actor filed."""
        table = requests_table
        conditions = []
        if wanted := [_status(s).value for s in statuses]:
            conditions.append(table.c.status.in_(wanted))
        if wanted := list(regimes):
            conditions.append(table.c.legal_basis.in_(wanted))
        if wanted := list(kinds):
            conditions.append(table.c.kind.in_(wanted))
        if text:
            conditions.append(table.c.id.contains(text, autoescape=True)
                              | table.c.external_ref.contains(text, autoescape=True))
        if due_before is not None:
            conditions.append(table.c.due_at.is_not(None) & (table.c.due_at < _db_time(due_before)))
        if filed_by:
            conditions.append(table.c.filed_by == filed_by)
        query = (select(table).where(*conditions)
                 .order_by(table.c.due_at.is_(None), table.c.due_at, table.c.received_at, table.c.id)
                 .limit(limit).offset(offset))
        counted = select(func.count()).select_from(table).where(*conditions)

        def attempt() -> tuple[_Requests, int]:
            with self.engine.begin() as conn:
                return self._txn_rows(conn, conn.execute(query)), int(conn.execute(counted).scalar_one())

        return self._retry(attempt)

    def by_external_ref(self, external_ref: str) -> ForgetRequest | None:
        """The earliest request filed with this upstream DSAR reference, if any."""
        query = (select(requests_table).where(requests_table.c.external_ref == external_ref)
                 .order_by(requests_table.c.received_at, requests_table.c.id).limit(1))
        found = self._read(query)
        return found[0] if found else None

    def events_after(self, seq: int, limit: int = 100) -> _Events:
        """Audit events after sequence number ``seq`` (oldest first): (seq, request id, event)."""
        query = select(audit_table).where(audit_table.c.seq > seq).order_by(audit_table.c.seq).limit(limit)

        def attempt() -> _Events:
            with self.engine.begin() as conn:
                return [(h.seq, h.request_id, _change(h)) for h in conn.execute(query)]

        return self._retry(attempt)

    @staticmethod
    def _batch_cron(conn: Connection) -> str | None:
        """The compliance batch's schedule: the one set in the ledger (dashboard), else the setting."""
        row = conn.execute(select(settings_table.c.value).where(settings_table.c.key == "batch_cron")).first()
        return (row.value or None) if row is not None else get_settings().batch_cron

    def batch_cron(self) -> str | None:
        def attempt() -> str | None:
            with self.engine.begin() as conn:
                return self._batch_cron(conn)

        return self._retry(attempt)

    def set_batch_cron(self, cron_text: str, actor: str) -> None:
        """Set the compliance batch's schedule for every reader of this ledger ('' turns it off)."""
        from .cron import check

        value = check(cron_text) if cron_text.strip() else ""

        def attempt() -> None:
            with self.engine.begin() as conn:
                row = {"value": value, "updated_at": _db_time(utcnow()), "updated_by": actor}
                done = conn.execute(update(settings_table).where(settings_table.c.key == "batch_cron")
                                    .values(**row))
                if not done.rowcount:
                    conn.execute(insert(settings_table).values(key="batch_cron", **row))

        self._retry(attempt)

    def completions(self) -> dict[str, _Ids]:
        """Which requests each model version completed: ``models:/NAME/VERSION`` → request ids."""
        query = (select(audit_table.c.request_id, audit_table.c.details)
                 .where(audit_table.c.event == "status", audit_table.c.status == S.completed.value))

        def attempt() -> dict[str, _Ids]:
            out: dict[str, _Ids] = {}
            with self.engine.begin() as conn:
                for row in conn.execute(query):
                    uri = (row.details or {}).get("model_uri", "")
                    if uri:
                        out.setdefault(uri, []).append(row.request_id)
            return out

        return self._retry(attempt)

    def _read(self, query: Any) -> _Requests:
        def attempt() -> _Requests:
            with self.engine.begin() as conn:
                return self._txn_rows(conn, conn.execute(query))

        return self._retry(attempt)

    def verify_chain(self) -> ChainReport:
        """Recompute the audit hash chain; report edited, missing or reordered events."""
        def attempt() -> ChainReport:
            with self.engine.begin() as conn:
                events = list(conn.execute(select(audit_table).order_by(audit_table.c.seq)))
                rows = list(conn.execute(select(requests_table.c.id, requests_table.c.status,
                                                requests_table.c.version)))
            return _check_chain(events, rows)

        return self._retry(attempt)

    def _where(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def _change(h: Row[Any]) -> StatusChange:
    """An audit row as the request's StatusChange."""
    details = {k: v for k, v in (h.details or {}).items() if k in _DETAIL_FIELDS}
    return StatusChange(at=_utc(h.at), status=RequestStatus(h.status), event=h.event, reason=h.reason,
                        code=h.code, actor=h.actor, **details)


def _check_chain(events: list[Row[Any]], rows: list[Row[Any]]) -> ChainReport:
    problems: list[str] = []
    prev = GENESIS
    last_status: dict[str, str] = {}
    counts: dict[str, int] = {}
    for expected_seq, ev in enumerate(events, start=1):
        row = ev._asdict()
        if ev.seq != expected_seq:
            problems.append(f"event {expected_seq} is missing (found {ev.seq} next): a row was deleted")
        if ev.prev_hash != prev:
            problems.append(f"event {ev.seq}: previous-hash link broken (a row was deleted or inserted)")
        if event_hash(ev.prev_hash, row) != ev.hash:
            problems.append(f"event {ev.seq} (request {ev.request_id}): content does not match its hash "
                            "(the row was edited)")
        prev = ev.hash
        last_status[ev.request_id] = ev.status
        counts[ev.request_id] = counts.get(ev.request_id, 0) + 1
    for r in rows:
        if last_status.get(r.id) != r.status:
            problems.append(f"request {r.id}: status {r.status!r} is not the one its audit trail ends in "
                            f"({last_status.get(r.id)!r})")
        elif counts.get(r.id) != r.version:
            problems.append(f"request {r.id}: {counts.get(r.id, 0)} audit event(s) for version {r.version}")
    return ChainReport(len(events), problems, prev)


def _check_move(row: Row[Any], current: RequestStatus, new: RequestStatus, actor: str, code: str,
                reason: str) -> None:
    """The lifecycle guards; :class:`GuardRefused` / :class:`InvalidStatusMove` say what to do."""
    rid = row.id
    if new == S.approved and current == S.received:
        dup = f"; it duplicates open request {row.duplicate_of}, so it needs its own verification" \
            if row.duplicate_of else ""
        raise GuardRefused(f"request {rid} is not verified{dup}: verify the requester's identity first "
                           f"(`unlearnops request verify {rid}`), then approve")
    if new not in STATUS_MOVES[current]:
        allowed = ", ".join(sorted(s.value for s in STATUS_MOVES[current])) or "none (final)"
        raise InvalidStatusMove(
            f"request {rid}: cannot move from {current.value!r} to {new.value!r}; "
            f"allowed from {current.value!r}: {allowed}")
    if current == S.on_hold and new not in (S.denied, S.cancelled) and new.value != row.held_from:
        raise GuardRefused(f"request {rid} was put on hold from {row.held_from!r}; it resumes there "
                           f"(or is denied/cancelled), not at {new.value!r}")
    if new == S.approved and current != S.on_hold and actor == row.filed_by:
        raise GuardRefused(f"request {rid}: {actor!r} filed it and cannot also approve it; "
                           "another person must approve (four-eyes rule)")
    if new == S.denied and code not in DENY_CODES:
        raise GuardRefused(f"request {rid}: a denial needs a reason code, one of {', '.join(DENY_CODES)}")
    if new == S.on_hold and code not in HOLD_CODES:
        raise GuardRefused(f"request {rid}: a hold needs a reason code, one of {', '.join(HOLD_CODES)}")
    if new == S.cancelled and not reason.strip():
        raise GuardRefused(f"request {rid}: a cancellation needs a reason")


def _status(value: RequestStatus | str) -> RequestStatus:
    try:
        return RequestStatus(value)
    except ValueError:
        valid = ", ".join(s.value for s in RequestStatus)
        raise InvalidStatusMove(f"unknown status {value!r}; valid: {valid}") from None


# ------------------------------------------------------------------ request files
def load_request_file(path_or_uri: str | Path) -> _Requests:
    """Read one request or a list of requests from a YAML or JSON file (path, file:// or s3://).

    A top-level mapping with a ``requests:`` list is accepted too. Errors name the file, the
    request and the field, and say what is expected (:class:`RequestFileError`).
    """
    uri = str(path_or_uri)
    try:
        text = storage.read_text(uri)
    except storage.StorageError as err:
        raise RequestFileError(str(err)) from err
    except UnicodeDecodeError as err:
        raise RequestFileError(f"{uri}: not UTF-8 text") from err
    data = _parse(uri, text)
    if isinstance(data, dict) and set(data) == {"requests"}:
        data = data["requests"]
    items = data if isinstance(data, list) else [data]
    if not items or data is None:
        raise RequestFileError(f"{uri}: holds no request; expected a request mapping or a list of them")
    out: _Requests = []
    for index, item in enumerate(items):
        label = f"{uri}: request {index + 1} of {len(items)}"
        if not isinstance(item, dict):
            raise RequestFileError(
                f"{label}: expected a mapping of request fields, got {type(item).__name__}")
        if isinstance(item.get("id"), str):
            label += f" (id {item['id']!r})"
        try:
            out.append(ForgetRequest.model_validate(item))
        except ValidationError as err:
            raise RequestFileError(f"{label}: {'; '.join(_explain(err))}") from None
    ids = [r.id for r in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise RequestFileError(f"{uri}: request id(s) {', '.join(dupes)} appear more than once")
    return out


def _parse(uri: str, text: str) -> Any:
    if uri.lower().endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise RequestFileError(f"{uri}: not valid JSON at line {err.lineno}, column {err.colno}: "
                                   f"{err.msg}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RequestFileError(f"{uri}: not valid YAML{where}: {problem}") from None


def _explain(err: ValidationError) -> Iterator[str]:
    """One line per pydantic error: the field (dotted path), what is wrong, what was given."""
    for e in err.errors(include_url=False):
        field = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        kind = e["type"]
        if kind == "missing":
            yield f"field '{field}' is required"
        elif kind == "extra_forbidden":
            yield f"unknown field '{field}' (check the spelling)"
        elif not field:
            yield msg
        else:
            given = e.get("input")
            shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "..."
            yield f"field '{field}': {msg} (got {shown})"
