"""The dashboard in a real headless Chromium (Debian's ``chromium`` driven by Playwright).

``unlearnops dashboard serve`` runs as a child process on a free loopback port over a fresh home
with the tiny benchmark model registered as champion and the benchmark corpus. A requester files
a request for one forget person, an approver (a second user) verifies and approves it, an operator
triggers a run and watches its steps finish on the run page (htmx polling), sees the gate table,
then opens the certificate on the request page, downloads its JSON and verifies it (the page's
verify, the upload form, and :func:`unlearnops.dashboard.certs.check` on the downloaded bytes).

Screenshots of every page go to ``tmp_path/screenshots`` (the path is printed); with
``UNLEARNOPS_UPDATE_SCREENSHOTS=1`` they are copied to ``docs/img/dashboard-*.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.env import free_port, stop_process_group

MODEL = "people-qa-dash"
# the pipeline test's lenient policy: a run on the tiny model promotes (the flow, not the gates, is tested)
LENIENT = {"gates": [{"name": "forget-rouge", "metric": "forget.rouge_l", "max": 1.0}]}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DONE = re.compile(r"^(promoted|already-unlearned|gate-failed|failed)$")
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
RUN_WAIT_MS = 15 * 60 * 1000

pytestmark = pytest.mark.slow


@dataclass
class Server:
    url: str
    tokens: dict[str, str]
    subject: str
    log: Path


@pytest.fixture
def dashboard(unlearnops_home: Path, tiny_models: Path, bench_data: Path, tmp_path: Path) -> Iterator[Server]:
    """``unlearnops dashboard serve`` with the tiny model as champion; tokens for four users."""
    from unlearnops.components.promote.promote import promote
    from unlearnops.components.register.register import register_model

    from unlearnops.dashboard.auth import Role, create_token
    from unlearnops.dashboard.store import Store
    from unlearnops.ledger import Ledger

    ref = register_model(str(tiny_models / "base"), MODEL)
    promote(MODEL, str(ref.version), expect_parent=False)
    with Ledger() as ledger:
        store = Store(ledger)
        tokens = {name: create_token(store, name, role, "test")[0]
                  for name, role in (("alice", Role.requester), ("carol", Role.approver),
                                     ("olga", Role.operator), ("vera", Role.viewer))}
    policy = tmp_path / "lenient.yaml"
    policy.write_text(yaml.safe_dump(LENIENT))
    subject = json.loads((tiny_models / "forget-request.json").read_text())["selectors"]["subject_ids"][0]
    port = free_port()
    log = tmp_path / "dashboard.log"
    exe = Path(sys.executable).with_name("unlearnops")
    argv = [str(exe), "dashboard", "serve", "--port", str(port), "--model-name", MODEL,
            "--corpus", str(bench_data), "--reference", str(tiny_models / "reference"),
            "--policy", policy.as_uri(), "--param", "train.steps=40"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp_path, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc, log)
        yield Server(url, tokens, subject, log)
    finally:
        stop_process_group(proc)


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"dashboard did not answer in {timeout_s:.0f} s: {log.read_text()[-3000:]}")


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (persistent context in a temp folder) and one page."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); no browser is downloaded")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=binary, headless=True, args=CHROMIUM_FLAGS,
            accept_downloads=True, viewport={"width": 1280, "height": 860})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()


class Shots:
    """Full-page screenshots to the test's artifact folder (and docs/img when asked)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def __call__(self, page: Any, name: str) -> None:
        path = self.folder / f"dashboard-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)

    def publish(self) -> None:
        print(f"screenshots: {self.folder}")
        if os.environ.get("UNLEARNOPS_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            for path in self.taken:
                shutil.copyfile(path, DOCS_IMG / path.name)
            print(f"copied {len(self.taken)} screenshot(s) to {DOCS_IMG}")


def _sign_in(page: Any, server: Server, user: str) -> None:
    page.goto(f"{server.url}/login")
    page.fill("#token", server.tokens[user])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(re.compile(r"/requests"))
    assert user in page.inner_text("header")


def _sign_out(page: Any) -> None:
    page.click("header button:has-text('Sign out')")
    page.wait_for_url(re.compile(r"/login"))


@pytest.mark.timeout(2400)  # model build + a full local run on a loaded 2-core machine
def test_file_approve_run_and_verify_in_chromium(dashboard: Server, browser_page: Any,
                                                 tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from unlearnops.dashboard import certs

    page, server, shot = browser_page, dashboard, Shots(tmp_path / "screenshots")
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{server.url}/requests")
        page.wait_for_url(re.compile(r"/login\?next=/requests"))
        shot(page, "login")

        # a requester files a request; a first try without the requester shows the error beside the field
        _sign_in(page, server, "alice")
        page.goto(f"{server.url}/requests/new")
        page.select_option("#kind", "subject")
        page.select_option("#legal_basis", "gdpr-art17")
        page.fill("#requester", "")
        page.fill("#subject_ids", server.subject)
        page.fill("#external_ref", "DSAR-1001")
        page.click("button:has-text('File request')")
        expect(page.locator("#requester-error")).to_be_visible()
        shot(page, "file-error")
        page.fill("#requester", "data-subject@example.org")
        page.click("button:has-text('File request')")
        page.wait_for_url(re.compile(r"/requests/req-[0-9a-f]+$"))
        rid = page.url.rsplit("/", 1)[-1]
        expect(page.locator("h1")).to_contain_text("received")
        assert server.subject not in page.content()  # raw selectors are never shown
        _sign_out(page)

        # an approver (a second user) verifies and approves it from the queue and the request page
        _sign_in(page, server, "carol")
        page.goto(f"{server.url}/requests?unverified=true")
        expect(page.locator(f"a[href='/requests/{rid}']")).to_be_visible()
        shot(page, "queue")
        page.click(f"a[href='/requests/{rid}']")
        page.click("button:has-text('Verify identity')")
        expect(page.locator("h1")).to_contain_text("verified")
        page.click("button:has-text('Approve')")
        expect(page.locator("h1")).to_contain_text("approved")
        _sign_out(page)

        # an operator triggers a run and watches it on the run page
        _sign_in(page, server, "olga")
        page.goto(f"{server.url}/runs")
        page.check(f"input[name=request_ids][value='{rid}']")
        shot(page, "runs")
        page.click("button:has-text('Trigger run')")
        page.wait_for_url(re.compile(r"/runs/[0-9a-f]{12}$"))
        run_url = page.url
        expect(page.locator("#run-status")).to_have_text(re.compile("running"), timeout=120_000)
        expect(page.locator(".steps-table td", has_text="SUCCESS").first).to_be_visible(timeout=600_000)
        shot(page, "run-live")
        expect(page.locator("#run-status")).to_have_text(DONE, timeout=RUN_WAIT_MS)
        status = page.inner_text("#run-status")
        assert status == "promoted", (page.inner_text("#run-body"), server.log.read_text()[-3000:])
        steps = page.locator(".steps-table tbody tr")
        assert steps.count() >= 4 and all("SUCCESS" in t for t in steps.all_inner_texts())
        gates = page.locator("table.gates tbody tr")
        expect(gates.first).to_be_visible()
        assert any("forget-rouge" in t and "pass" in t for t in gates.all_inner_texts())
        assert "hx-trigger" not in page.inner_html("main")  # polling stopped once done
        shot(page, "run")
        page.goto(f"{server.url}/runs")
        expect(page.locator(f"a[href='{run_url.removeprefix(server.url)}']")).to_be_visible()
        page.goto(f"{server.url}/models?name={MODEL}")
        expect(page.locator("table.versions")).to_contain_text(rid)  # the version that satisfies it
        shot(page, "models")
        page.goto(f"{server.url}/schedule")
        shot(page, "schedule")

        # the certificate: on the request page, downloaded, verified three ways
        page.goto(f"{server.url}/requests/{rid}")
        expect(page.locator("h1")).to_contain_text("completed")
        expect(page.locator("#certificate table")).to_contain_text("unlearned")
        shot(page, "request")
        with page.expect_download() as download:
            page.click("#certificate a:has-text('JSON')")
        saved = tmp_path / "certificate.json"
        download.value.save_as(str(saved))
        checked = certs.check(saved.read_bytes())
        assert checked.ok, checked.message
        assert checked.certificate is not None and checked.certificate.certificate.request.request_id == rid
        page.click("#certificate a:has-text('verify')")
        expect(page.locator("#verify-result")).to_contain_text("VALID —")
        page.set_input_files("#file", str(saved))
        page.click("button:has-text('Verify')")
        expect(page.locator("#verify-result")).to_contain_text(f"Request {rid}: VALID")
        shot(page, "certificates")
        assert not [p for p in problems if "Content Security Policy" in p], problems
    finally:
        shot.publish()
