"""The dashboard's REST API: every endpoint and role, the ledger's guards, CSRF, DSAR callbacks.

The app runs in process (FastAPI's TestClient) over a fresh home's SQLite ledger, with real
tokens; callbacks go to a real HTTP server on a free loopback port. The run worker is exercised
with a child process that writes step events the way ``unlearnops run --events`` does (the real
pipeline runs in the browser test).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from unlearnops.pipelines.run_request import DEFAULT_METHOD_PARAMS

from unlearnops.dashboard import runs as runs_module
from unlearnops.dashboard.app import create_app
from unlearnops.dashboard.auth import CSRF_HEADER, Role, create_token, list_tokens, revoke_token
from unlearnops.dashboard.callbacks import Dispatcher, sign
from unlearnops.dashboard.runs import RunDefaults, RunWorker, get_run
from unlearnops.settings import get_settings
from unlearnops.types import RequestStatus

S = RequestStatus
USERS = {
    "viewer": Role.viewer,
    "alice": Role.requester,
    "bob": Role.requester,
    "carol": Role.approver,
    "dave": Role.approver,
    "olga": Role.operator,
}


class Dash:
    """The app, a client, and a bearer header per user."""

    def __init__(self, app: Any) -> None:
        self.app, self.store = app, app.state.store
        self.client = TestClient(app, raise_server_exceptions=False)
        self.tokens = {name: create_token(self.store, name, role, "test")[0] for name, role in USERS.items()}

    def h(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def call(self, user: str | None, method: str, path: str, **kw: Any) -> Any:
        headers = {**(self.h(user) if user else {}), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def file(self, user: str = "alice", **fields: Any) -> dict[str, Any]:
        body = {
            "kind": "subject",
            "legal_basis": "gdpr-art17",
            "requester": "dpo@example.org",
            "subject_ids": ["person-0001"],
            **fields,
        }
        r = self.call(user, "POST", "/api/v1/requests", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def approved(self, user: str = "alice", **fields: Any) -> str:
        rid = str(self.file(user, **fields)["id"])
        for step in ("verify", "approve"):
            assert self.call("carol", "POST", f"/api/v1/requests/{rid}/actions/{step}").status_code == 200
        return rid


@pytest.fixture
def dash(unlearnops_home: Path) -> Iterator[Dash]:
    app = create_app(RunDefaults(corpus_uri=str(unlearnops_home / "corpus")), workers=False)
    d = Dash(app)
    yield d
    d.client.close()
    app.state.store.ledger.close()


# ------------------------------------------------------------------ authentication and roles
def _routes(app: Any) -> list[tuple[str, str]]:
    """Every API operation of the OpenAPI document, path parameters filled in."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        path = path.replace("{decision}", "approve").replace("{plot}", "x.png")
        for name in ("request_id", "run_id", "name", "external_ref"):
            path = path.replace("{" + name + "}", "x")
        out += [(method.upper(), path) for method in sorted(operations)]
    return out


def test_every_endpoint_needs_a_credential(dash: Dash) -> None:
    routes = _routes(dash.app)
    assert len(routes) >= 20
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            r = dash.client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert "detail" in r.json()
    revoked_id = next(t.id for t in list_tokens(dash.store) if t.name == "viewer")
    assert revoke_token(dash.store, revoked_id)
    assert dash.call("viewer", "GET", "/api/v1/me").status_code == 401
    assert dash.call("olga", "GET", "/api/v1/me").json()["role"] == "operator"


WRITES: list[tuple[str, str, dict[str, Any], set[str]]] = [
    (
        "POST",
        "/api/v1/requests",
        {"kind": "subject", "legal_basis": "ccpa", "requester": "r", "subject_ids": ["p"]},
        {"alice", "bob", "carol", "dave", "olga"},
    ),
    ("POST", "/api/v1/requests/{rid}/actions/verify", {}, {"carol", "dave", "olga"}),
    (
        "POST",
        "/api/v1/requests/{rid}/comments",
        {"text": "hi"},
        {"alice", "carol", "dave", "olga"},
    ),  # bob: 404
    (
        "POST",
        "/api/v1/bulk",
        {"ids": ["{rid}"], "action": "hold", "code": "legal-hold"},
        {"carol", "dave", "olga"},
    ),
    ("POST", "/api/v1/runs", {"request_ids": ["{rid}"]}, {"olga"}),
    ("POST", "/api/v1/models/m/promote", {"version": "1"}, {"olga"}),
    ("POST", "/api/v1/models/m/rollback", {}, {"olga"}),
    ("PUT", "/api/v1/schedule", {"cron": ""}, {"olga"}),
    (
        "POST",
        "/api/v1/dsar/requests",
        {
            "kind": "subject",
            "legal_basis": "ccpa",
            "requester": "r",
            "subject_ids": ["p"],
            "external_ref": "E-1",
        },
        {"alice", "bob", "carol", "dave", "olga"},
    ),
]
READS_STAFF = ["/api/v1/runs", "/api/v1/models/m", "/api/v1/runs/x"]


def test_roles_each_write_is_refused_403_to_roles_without_it(dash: Dash) -> None:
    rid = dash.file("alice")["id"]
    for method, path, body, allowed in WRITES:
        url = path.replace("{rid}", rid)
        payload = json.loads(json.dumps(body).replace("{rid}", rid))
        for user in USERS:
            r = dash.call(user, method, url, json=payload)
            if user in allowed:
                assert r.status_code != 403, (user, method, url, r.text)
            elif USERS[user] == Role.requester and user != "alice" and "comments" in path:
                assert r.status_code == 404  # may comment, but alice's request is not visible to bob
            else:
                assert r.status_code == 403, (user, method, url, r.status_code, r.text)
                assert "role may not" in r.json()["detail"]
    for path in READS_STAFF:
        assert dash.call("alice", "GET", path).status_code == 403
        assert dash.call("viewer", "GET", path).status_code in (200, 404)


def test_requester_sees_only_its_own_requests_and_visible_parts(dash: Dash) -> None:
    mine, theirs = dash.file("alice")["id"], dash.file("bob")["id"]
    listed = dash.call("alice", "GET", "/api/v1/requests", params={"unverified": True}).json()
    assert [r["id"] for r in listed["items"]] == [mine] and listed["total"] == 1
    assert dash.call("alice", "GET", f"/api/v1/requests/{theirs}").status_code == 404
    assert dash.call("alice", "GET", f"/api/v1/requests/{theirs}/timeline").status_code == 404
    staff = dash.call("viewer", "GET", f"/api/v1/requests/{mine}").json()
    assert staff["selector_counts"] == {"subject_ids": 1} and staff["filed_by"] == "alice"
    assert "person-0001" not in json.dumps(staff)  # never the raw selectors
    own = dash.call("alice", "GET", f"/api/v1/requests/{mine}").json()
    assert "filed_by" not in own and "selector_hashes" not in own and own["status"] == "received"
    assert (
        dash.call(
            "carol",
            "POST",
            f"/api/v1/requests/{mine}/comments",
            json={"text": "internal note", "visibility": "internal"},
        ).status_code
        == 201
    )
    assert (
        dash.call(
            "carol",
            "POST",
            f"/api/v1/requests/{mine}/comments",
            json={"text": "we are on it", "visibility": "requester"},
        ).status_code
        == 201
    )
    seen = dash.call("alice", "GET", f"/api/v1/requests/{mine}/timeline").json()
    texts = [e["detail"] for e in seen if e["kind"] == "comment"]
    assert texts == ["we are on it"] and all(e["actor"] == "" for e in seen)
    full = dash.call("viewer", "GET", f"/api/v1/requests/{mine}/timeline").json()
    assert [e["detail"] for e in full if e["kind"] == "comment"] == ["internal note", "we are on it"]
    assert {e["actor"] for e in full} >= {"alice", "carol"}


# ------------------------------------------------------------------ filing and the ledger's guards
def test_filing_validation_names_the_field_and_stores_nothing(dash: Dash) -> None:
    cases = [
        ({"kind": "subject", "legal_basis": "gdpr-art17", "requester": "r"}, "subject_ids"),
        ({"kind": "subject", "legal_basis": "nope", "requester": "r", "names": ["x"]}, "legal_basis"),
        (
            {"kind": "pattern", "legal_basis": "other", "requester": "r", "patterns": ["(unclosed"]},
            "patterns",
        ),
        ({"kind": "subject", "legal_basis": "ccpa", "requester": "", "names": ["x"]}, "requester"),
        ({"id": "../etc", "kind": "subject", "legal_basis": "ccpa", "requester": "r", "names": ["x"]}, "id"),
    ]
    for body, field in cases:
        r = dash.call("alice", "POST", "/api/v1/requests", json=body)
        assert r.status_code == 422 and field in r.json()["detail"], (body, r.text)
    assert dash.store.ledger.page(limit=10)[1] == 0
    first = dash.file("alice", id="req-fixed")
    again = dash.call(
        "bob",
        "POST",
        "/api/v1/requests",
        json={
            "id": "req-fixed",
            "kind": "document",
            "legal_basis": "ccpa",
            "requester": "r",
            "record_ids": ["d1"],
        },
    )
    assert again.status_code == 409 and first["id"] == "req-fixed"


def test_decisions_go_through_the_ledgers_guards(dash: Dash) -> None:
    approvals: list[str] = []  # the run worker's warm-up hook: called after an approval only
    dash.store.approval_hooks.append(lambda: approvals.append("approved"))
    own = dash.file("carol")["id"]  # an approver files: it may never approve it
    assert dash.call("dave", "POST", f"/api/v1/requests/{own}/actions/verify").status_code == 200
    refused = dash.call("carol", "POST", f"/api/v1/requests/{own}/actions/approve")
    assert refused.status_code == 409 and "four-eyes" in refused.json()["detail"]
    assert approvals == []
    assert dash.call("dave", "POST", f"/api/v1/requests/{own}/actions/approve").json()["status"] == "approved"
    assert approvals == ["approved"]
    rid = dash.file("alice")["id"]
    assert (
        dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/approve").status_code == 409
    )  # unverified
    no_code = dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/deny", json={"reason": "no"})
    assert no_code.status_code == 409 and "reason code" in no_code.json()["detail"]
    held = dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/hold", json={"code": "legal-hold"})
    assert held.json()["status"] == "on-hold"
    assert dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/resume").json()["status"] == "received"
    due = dash.store.ledger.get(rid).due_at
    ext = dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/extend", json={"reason": "complex"})
    assert ext.status_code == 200 and ext.json()["extended"] and dash.store.ledger.get(rid).due_at > due
    twice = dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/extend", json={"reason": "again"})
    assert twice.status_code == 409 and "once" in twice.json()["detail"]
    assert dash.call("carol", "POST", "/api/v1/requests/nope/actions/verify").status_code == 404
    assert dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/fly").status_code == 422
    history = dash.store.ledger.get(rid).history
    assert {h.actor for h in history} == {"alice", "carol"}  # every change as the authenticated actor
    assert approvals == ["approved"]  # verify, hold, resume, extend: no warm-up


def test_bulk_applies_each_and_says_why_not(dash: Dash) -> None:
    a, b = dash.file("alice")["id"], dash.file("carol")["id"]
    for rid in (a, b):
        dash.call("dave", "POST", f"/api/v1/requests/{rid}/actions/verify")
    r = dash.call("carol", "POST", "/api/v1/bulk", json={"ids": [a, b, "ghost"], "action": "approve"}).json()
    assert r["applied"] == 1
    by_id = {x["id"]: x for x in r["results"]}
    assert by_id[a]["ok"] and not by_id[b]["ok"] and "four-eyes" in by_id[b]["error"]
    assert not by_id["ghost"]["ok"]
    denied = dash.call(
        "dave",
        "POST",
        "/api/v1/bulk",
        json={"ids": [b], "action": "deny", "code": "exemption", "reason": "art. 17(3)"},
    ).json()
    assert denied["applied"] == 1 and dash.store.ledger.get(b).status == S.denied


def test_queue_sorted_by_days_left_with_filters_and_csv(dash: Dash) -> None:
    now = datetime.now(UTC)
    late = dash.file(
        "alice",
        id="late",
        legal_basis="copyright",
        deadline=(now + timedelta(days=40)).isoformat(),
        external_ref="EXT-LATE",
    )
    soon = dash.file("alice", id="soon", legal_basis="ccpa", deadline=(now + timedelta(days=3)).isoformat())
    dash.file("alice", id="fresh")
    for rid in (late["id"], soon["id"]):
        dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/verify")
    q = dash.call("viewer", "GET", "/api/v1/requests").json()
    assert [r["id"] for r in q["items"]] == ["soon", "late"]  # unverified 'fresh' hidden by default
    assert q["items"][0]["flag"] == "due-soon" and q["items"][1]["flag"] == "on-time"
    assert q["items"][0]["internal_due_at"] < q["items"][0]["due_at"]
    every = dash.call("viewer", "GET", "/api/v1/requests", params={"unverified": "true"}).json()
    assert every["total"] == 3
    assert [
        r["id"]
        for r in dash.call("viewer", "GET", "/api/v1/requests", params={"regime": "ccpa"}).json()["items"]
    ] == ["soon"]
    assert [
        r["id"]
        for r in dash.call("viewer", "GET", "/api/v1/requests", params={"q": "EXT-LATE"}).json()["items"]
    ] == ["late"]
    assert dash.call("viewer", "GET", "/api/v1/requests", params={"status": "bogus"}).status_code == 422
    csv_text = dash.call("viewer", "GET", "/api/v1/requests.csv", params={"unverified": "true"}).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,status") and len(lines) == 4 and lines[1].startswith("soon,verified")


# ------------------------------------------------------------------ browser session: cookie + CSRF
def test_cookie_session_needs_the_csrf_token(dash: Dash) -> None:
    browser = TestClient(dash.app, raise_server_exceptions=False)
    bad = browser.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert bad.status_code == 401
    ok = browser.post(
        "/login", data={"token": dash.tokens["alice"], "next": "//evil.example"}, follow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    me = browser.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["name"] == "alice"
    body = {"kind": "subject", "legal_basis": "ccpa", "requester": "r", "names": ["x"]}
    assert browser.post("/api/v1/requests", json=body).status_code == 403  # no CSRF token
    assert browser.post("/api/v1/requests", json=body, headers={CSRF_HEADER: "forged"}).status_code == 403
    from unlearnops.dashboard.auth import from_token

    token = from_token(dash.store, dash.tokens["alice"]).csrf_token
    assert browser.post("/api/v1/requests", json=body, headers={CSRF_HEADER: token}).status_code == 201
    other = from_token(dash.store, dash.tokens["bob"]).csrf_token
    assert browser.post("/api/v1/requests", json=body, headers={CSRF_HEADER: other}).status_code == 403
    browser.close()


def test_security_headers_body_limit_and_no_cdn(dash: Dash) -> None:
    r = dash.call("viewer", "GET", "/api/v1/me")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    huge = dash.call(
        "alice",
        "POST",
        "/api/v1/requests",
        content=b"x" * (2 << 20),
        headers={**dash.h("alice"), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert dash.client.get("/docs").status_code == 404  # Swagger UI would load from a CDN
    spec = dash.client.get("/api/openapi.json").json()
    assert "/api/v1/requests" in spec["paths"] and "HTTPBearer" in json.dumps(spec["components"])
    js = dash.client.get("/static/htmx.min.js")
    assert js.status_code == 200 and "htmx" in js.text[:2000]


# ------------------------------------------------------------------ schedule, runs
def test_schedule_is_shared_with_the_ledger(dash: Dash) -> None:
    rid = dash.approved()
    assert dash.call("viewer", "GET", "/api/v1/schedule").json()["cron"] == ""
    bad = dash.call("olga", "PUT", "/api/v1/schedule", json={"cron": "every monday"})
    assert bad.status_code == 400 and "6 fields" in bad.json()["detail"]
    done = dash.call("olga", "PUT", "/api/v1/schedule", json={"cron": "0 0 2 * * 1"}).json()
    assert done["cron"] == "0 0 2 * * 1" and done["pending"] == 1
    expected = dash.call("viewer", "GET", f"/api/v1/requests/{rid}").json()["expected_completion"]
    assert expected == done["next_run"] and datetime.fromisoformat(expected).weekday() == 0
    assert dash.store.ledger.batch_cron() == "0 0 2 * * 1"  # what the CLI and the pipeline read
    assert [a.action for a in dash.store.actions()][:1] == ["schedule"]


def test_runs_are_refused_for_unapproved_requests_and_overlaps(dash: Dash) -> None:
    fresh = dash.file("alice")["id"]
    refused = dash.call("olga", "POST", "/api/v1/runs", json={"request_ids": [fresh]})
    assert refused.status_code == 409 and "approved" in refused.json()["detail"]
    assert dash.call("olga", "POST", "/api/v1/runs", json={"request_ids": []}).status_code == 409
    rid = dash.approved()
    run = dash.call("olga", "POST", "/api/v1/runs", json={"all_approved": True})
    assert run.status_code == 202 and run.json()["request_ids"] == [rid] and run.json()["status"] == "queued"
    again = dash.call("olga", "POST", "/api/v1/runs", json={"request_ids": [rid]})
    assert again.status_code == 409 and "already covers" in again.json()["detail"]
    listed = dash.call("viewer", "GET", "/api/v1/runs").json()
    assert [r["id"] for r in listed] == [run.json()["id"]]
    from unlearnops.dashboard.runs import list_runs

    assert [r.id for r in list_runs(dash.store, request_id=rid)] == [run.json()["id"]]
    assert list_runs(dash.store, request_id=rid[:-1]) == []  # matched exactly, not as a prefix
    assert dash.call("viewer", "GET", "/api/v1/runs/nope").status_code == 404
    bad = dash.call("olga", "POST", "/api/v1/runs", json={"request_ids": ["a b"]})
    assert bad.status_code == 422


FAKE_RUN = """
import json, sys, time
events = sys.argv[sys.argv.index("--events") + 1]
def emit(**e):
    with open(events, "a") as f:
        f.write(json.dumps(e) + "\\n")
emit(event="run-started", run_root="/tmp/fake-root", request_ids=[])
for step, status in (("resolve-scope-op", "SUCCESS"), ("unlearn-op", "{status}")):
    emit(event="step-started", step=step)
    time.sleep(0.2)
    emit(event="step-finished", step=step, status=status, seconds=0.2)
emit(event="run-finished", exit_code={code}, outcome="{outcome}", message="{message}", versions={versions},
     run_root="/tmp/fake-root", failed_steps=[])
"""


@pytest.mark.parametrize(
    "status,code,outcome,versions", [("SUCCESS", 0, "promoted", ["models:/m/2"]), ("FAILURE", 1, "error", [])]
)
def test_run_worker_follows_the_child_step_events(
    dash: Dash, monkeypatch: pytest.MonkeyPatch, status: str, code: int, outcome: str, versions: list[str]
) -> None:
    rid = dash.approved()
    queued = dash.call(
        "olga",
        "POST",
        "/api/v1/runs",
        json={"request_ids": [rid], "method": "npo", "params": {"train.steps": "3"}},
    ).json()
    seen: list[list[str]] = []
    script = FAKE_RUN.format(
        status=status, code=code, outcome=outcome, message=f"{outcome} message", versions=versions
    )

    real_command = runs_module.command

    def child_command(run: Any, defaults: Any, events: Path, policy: str) -> list[str]:
        seen.append(real_command(run, defaults, events, policy))  # what would have run
        return [sys.executable, "-c", script, "--events", str(events)]

    monkeypatch.setattr(runs_module, "command", child_command)
    worker = RunWorker(dash.store, dash.app.state.defaults, poll_s=0.05)
    worker.execute(get_run(dash.store, queued["id"]))  # type: ignore[arg-type]
    done = dash.call("viewer", "GET", f"/api/v1/runs/{queued['id']}").json()
    assert done["status"] == ("promoted" if code == 0 else "failed") and done["exit_code"] == code
    assert [(s["name"], s["status"]) for s in done["steps"]] == [
        ("resolve-scope-op", "SUCCESS"),
        ("unlearn-op", status),
    ]
    assert done["failed_step"] == ("" if code == 0 else "unlearn-op") and done["versions"] == versions
    assert done["run_root"] == "/tmp/fake-root" and done["gates"] == []
    argv = seen[0]
    assert argv[argv.index("--request") + 1] == rid and argv[argv.index("--method") + 1] == "npo"
    assert "train.steps=3" in argv and argv[argv.index("--corpus") + 1].endswith("corpus")


# ------------------------------------------------------------------ DSAR integration and callbacks
class _Receiver(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.fail_first > 0:
            _Receiver.fail_first -= 1
            self.send_response(503)
        else:
            _Receiver.got.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.got, _Receiver.fail_first = [], 1
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("UNLEARNOPS_DASHBOARD__CALLBACK_SECRET", "cb-secret")
    monkeypatch.setenv("UNLEARNOPS_DASHBOARD__CALLBACK_HOSTS", '["127.0.0.1"]')
    get_settings.cache_clear()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_dsar_create_is_idempotent_and_status_changes_are_signed_callbacks(dash: Dash, receiver: str) -> None:
    body = {
        "external_ref": "FIDES-42",
        "kind": "subject",
        "legal_basis": "gdpr-art17",
        "requester": "privacy@shop.example",
        "subject_ids": ["person-0007"],
        "callback_url": receiver,
    }
    first = dash.call("bob", "POST", "/api/v1/dsar/requests", json=body)
    assert first.status_code == 201
    again = dash.call("bob", "POST", "/api/v1/dsar/requests", json={**body, "subject_ids": ["other"]})
    assert again.status_code == 200 and again.json()["request_id"] == first.json()["request_id"]
    assert dash.call("alice", "POST", "/api/v1/dsar/requests", json=body).status_code == 409  # not alice's
    rid = first.json()["request_id"]
    status = dash.call("bob", "GET", "/api/v1/dsar/requests/FIDES-42").json()
    assert status["status"] == "received" and status["certificate_available"] is False
    assert dash.call("alice", "GET", "/api/v1/dsar/requests/FIDES-42").status_code == 404
    for step in ("verify", "approve"):
        dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/{step}")
    for bad_url in ("http://10.0.0.1/x", "ftp://h/x", "https://u:p@h/x"):
        refused = dash.call(
            "bob",
            "POST",
            "/api/v1/dsar/requests",
            json={**body, "external_ref": f"R-{bad_url[:4]}", "callback_url": bad_url},
        )
        assert refused.status_code == 422, bad_url
    dispatcher = Dispatcher(dash.store, backoff_s=0.05)
    deadline = time.monotonic() + 20
    while len(_Receiver.got) < 3 and time.monotonic() < deadline:
        dispatcher.step()
        time.sleep(0.06)
    assert [json.loads(b)["status"] for _, b in _Receiver.got] == ["received", "verified", "approved"]
    headers, raw = _Receiver.got[0]
    stamp, digest = (p.split("=", 1)[1] for p in headers["X-Unlearnops-Signature"].split(","))
    expected = hmac.new(b"cb-secret", f"{stamp}.".encode() + raw, hashlib.sha256).hexdigest()
    assert digest == expected and sign(b"cb-secret", int(stamp), raw).endswith(expected)
    event = json.loads(raw)
    assert event["external_ref"] == "FIDES-42" and event["type"] == "request.status_changed"
    assert "person-0007" not in raw.decode()  # never the selectors
    from unlearnops.dashboard.callbacks import deliveries

    rows = deliveries(dash.store, rid)
    assert [r.status for r in rows] == ["delivered"] * 3 and rows[0].attempts == 2  # retried after a 503


# ------------------------------------------------------------------ certificates
def test_certificates_download_and_verify(dash: Dash) -> None:
    from unlearnops import certificates

    rid = dash.approved("alice")
    req = dash.store.ledger.get(rid)
    body = certificates.CertificateBody(
        request=certificates.CertRequest(
            request_id=rid,
            regime=req.legal_basis.value,
            received_at=req.received_at,
            due_at=req.due_at,
            completed_at=req.received_at,
            subject_hashes=req.selector_hashes,
            outcome="unlearned",
        ),
        performer="pipeline:run-1",
        approver="carol",
    )
    certificates.issue(body)
    listed = dash.call("viewer", "GET", "/api/v1/certificates").json()
    assert [c["request_id"] for c in listed] == [rid] and listed[0]["verified"]
    assert dash.call("bob", "GET", "/api/v1/certificates").json() == []  # not bob's request
    operator = dash.call("viewer", "GET", f"/api/v1/certificates/{rid}")
    assert operator.status_code == 200 and "attachment" in operator.headers["content-disposition"]
    assert json.loads(operator.text)["certificate"]["edition"] == "operator"
    mine = dash.call("alice", "GET", f"/api/v1/certificates/{rid}", params={"edition": "operator"})
    assert json.loads(mine.text)["certificate"]["edition"] == "requester"  # a requester gets its copy
    page = dash.call("alice", "GET", f"/api/v1/certificates/{rid}", params={"format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    checked = dash.call(
        "viewer", "POST", "/api/v1/certificates/verify", json=json.loads(operator.text)
    ).json()
    assert checked == {"valid": True, "message": checked["message"], "request_id": rid}
    forged = json.loads(operator.text)
    forged["certificate"]["approver"] = "mallory"
    bad = dash.call("viewer", "POST", "/api/v1/certificates/verify", json=forged).json()
    assert bad["valid"] is False and "altered" in bad["message"]
    assert dash.call("viewer", "GET", f"/api/v1/certificates/{rid}/verify").json()["valid"] is True
    assert dash.call("viewer", "GET", "/api/v1/certificates/nope").status_code == 404
    assert dash.call("viewer", "GET", "/api/v1/certificates/..").status_code == 404
    assert dash.call("viewer", "POST", "/api/v1/certificates/verify", json={"x": 1}).json()["valid"] is False


# ------------------------------------------------------------------ fuzzing the OpenAPI
@pytest.mark.slow
def test_fuzz_openapi_each_role_no_5xx(dash: Dash) -> None:
    """schemathesis over /api/openapi.json with each role's token (positive and negative): no 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    dash.approved("alice")
    schema = schemathesis.openapi.from_dict(dash.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    codes: list[int] = []

    def checker(user: str, operation: Any, mode: Any) -> Any:
        @settings(max_examples=4, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **dash.h(user)}
            kwargs.pop("base_url", None)
            if not kwargs.get("cookies"):
                kwargs.pop("cookies", None)
            r = dash.client.request(**kwargs)
            codes.append(r.status_code)
            assert r.status_code < 500, (user, case.method, case.formatted_path, r.status_code, r.text[:300])

        return check

    for user in ("viewer", "alice", "carol", "olga"):
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    checker(user, operation, mode)()
                except Unsatisfiable:
                    pass
    assert sum(200 <= c < 300 for c in codes) > 50 and sum(400 <= c < 500 for c in codes) > 50  # both kinds


def test_kfp_backend_submits_the_pipeline_and_follows_its_state(
    dash: Dash, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With UNLEARNOPS_KFP_HOST a run is a KFP run: the same RunRequest submitted to the API (the stub
    checks the parameters against the compiled pipeline), its state polled, the outcome from the ledger."""
    from tests.stubs.kfp_api import KfpApiStub

    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with KfpApiStub() as stub:
        monkeypatch.setenv("UNLEARNOPS_KFP_HOST", stub.url)
        get_settings.cache_clear()
        rid = dash.approved()
        queued = dash.call(
            "olga", "POST", "/api/v1/runs", json={"request_ids": [rid], "params": {"beta": "0.2"}}
        ).json()

        def cluster_finishes() -> None:
            deadline = time.monotonic() + 60
            while not stub.state.runs and time.monotonic() < deadline:
                time.sleep(0.05)
            dash.store.ledger.set_status(rid, S.running, actor="pipeline")
            dash.store.ledger.set_status(rid, S.completed, actor="pipeline", model_uri="models:/m/2")
            next(iter(stub.state.runs.values()))["state"] = "SUCCEEDED"

        finisher = threading.Thread(target=cluster_finishes)
        finisher.start()
        worker = RunWorker(dash.store, dash.app.state.defaults, poll_s=0.05)
        worker.execute_kfp(get_run(dash.store, queued["id"]))  # type: ignore[arg-type]
        finisher.join()
        done = get_run(dash.store, queued["id"])
        assert done is not None and done.status == "promoted" and done.exit_code == 0
        [submitted] = stub.calls("POST", "/runs")
        params = submitted.body["runtime_config"]["parameters"]
        assert params["request_ids"] == rid  # the default method's recipe with the value given
        assert json.loads(params["method_params"]) == {**DEFAULT_METHOD_PARAMS, "beta": 0.2}
        assert params["promote_target"] == "kserve"
        assert submitted.body["display_name"] == f"dashboard-{done.id}"


def test_kfp_schedule_replaces_the_recurring_run(
    dash: Dash, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.stubs.kfp_api import KfpApiStub

    monkeypatch.setenv("HOME", str(tmp_path))
    with KfpApiStub() as stub:
        monkeypatch.setenv("UNLEARNOPS_KFP_HOST", stub.url)
        get_settings.cache_clear()
        for cron_text in ("0 0 2 * * *", "0 30 3 * * 1"):
            r = dash.call("olga", "PUT", "/api/v1/schedule", json={"cron": cron_text})
            assert r.status_code == 200 and r.json()["backend"] == "kfp"
        [live] = stub.state.recurring_runs.values()  # replaced, never two
        assert live["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * 1"
        assert "request_ids" not in live["runtime_config"]["parameters"]  # the batch selects its own
        refused = dash.call("olga", "PUT", "/api/v1/schedule", json={"cron": "0 2 * * *"})
        assert refused.status_code == 400 and "6 fields" in refused.json()["detail"]
        assert dash.store.ledger.batch_cron() == "0 30 3 * * 1"  # unchanged when KFP refused


def test_comments_are_purged_with_the_selectors_at_a_final_status(dash: Dash) -> None:
    from unlearnops.dashboard.callbacks import PURGED_TEXT

    rid = dash.file("alice")["id"]
    dash.call("carol", "POST", f"/api/v1/requests/{rid}/comments", json={"text": "Ada Quill called twice"})
    keep = dash.file("alice")["id"]
    dash.call("carol", "POST", f"/api/v1/requests/{keep}/comments", json={"text": "still open"})
    denied = dash.call("carol", "POST", f"/api/v1/requests/{rid}/actions/deny",
                       json={"code": "identity-not-verified", "reason": "no proof of identity"})
    assert denied.status_code == 200 and dash.store.ledger.get(rid).purged
    Dispatcher(dash.store).step()
    comments = {e["detail"] for e in dash.call("viewer", "GET", f"/api/v1/requests/{rid}/timeline").json()
                if e["kind"] == "comment"}
    assert comments == {PURGED_TEXT}
    kept = [e["detail"] for e in dash.call("viewer", "GET", f"/api/v1/requests/{keep}/timeline").json()
            if e["kind"] == "comment"]
    assert kept == ["still open"]
