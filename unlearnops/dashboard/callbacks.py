"""Signed DSAR callbacks: every status change of a request goes to the URL its platform registered.

The same tail of the audit trail purges a request's comments when the ledger purges its
selectors (final status): comments are working notes that may name the person.

The shape forwarders such as Fides, Transcend and Ketch consume: a JSON POST per audit event of
the request (``request.status_changed``), with id, type, request id, external reference, status,
event, reason code, time and expected completion — never the selectors or free-text reasons.
``X-Unlearnops-Signature: t=UNIX,v1=HEX`` where HEX is HMAC-SHA256 (RFC 2104) under
``dashboard.callback_secret`` of ``"{t}.{body}"``; receivers check it and reject stale ``t``.
A failed delivery (no answer, or not 2xx) is retried with exponential backoff (1, 2, 4, ... s,
at most 5 min between tries) up to ``dashboard.callback_attempts`` tries, and a request's later
events wait for it (each request's callbacks arrive in order); each delivery is a row
of ``dashboard_deliveries``, so a restart resumes where it stopped (at-least-once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, insert, select, update

from ..masking import mask_secrets
from ..settings import get_settings
from ..types import StatusChange
from .store import Background, Store, callbacks_table, comments_table, deliveries_table, now_naive

CURSOR_KEY = "callbacks.cursor"
PURGED_TEXT = "[removed when the request closed]"
MAX_URL = 2000
Sender = Callable[[str, bytes, dict[str, str]], int]


class CallbackRefused(ValueError):
    """A callback URL that may not be registered (scheme, host, credentials, length, or callbacks off)."""


def check_url(url: str) -> str:
    """The URL if callbacks may go there: https anywhere, http only to ``dashboard.callback_hosts``."""
    config = get_settings().dashboard
    if config.callback_secret is None:
        raise CallbackRefused("callbacks are off: set UNLEARNOPS_DASHBOARD__CALLBACK_SECRET to sign them")
    if len(url) > MAX_URL:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise CallbackRefused(f"callback_url is not a URL: {err}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CallbackRefused("callback_url must be an https:// URL")
    if parts.username or parts.password:
        raise CallbackRefused("callback_url must not hold credentials (the callback is signed instead)")
    if parts.scheme == "http" and parts.hostname not in config.callback_hosts:
        raise CallbackRefused("callback_url must be https (plain http only to dashboard.callback_hosts)")
    return url


def register(store: Store, request_id: str, url: str) -> None:
    url = check_url(url)
    store.execute(delete(callbacks_table).where(callbacks_table.c.request_id == request_id))
    store.execute(insert(callbacks_table).values(request_id=request_id, url=url))


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def payload(seq: int, request_id: str, external_ref: str, change: StatusChange,
            expected: str | None) -> dict[str, Any]:
    return {"id": f"evt-{seq}", "type": "request.status_changed", "request_id": request_id,
            "external_ref": external_ref, "status": change.status.value, "event": change.event,
            "code": change.code, "at": change.at.isoformat(), "expected_completion": expected}


def http_sender(url: str, body: bytes, headers: dict[str, str]) -> int:
    with httpx.Client(timeout=10.0, follow_redirects=False) as client:
        return client.post(url, content=body, headers=headers).status_code


class Dispatcher(Background):
    """Turns new audit events into deliveries and sends the due ones (a daemon thread)."""

    def __init__(self, store: Store, sender: Sender = http_sender, poll_s: float = 1.0,
                 backoff_s: float = 1.0) -> None:
        super().__init__()
        self.store, self.sender, self.poll_s, self.backoff_s = store, sender, poll_s, backoff_s

    name = "unlearnops-callbacks"

    def loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the dispatcher
                pass
            self.stop_event.wait(self.poll_s)

    def step(self) -> int:
        """Enqueue new events, send what is due; how many deliveries succeeded."""
        self.enqueue()
        return self.deliver_due()

    def enqueue(self) -> None:
        cursor = int(self.store.get_value(CURSOR_KEY, 0))
        registered = {r.request_id for r in self.store.rows(select(callbacks_table.c.request_id))}
        while True:
            events = self.store.ledger.events_after(cursor, 500)
            if not events:
                return
            for seq, request_id, change in events:
                if change.event == "purged":  # final status: the request's comments go with its selectors
                    purge_comments(self.store, request_id)
                if request_id in registered:
                    self.store.execute(insert(deliveries_table).values(
                        seq=seq, request_id=request_id, status="pending", attempts=0, last_error="",
                        next_at=now_naive(), updated_at=now_naive()))
            cursor = events[-1][0]
            self.store.set_value(CURSOR_KEY, cursor)

    def deliver_due(self) -> int:
        secret_value = get_settings().dashboard.callback_secret
        if secret_value is None:
            return 0
        secret = secret_value.get_secret_value().encode()
        pending = self.store.rows(select(deliveries_table).where(deliveries_table.c.status == "pending")
                                  .order_by(deliveries_table.c.seq).limit(200))
        sent, blocked, now = 0, set(), now_naive()
        for row in pending:  # in order per request: a later event waits for an earlier retry
            if row.request_id in blocked:
                continue
            if row.next_at > now or not self._deliver(row, secret):
                blocked.add(row.request_id)
                continue
            sent += 1
        return sent

    def _deliver(self, row: Any, secret: bytes) -> int:
        url_row = self.store.one(select(callbacks_table.c.url)
                                 .where(callbacks_table.c.request_id == row.request_id))
        req = self.store.ledger.get(row.request_id)
        found = self.store.ledger.events_after(row.seq - 1, 1)  # the event this delivery is for
        change = found[0][2] if found and found[0][0] == row.seq else None
        if url_row is None or change is None:
            self._mark(row.seq, "failed", row.attempts, "no callback URL or event")
            return 0
        body = json.dumps(payload(row.seq, req.id, req.external_ref, change,
                                  req.expected_at.isoformat() if req.expected_at else None),
                          sort_keys=True, separators=(",", ":")).encode()
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "X-Unlearnops-Signature": sign(secret, stamp, body),
                   "X-Unlearnops-Event": f"evt-{row.seq}"}
        try:
            code = self.sender(url_row.url, body, headers)
            error = "" if 200 <= code < 300 else f"HTTP {code}"
        except Exception as err:  # noqa: BLE001 - any transport failure is retried
            error = mask_secrets(f"{type(err).__name__}: {err}")[:500]
        attempts = row.attempts + 1
        if not error:
            self._mark(row.seq, "delivered", attempts, "")
            return 1
        final = attempts >= get_settings().dashboard.callback_attempts
        wait = timedelta(seconds=min(self.backoff_s * 2 ** (attempts - 1), 300.0))
        self._mark(row.seq, "failed" if final else "pending", attempts, error, wait)
        return 0

    def _mark(self, seq: int, status: str, attempts: int, error: str, wait: timedelta = timedelta(0)) -> None:
        self.store.execute(update(deliveries_table).where(deliveries_table.c.seq == seq).values(
            status=status, attempts=attempts, last_error=error, next_at=now_naive() + wait,
            updated_at=now_naive()))


def purge_comments(store: Store, request_id: str) -> None:
    """Overwrite a request's comment texts (they may name the person) once its selectors are purged."""
    store.execute(update(comments_table).where(comments_table.c.request_id == request_id)
                  .values(text=PURGED_TEXT))


def deliveries(store: Store, request_id: str) -> list[Any]:
    return store.rows(select(deliveries_table).where(deliveries_table.c.request_id == request_id)
                      .order_by(deliveries_table.c.seq))
