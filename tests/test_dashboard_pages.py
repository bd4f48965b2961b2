"""The dashboard's HTML pages (no browser): each page for each role, CSRF on forms, the file form.

The app runs in process (FastAPI's TestClient) over a fresh home's SQLite ledger with real tokens;
each user signs in through ``/login`` the way a browser does (the session cookie), and posts forms
with the CSRF token the page carries. The run worker is off: runs stay queued.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from unlearnops.dashboard.app import create_app
from unlearnops.dashboard.auth import Role, create_token
from unlearnops.dashboard.runs import RunDefaults
from unlearnops.dashboard.store import runs_table
from unlearnops.types import RequestStatus

USERS = {"vera": Role.viewer, "alice": Role.requester, "bob": Role.requester, "carol": Role.approver,
         "olga": Role.operator}
PAGES = ("/requests", "/requests/new", "/runs", "/models", "/certificates", "/schedule")
# who gets what: 200, or 403 for a role the page is not for
EXPECTED = {
    "vera": {"/requests/new": 403},
    "alice": {"/runs": 403, "/models": 403},
    "carol": {},
    "olga": {},
}
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


class Browser:
    """One signed-in user: a client holding the session cookie."""

    def __init__(self, app: Any, token: str) -> None:
        self.client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
        r = self.client.post("/login", data={"token": token, "next": "/requests"})
        assert r.status_code == 303 and r.headers["location"] == "/requests", r.text

    def get(self, path: str) -> Any:
        return self.client.get(path)

    def csrf(self, path: str = "/requests") -> str:
        found = CSRF.search(self.get(path).text)
        assert found, "the page carries no CSRF token"
        return found.group(1)

    def post(self, path: str, data: dict[str, Any], csrf: bool = True) -> Any:
        return self.client.post(path, data={**data, **({"csrf_token": self.csrf()} if csrf else {})})


class Site:
    def __init__(self, app: Any) -> None:
        self.app, self.store = app, app.state.store
        self.tokens = {n: create_token(self.store, n, r, "test")[0] for n, r in USERS.items()}
        with TestClient(app):  # run the lifespan once (tables exist either way)
            pass

    def as_(self, user: str) -> Browser:
        return Browser(self.app, self.tokens[user])

    def file(self, user: str = "alice", **fields: Any) -> str:
        data = {"kind": "subject", "legal_basis": "gdpr-art17", "requester": "dpo@example.org",
                "subject_ids": "person-0001\nperson-0002", **fields}
        r = self.as_(user).post("/requests/new", data)
        assert r.status_code == 303, r.text
        return str(r.headers["location"]).rsplit("/", 1)[-1]


@pytest.fixture
def site(unlearnops_home: Path) -> Iterator[Site]:
    app = create_app(RunDefaults(corpus_uri=str(unlearnops_home / "corpus"), model_name="no-such-model"),
                     workers=False)
    yield Site(app)
    app.state.store.ledger.close()


def test_signed_out_pages_redirect_to_login(site: Site) -> None:
    client = TestClient(site.app, follow_redirects=False)
    for path in (*PAGES, "/requests/abc", "/runs/abc"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}", path
    login = client.get("/login?next=//evil.example/")
    assert login.status_code == 200 and 'value="/"' in login.text  # no open redirect
    bad = client.post("/login", data={"token": "nope", "next": "/requests"})
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_each_page_renders_or_refuses_for_each_role(site: Site, user: str) -> None:
    rid = site.file()
    me = site.as_(user)
    for path in PAGES:
        r = me.get(path)
        assert r.status_code == EXPECTED[user].get(path, 200), (user, path, r.text[:500])
        assert "<script>" not in r.text and " style=" not in r.text  # CSP: nothing inline
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
    page = me.get(f"/requests/{rid}")
    assert page.status_code == 200 and rid in page.text
    decides = f'action="/requests/{rid}/decide"' in page.text
    assert decides == (user in ("carol", "olga"))  # hidden from roles that may not decide
    assert ('action="/runs"' in me.get("/runs").text) == (user == "olga")
    assert ("Save schedule" in me.get("/schedule").text) == (user == "olga")


def test_requester_sees_only_its_own(site: Site) -> None:
    mine, theirs = site.file("alice"), site.file("bob")
    site.as_("carol").post(f"/requests/{mine}/decide", {"decision": "verify"})
    alice = site.as_("alice")
    queue = alice.get("/requests?unverified=true").text
    assert mine in queue and theirs not in queue
    assert alice.get(f"/requests/{theirs}").status_code == 404
    own = alice.get(f"/requests/{mine}").text
    assert "person-0001" not in own and "Selector hashes" not in own  # no raw selectors, staff fields hidden
    assert "carol" not in own  # staff names are not shown to the requester


def test_queue_filters_persist_and_csv_link_keeps_the_query(site: Site) -> None:
    rid = site.file(external_ref="TICKET-42")
    carol = site.as_("carol")
    assert rid not in carol.get("/requests").text  # unverified hidden by default
    page = carol.get("/requests?unverified=true&q=TICKET-42&regime=gdpr-art17").text
    assert rid in page and 'value="TICKET-42"' in page
    assert 'href="/api/v1/requests.csv?unverified=true&amp;q=TICKET-42&amp;regime=gdpr-art17"' in page
    assert re.search(r'value="gdpr-art17" checked', page)
    csv = carol.get("/api/v1/requests.csv?unverified=true&q=TICKET-42")  # the cookie authenticates GETs
    assert csv.status_code == 200 and rid in csv.text
    assert rid not in carol.get("/requests?unverified=true&q=nothing-matches").text


def test_decisions_comments_and_bulk_on_the_pages(site: Site) -> None:
    a, b = site.file(), site.file()
    carol = site.as_("carol")
    for step in ("verify", "approve"):
        r = carol.post(f"/requests/{a}/decide", {"decision": step})
        assert r.status_code == 303 and r.headers["location"] == f"/requests/{a}"
    assert site.store.ledger.get(a).status == RequestStatus.approved
    refused = carol.post(f"/requests/{b}/decide", {"decision": "approve"})  # not verified yet
    assert refused.status_code == 409 and 'role="alert"' in refused.text
    denied = carol.post(f"/requests/{b}/decide", {"decision": "deny", "code": "exemption", "reason": ""})
    assert denied.status_code == 409 and "needs a reason" in denied.text
    r = carol.post(f"/requests/{a}/comments", {"text": "checked the scope", "visibility": "internal"})
    assert r.status_code == 303
    r = carol.post(f"/requests/{a}/comments", {"text": "we are on it", "visibility": "requester"})
    staff_view, own_view = carol.get(f"/requests/{a}").text, site.as_("alice").get(f"/requests/{a}").text
    assert "checked the scope" in staff_view and "we are on it" in staff_view
    assert "checked the scope" not in own_view and "we are on it" in own_view

    c = site.file()
    bulk = carol.post("/requests/bulk", {"ids": [b, c], "action": "hold", "code": "legal-hold",
                                         "reason": "litigation"})
    assert bulk.status_code == 200 and "2 of 2 applied" in bulk.text
    assert site.store.ledger.get(c).status == RequestStatus.on_hold
    none = carol.post("/requests/bulk", {"action": "approve"})
    assert none.status_code == 200 and "tick at least one" in none.text
    assert site.as_("alice").post("/requests/bulk", {"ids": [c], "action": "approve"}).status_code == 403


def test_forms_without_the_csrf_token_are_refused(site: Site) -> None:
    rid = site.file()
    carol = site.as_("carol")
    for path, data in ((f"/requests/{rid}/decide", {"decision": "verify"}),
                       ("/requests/bulk", {"ids": [rid], "action": "approve"}),
                       ("/requests/new", {"kind": "subject", "legal_basis": "ccpa", "requester": "x",
                                          "subject_ids": "p1"}),
                       (f"/requests/{rid}/comments", {"text": "hi"})):
        r = carol.post(path, data, csrf=False)
        assert r.status_code == 403 and "CSRF" in r.text, path
        wrong = carol.client.post(path, data={**data, "csrf_token": "0" * 40})
        assert wrong.status_code == 403, path
    assert site.store.ledger.get(rid).status == RequestStatus.received
    assert site.store.ledger.page(statuses=list(RequestStatus), limit=10)[1] == 1  # nothing filed


def test_file_form_error_shows_next_to_the_field_and_stores_nothing(site: Site) -> None:
    alice = site.as_("alice")
    form = alice.get("/requests/new").text
    assert 'name="subject_ids"' in form and "<textarea" in form
    r = alice.post("/requests/new", {"kind": "subject", "legal_basis": "gdpr-art17", "requester": "",
                                     "subject_ids": "person-0007", "id": "keep-this-id"})
    assert r.status_code == 422
    assert re.search(r'id="requester"[^>]*>\s*<p class="field-error" id="requester-error"', r.text)
    assert 'value="keep-this-id"' in r.text and "person-0007" in r.text  # what was typed is kept
    r = alice.post("/requests/new", {"kind": "nonsense", "legal_basis": "gdpr-art17", "requester": "x"})
    assert r.status_code == 422 and 'id="kind-error"' in r.text
    r = alice.post("/requests/new", {"kind": "subject", "legal_basis": "gdpr-art17", "requester": "x",
                                     "deadline": "not a date"})
    assert r.status_code == 422 and 'id="deadline-error"' in r.text
    assert site.store.ledger.page(statuses=list(RequestStatus), limit=10)[1] == 0  # nothing stored
    ok = alice.post("/requests/new", {"kind": "subject", "legal_basis": "ccpa", "requester": "x",
                                      "subject_ids": "p1\n\n p2 \n", "id": "req-fine"})
    assert ok.status_code == 303 and ok.headers["location"] == "/requests/req-fine"
    assert site.store.ledger.get("req-fine").selectors.subject_ids == ["p1", "p2"]


def test_runs_pages_poll_while_a_run_is_not_done(site: Site) -> None:
    rid = site.file()
    carol = site.as_("carol")
    for step in ("verify", "approve"):
        carol.post(f"/requests/{rid}/decide", {"decision": step})
    olga = site.as_("olga")
    page = olga.get("/runs").text
    assert f'value="{rid}"' in page and 'hx-trigger' not in page  # nothing running: no polling
    r = olga.post("/runs", {"request_ids": [rid], "method": "npo"})
    assert r.status_code == 303
    run_path = r.headers["location"]
    run_id = run_path.rsplit("/", 1)[-1]
    listing = olga.get("/runs").text
    assert run_id in listing and 'hx-get="/runs/_list"' in listing and 'hx-trigger="every 2s"' in listing
    assert 'hx-get="/runs/_list"' in olga.get("/runs/_list").text
    body = olga.get(run_path).text
    assert "queued" in body and f'hx-get="/runs/{run_id}/_body"' in body
    again = olga.post("/runs", {"request_ids": [rid]})
    assert again.status_code == 409 and "already covers" in again.text
    site.store.execute(update(runs_table).where(runs_table.c.id == run_id).values(
        status="failed", message="resolve-scope-op failed: no corpus",
        steps=[{"name": "resolve-scope-op", "status": "FAILURE", "seconds": 1.5}]))
    done = olga.get(run_path).text
    assert "hx-trigger" not in done and "Failing step" in done and "resolve-scope-op" in done
    assert "hx-trigger" not in olga.get("/runs/_list").text  # polling stops once every run is done
    assert olga.get("/runs/nope").status_code == 404


def test_models_certificates_and_schedule_pages(site: Site) -> None:
    olga = site.as_("olga")
    models = olga.get("/models?name=no-such-model")
    assert models.status_code == 200 and "No versions" in models.text
    assert olga.get("/models?name=bad name!").status_code == 422
    certs = olga.get("/certificates")
    assert "No certificate" in certs.text and 'enctype="multipart/form-data"' in certs.text
    r = olga.post("/certificates/verify", {"document": '{"certificate": {}}'})
    assert r.status_code == 200 and "NOT VALID" in r.text
    r = olga.client.post("/certificates/verify", data={"csrf_token": olga.csrf()},
                         files={"file": ("c.json", b"not json", "application/json")})
    assert r.status_code == 200 and "NOT VALID" in r.text
    assert olga.post("/certificates/verify", {"document": ""}).status_code == 400
    bad = olga.post("/schedule", {"cron": "every tuesday"})
    assert bad.status_code == 400 and 'id="cron-error"' in bad.text and 'value="every tuesday"' in bad.text
    good = olga.post("/schedule", {"cron": "0 0 2 * * *"})
    assert good.status_code == 303
    shown = olga.get("/schedule").text
    assert "0 0 2 * * *" in shown and "02:00" in shown
    assert site.as_("carol").post("/schedule", {"cron": ""}).status_code == 403
