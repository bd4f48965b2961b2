"""The dashboard's own tables, in the ledger's database (SQLite embedded, PostgreSQL in cluster).

- ``dashboard_tokens``: API tokens, stored as SHA-256 of the token (the token itself is shown once);
- ``dashboard_comments``: comments on a request, internal or visible to the requester;
- ``dashboard_runs``: runs triggered from the dashboard, with their per-step status;
- ``dashboard_callbacks``: where a DSAR platform wants status changes sent, and each delivery;
- ``dashboard_kv``: small settings the dashboard owns (the schedule, the callback cursor).

Requests, their status and the audit trail stay in the ledger's tables (:mod:`unlearnops.ledger`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, Row
from sqlalchemy.exc import IntegrityError, ProgrammingError

from ..ledger import Ledger
from ..types import utcnow

T = TypeVar("T")
metadata = MetaData()

tokens_table = Table(
    "dashboard_tokens", metadata,
    Column("id", String(32), primary_key=True),  # public id (shown in lists, used to revoke)
    Column("name", String(256), nullable=False),  # the actor recorded in the audit trail
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(), nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("revoked_at", DateTime(), nullable=True),
)

comments_table = Table(
    "dashboard_comments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("at", DateTime(), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("visibility", String(16), nullable=False),  # internal | requester
    Column("text", Text, nullable=False),
)

runs_table = Table(
    "dashboard_runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime(), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("request_ids", JSON, nullable=False),
    Column("method", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("status", String(24), nullable=False, index=True),
    Column("backend", String(16), nullable=False),  # local | kfp
    Column("steps", JSON, nullable=False),  # [{name, status, seconds, started_at}]
    Column("run_root", Text, nullable=False, default=""),
    Column("exit_code", Integer, nullable=True),
    Column("message", Text, nullable=False, default=""),
    Column("versions", JSON, nullable=False),
    Column("external_id", String(128), nullable=False, default=""),  # the KFP run id
    Column("started_at", DateTime(), nullable=True),
    Column("finished_at", DateTime(), nullable=True),
)

callbacks_table = Table(
    "dashboard_callbacks", metadata,
    Column("request_id", String(128), primary_key=True),
    Column("url", Text, nullable=False),
)

deliveries_table = Table(
    "dashboard_deliveries", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # the audit event's seq
    Column("request_id", String(128), nullable=False, index=True),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
    Column("next_at", DateTime(), nullable=False, index=True),
    Column("updated_at", DateTime(), nullable=False),
)

actions_table = Table(  # state changes that belong to no request: promote, rollback, schedule, tokens
    "dashboard_actions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(256), nullable=False),
    Column("detail", Text, nullable=False),
)

kv_table = Table(
    "dashboard_kv", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
)


class Store:
    """The dashboard's tables beside a :class:`~unlearnops.ledger.Ledger` (same engine and retries)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.engine: Engine = ledger.engine
        #: called after a request is approved (the run worker starts the warm server then)
        self.approval_hooks: list[Callable[[], None]] = []
        try:
            ledger._retry(lambda: metadata.create_all(self.engine))
        except (IntegrityError, ProgrammingError):  # another process created them meanwhile
            metadata.create_all(self.engine)

    def retry(self, fn: Callable[[], T]) -> T:
        return self.ledger._retry(fn)

    # ---------------------------------------------------------------- generic helpers
    def rows(self, query: Any) -> list[Row[Any]]:
        def attempt() -> list[Row[Any]]:
            with self.engine.begin() as conn:
                return list(conn.execute(query))

        return self.retry(attempt)

    def one(self, query: Any) -> Row[Any] | None:
        found = self.rows(query.limit(1))
        return found[0] if found else None

    def execute(self, statement: Any) -> None:
        def attempt() -> None:
            with self.engine.begin() as conn:
                conn.execute(statement)

        self.retry(attempt)

    # ---------------------------------------------------------------- key/value
    def get_value(self, key: str, default: Any = None) -> Any:
        row = self.one(select(kv_table.c.value).where(kv_table.c.key == key))
        return default if row is None else row.value

    def set_value(self, key: str, value: Any) -> None:
        def attempt() -> None:
            with self.engine.begin() as conn:
                changed = conn.execute(update(kv_table).where(kv_table.c.key == key).values(value=value))
                if not changed.rowcount:
                    conn.execute(insert(kv_table).values(key=key, value=value))

        self.retry(attempt)

    def delete_value(self, key: str) -> None:
        self.execute(delete(kv_table).where(kv_table.c.key == key))

    def record_action(self, actor: str, action: str, target: str, detail: str = "") -> None:
        """An audit record of a state change that belongs to no request (who, what, on what)."""
        self.execute(insert(actions_table).values(at=now_naive(), actor=actor, action=action,
                                                  target=target[:256], detail=detail[:4000]))

    def actions(self, limit: int = 200) -> list[Row[Any]]:
        return self.rows(select(actions_table).order_by(actions_table.c.id.desc()).limit(limit))


def now_naive() -> Any:
    """UTC now without tzinfo, as the ledger stores times."""
    return utcnow().replace(tzinfo=None)


class Background:
    """A daemon thread running :meth:`loop` until :meth:`stop` (the run worker, the scheduler and
    the callback dispatcher); ``loop`` waits on ``stop_event`` between rounds."""

    name = "unlearnops-background"

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop, name=self.name, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=5)

    def loop(self) -> None:
        raise NotImplementedError
