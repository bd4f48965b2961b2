"""The request ledger: every ForgetRequest, its status and its append-only status history.

Stored through SQLAlchemy 2 (a SQLite file by default, PostgreSQL by URL) in two tables:
``requests`` (one row per request: id, kind, status, deadline, received_at, the request
document as JSON and a ``version`` counter) and ``request_history`` (one row per status change,
never updated). Concurrent writers lose no update: every write transaction locks the row it
changes (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite, which takes
the database write lock up front) and the ``UPDATE`` also checks the version it read
(optimistic concurrency); a conflict, a busy database or a deadlock is retried (tenacity).
Status moves are validated against :data:`unlearnops.types.STATUS_MOVES`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError
from sqlalchemy import (
    JSON,
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
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from . import storage
from .settings import get_settings
from .types import STATUS_MOVES, ForgetRequest, RequestStatus, StatusChange, utcnow

T = TypeVar("T")

metadata = MetaData()

requests_table = Table(
    "requests",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("deadline", DateTime(), nullable=True, index=True),  # naive UTC
    Column("received_at", DateTime(), nullable=False),  # naive UTC
    Column("document", JSON, nullable=False),  # the request without status/history
    Column("version", Integer, nullable=False),  # = number of history rows
)

history_table = Table(
    "request_history",
    metadata,
    Column("request_id", String(128), ForeignKey("requests.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),  # 1 = filed; the request's version after the change
    Column("at", DateTime(), nullable=False),  # naive UTC
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=False),
)


# ------------------------------------------------------------------ errors
class LedgerError(RuntimeError):
    """A ledger operation was refused; the message says why and what to do."""


class RequestNotFound(LedgerError, KeyError):
    """No request with this id is in the ledger."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else "request not found"


class InvalidStatusMove(LedgerError, ValueError):
    """The status change is not allowed by STATUS_MOVES."""


class StatusConflict(LedgerError):
    """The request's current status is not the one the caller expected (``expect=``)."""


class DuplicateRequest(LedgerError, ValueError):
    """A request with this id was already filed with different content."""


class RequestFileError(ValueError):
    """A request file cannot be read or does not describe valid requests."""


class _VersionConflict(Exception):
    """Another writer changed the row between our read and our update (retried)."""


# ------------------------------------------------------------------ helpers
def hash_subject(subject_id: str) -> str:
    """SHA-256 hex digest of a data-subject id (certificates carry hashes, never raw ids)."""
    return hashlib.sha256(subject_id.encode("utf-8")).hexdigest()


def _utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _db_time(value: datetime | None) -> datetime | None:
    """Naive UTC for the database (the same on SQLite and PostgreSQL)."""
    return None if value is None else _utc(value).replace(tzinfo=None)


def _normalized(req: ForgetRequest) -> ForgetRequest:
    return req.model_copy(update={
        "received_at": _utc(req.received_at),
        "deadline": _utc(req.deadline) if req.deadline else None,
    })


def _content(req: ForgetRequest, with_received: bool) -> dict[str, Any]:
    """What makes two filings 'the same request' (status/history and default times excluded)."""
    exclude = {"status", "history"} | (set() if with_received else {"received_at"})
    return req.model_dump(mode="json", exclude=exclude)


def _transient(err: BaseException) -> bool:
    if isinstance(err, _VersionConflict):
        return True
    if isinstance(err, OperationalError):
        text = str(err).lower()
        return any(w in text for w in ("locked", "busy", "deadlock", "serialize", "could not obtain lock"))
    return False


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
    engine = create_engine(parsed, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not BEGIN on its own; we do below
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock when the transaction starts (waits up to the timeout): a
        # read-then-write transaction can then never be overtaken by another writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# ------------------------------------------------------------------ the ledger
_Requests = list[ForgetRequest]


class Ledger:
    """Forget requests and their status history in a SQL database (SQLite or PostgreSQL)."""

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

    @staticmethod
    def _txn_rows(conn: Connection, rows: Iterable[Row[Any]]) -> _Requests:
        rows = list(rows)
        if not rows:
            return []
        ids = [row.id for row in rows]
        history: dict[str, list[StatusChange]] = {i: [] for i in ids}
        for h in conn.execute(
            select(history_table).where(history_table.c.request_id.in_(ids))
            .order_by(history_table.c.request_id, history_table.c.seq)
        ):
            history[h.request_id].append(StatusChange(at=_utc(h.at), status=RequestStatus(h.status),
                                                      reason=h.reason, actor=h.actor))
        return [ForgetRequest.model_validate({**row.document, "status": row.status,
                                              "history": history[row.id]}) for row in rows]

    # -------------------------------------------------------------- writes
    def file(self, req: ForgetRequest) -> ForgetRequest:
        """Record a new request as ``pending`` (filing the identical request again is a no-op)."""
        return self.file_many([req])[0]

    def file_many(self, reqs: Iterable[ForgetRequest], actor: str = "") -> _Requests:
        """File several requests in one transaction: all are recorded, or none is."""
        reqs = list(reqs)
        seen: set[str] = set()
        for req in reqs:
            if req.id in seen:
                raise DuplicateRequest(f"request id {req.id!r} appears twice; ids must be unique")
            seen.add(req.id)
            if req.status != RequestStatus.pending or req.history:
                raise LedgerError(f"request {req.id}: a new request is filed as 'pending' with no "
                                  f"history; remove 'status'/'history' (got status {req.status.value!r})")

        def attempt() -> _Requests:
            try:
                with self.engine.begin() as conn:
                    return [self._file_one(conn, req, actor) for req in reqs]
            except IntegrityError as err:  # a concurrent filing of the same id won the race
                raise _VersionConflict(str(err)) from err

        return self._retry(attempt)

    def _file_one(self, conn: Connection, req: ForgetRequest, actor: str) -> ForgetRequest:
        explicit_time = "received_at" in req.model_fields_set  # before the copy below marks it set
        req = _normalized(req)
        row = conn.execute(
            select(requests_table).where(requests_table.c.id == req.id).with_for_update()
        ).first()
        if row is not None:
            [stored] = self._txn_rows(conn, [row])
            if _content(stored, explicit_time) != _content(req, explicit_time):
                raise DuplicateRequest(
                    f"request {req.id} is already filed with different content; "
                    "use a new id (the ledger never overwrites a request)"
                )
            return stored
        now = utcnow()
        conn.execute(insert(requests_table).values(
            id=req.id, kind=req.kind.value, status=RequestStatus.pending.value,
            deadline=_db_time(req.deadline), received_at=_db_time(req.received_at),
            document=_content(req, True), version=1,
        ))
        conn.execute(insert(history_table).values(
            request_id=req.id, seq=1, at=_db_time(now), status=RequestStatus.pending.value,
            reason="filed", actor=actor or req.requester,
        ))
        return req.model_copy(update={
            "status": RequestStatus.pending,
            "history": [StatusChange(at=now, status=RequestStatus.pending, reason="filed",
                                     actor=actor or req.requester)],
        })

    def set_status(
        self,
        request_id: str,
        status: RequestStatus | str,
        reason: str = "",
        actor: str = "",
        *,
        expect: RequestStatus | Iterable[RequestStatus] | None = None,
    ) -> ForgetRequest:
        """Move a request to ``status`` (validated against STATUS_MOVES) and append to its history.

        ``expect``: only move if the current status is this one (or one of these), else
        :class:`StatusConflict` — a compare-and-set for callers that read the status first.
        """
        new = _status(status)
        wanted = None if expect is None else (
            {_status(expect)} if isinstance(expect, str) else {_status(s) for s in expect})

        def attempt() -> ForgetRequest:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(requests_table).where(requests_table.c.id == request_id).with_for_update()
                ).first()
                if row is None:
                    raise RequestNotFound(f"no request {request_id!r} in the ledger ({self._where()})")
                current = RequestStatus(row.status)
                if wanted is not None and current not in wanted:
                    raise StatusConflict(
                        f"request {request_id} is {current.value!r}, expected "
                        f"{' or '.join(sorted(s.value for s in wanted))}")
                if new not in STATUS_MOVES[current]:
                    allowed = ", ".join(sorted(s.value for s in STATUS_MOVES[current])) or "none (final)"
                    raise InvalidStatusMove(
                        f"request {request_id}: cannot move from {current.value!r} to {new.value!r}; "
                        f"allowed from {current.value!r}: {allowed}")
                done = conn.execute(
                    update(requests_table)
                    .where(requests_table.c.id == request_id, requests_table.c.version == row.version)
                    .values(status=new.value, version=row.version + 1)
                )
                if done.rowcount != 1:
                    raise _VersionConflict(request_id)
                try:
                    conn.execute(insert(history_table).values(
                        request_id=request_id, seq=row.version + 1, at=_db_time(utcnow()),
                        status=new.value, reason=reason, actor=actor,
                    ))
                except IntegrityError as err:
                    raise _VersionConflict(request_id) from err
                fresh = conn.execute(select(requests_table).where(requests_table.c.id == request_id)).one()
                return self._txn_rows(conn, [fresh])[0]

        return self._retry(attempt)

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
        """Pending requests whose deadline is at or before ``cutoff``, oldest deadline first."""
        query = (
            select(requests_table)
            .where(requests_table.c.status == RequestStatus.pending.value,
                   requests_table.c.deadline.is_not(None),
                   requests_table.c.deadline <= _db_time(cutoff))
            .order_by(requests_table.c.deadline, requests_table.c.received_at, requests_table.c.id)
        )
        return self._read(query)

    def _read(self, query: Any) -> _Requests:
        def attempt() -> _Requests:
            with self.engine.begin() as conn:
                return self._txn_rows(conn, conn.execute(query))

        return self._retry(attempt)

    def _where(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


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
