"""``unlearnops ray start|status|stop``: a real detached Ray head, attached to, stopped by its pid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import unlearnops.cli.local_ray  # noqa: F401  (registers ``ray`` on the app)
from unlearnops import local_ray
from unlearnops.cli import app

pytestmark = pytest.mark.slow  # starts a real Ray head (~10 s on 2 cores)


def _address(output: str) -> str:
    line = next(ln for ln in output.splitlines() if ln.startswith("export "))
    return line.removeprefix("export UNLEARNOPS_RAY_ADDRESS=")


def test_start_attach_stop(unlearnops_home: Path) -> None:
    import ray

    cli = CliRunner()
    assert cli.invoke(app, ["ray", "status"]).exit_code == 2  # none yet
    first = cli.invoke(app, ["ray", "start", "--num-cpus", "1"])
    assert first.exit_code == 0, first.output
    address = _address(first.output)
    state = json.loads((unlearnops_home / local_ray.STATE_FILE).read_text())
    try:
        assert state["address"] == address and address.rsplit(":", 1)[1].isdigit()
        assert len(state["temp_dir"]) < 40 and Path(state["temp_dir"]).is_dir()
        again = cli.invoke(app, ["ray", "start"])  # idempotent: the same head, not a second one
        assert again.exit_code == 0 and _address(again.output) == address
        assert "already running" in again.output
        status = cli.invoke(app, ["ray", "status"])
        assert status.exit_code == 0 and _address(status.output) == address

        ray.init(address=address, log_to_driver=False)
        try:
            assert ray.cluster_resources()["CPU"] == 1
            assert ray.get(ray.remote(lambda: os.getpid()).remote()) != os.getpid()
        finally:
            ray.shutdown()
    finally:
        stopped = cli.invoke(app, ["ray", "stop"])
    assert stopped.exit_code == 0 and f"pid {state['pid']}" in stopped.output
    assert not local_ray.pid_alive(state["pid"])
    assert not Path(state["temp_dir"]).exists()
    assert not (unlearnops_home / local_ray.STATE_FILE).exists()
    assert cli.invoke(app, ["ray", "stop"]).output.startswith("no local Ray")  # idempotent
    assert cli.invoke(app, ["ray", "status"]).exit_code == 2


def test_stale_state_file_is_ignored(unlearnops_home: Path) -> None:
    unlearnops_home.mkdir(parents=True, exist_ok=True)
    path = unlearnops_home / local_ray.STATE_FILE
    path.write_text(json.dumps({"address": "127.0.0.1:1", "pid": 2**22 + 12345, "temp_dir": "/tmp/x"}))
    assert local_ray.current() is None and not path.exists()
