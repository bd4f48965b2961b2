"""The end of ``make demo``: start the dashboard over the demo's ledger and registry, print its URL
and a viewer token.

The dashboard runs detached (its own session), logging to ``HOME/dashboard.log``; its pid is kept
beside the demo folder (``<home>-dashboard.pid``, outside the folder the next demo removes), so the
next demo stops it first. ``UNLEARNOPS_DEMO_DASHBOARD=0`` only prints the command to start it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from ..cli import command_line
from .auth import Role, create_token
from .store import Store


def pid_file(home: Path) -> Path:
    return home.parent / f"{home.name}-dashboard.pid"


def stop_previous(home: Path) -> None:
    """Stop the dashboard an earlier demo left running (its pid file), if it still runs."""
    file = pid_file(home)
    try:
        pid = int(file.read_text().strip())
        os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    file.unlink(missing_ok=True)


def _port(preferred: int = 8600) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 50)]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assignments(params: dict[str, object], prefix: str = "") -> list[str]:
    """``{"alpha": 1, "train": {"steps": 5}}`` → ``["alpha=1", "train.steps=5"]`` (``--param`` items)."""
    out: list[str] = []
    for key, value in params.items():
        if isinstance(value, dict):
            out += assignments(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return out


def offer_dashboard(home: Path, *, model_name: str, corpus: str, reference: str, method: str,
                    params: dict[str, object]) -> list[str]:
    """Start the dashboard for the demo; the lines to print (URL, viewer token, how to stop it)."""
    from ..ledger import Ledger

    with Ledger() as ledger:
        token = create_token(Store(ledger), "demo-viewer", Role.viewer, "demo")[0]
    argv = ["dashboard", "serve", "--model-name", model_name, "--corpus", corpus, "--reference", reference,
            "--method", method, *[x for item in assignments(params) for x in ("--param", item)]]
    if os.environ.get("UNLEARNOPS_DEMO_DASHBOARD", "1") == "0":
        return [f"dashboard: start it with `UNLEARNOPS_HOME={home} unlearnops {' '.join(argv)}`; "
                f"viewer token: {token}"]
    port = _port()
    log = (home / "dashboard.log").open("ab")
    child = subprocess.Popen(command_line(*argv, "--port", str(port)), stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    pid_file(home).write_text(str(child.pid))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if httpx.get(f"{url}api/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    if child.poll() is not None:
        return [f"dashboard: it did not start (see {home / 'dashboard.log'}); start it with "
                f"`UNLEARNOPS_HOME={home} unlearnops {' '.join(argv)}`"]
    return [f"dashboard: {url}  (sign in with the viewer token {token}; more tokens: "
            f"`UNLEARNOPS_HOME={home} unlearnops dashboard token create --name YOU --role operator`)",
            f"dashboard runs in the background: stop it with `kill {child.pid}`"]
