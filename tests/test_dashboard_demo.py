"""The end of ``make demo``: the dashboard starts detached over the demo's home and answers; the
printed viewer token signs in; the next demo stops it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from unlearnops.dashboard.demo import offer_dashboard, pid_file, stop_previous


@pytest.mark.slow
def test_demo_starts_the_dashboard_and_prints_a_viewer_token(unlearnops_home: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    unlearnops_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("UNLEARNOPS_DEMO_DASHBOARD", "1")
    lines = offer_dashboard(unlearnops_home, model_name="m", corpus=str(unlearnops_home / "corpus"),
                            reference="", method="npo", params={"train.steps": 3})
    try:
        url, token = re.search(r"(http://127\.0\.0\.1:\d+/)\s+\(sign in with the viewer token (\S+);",
                               lines[0]).groups()  # type: ignore[union-attr]
        me = httpx.get(f"{url}api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "viewer"
        assert httpx.get(f"{url}login", timeout=10).status_code == 200
        assert pid_file(unlearnops_home).exists() and "kill" in lines[1]
    finally:
        stop_previous(unlearnops_home)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}api/openapi.json", timeout=1)
        except httpx.HTTPError:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the dashboard kept running after stop_previous")
    assert not pid_file(unlearnops_home).exists()


def test_nested_method_params_become_param_items() -> None:
    from unlearnops.cli.params import parse_assignments
    from unlearnops.dashboard.demo import assignments

    params = {"alpha": 100.0, "train": {"steps": 150, "lr": 3e-4}, "name": "x"}
    items = assignments(params)
    assert items == ["alpha=100.0", "train.steps=150", "train.lr=0.0003", "name=x"]
    assert parse_assignments(items) == params


def test_demo_without_a_dashboard_prints_the_command(unlearnops_home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    unlearnops_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("UNLEARNOPS_DEMO_DASHBOARD", "0")
    [line] = offer_dashboard(unlearnops_home, model_name="m", corpus="/c", reference="/r", method="npo",
                             params={})
    assert "unlearnops dashboard serve --model-name m --corpus /c --reference /r" in line
    assert "viewer token: " in line and not pid_file(unlearnops_home).exists()
