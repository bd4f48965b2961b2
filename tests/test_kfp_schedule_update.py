"""``schedule`` creates *or updates* the recurring run (what the chart's post-upgrade Job relies on)."""

from __future__ import annotations

import pytest
from unlearnops.pipelines import remote

from tests.stubs.kfp_api import KfpApiStub

PARAMS = {"corpus_uri": "s3://data/corpus", "model_name": "people-qa"}


@pytest.fixture
def stub(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with KfpApiStub() as server:
        yield server


def test_schedule_twice_replaces_the_recurring_run(stub: KfpApiStub) -> None:
    first = remote.schedule(stub.url, PARAMS, cron="0 0 2 * * *", name="nightly")
    other = remote.schedule(stub.url, PARAMS, cron="0 0 4 * * *", name="other")
    second = remote.schedule(stub.url, PARAMS, cron="0 30 3 * * *", name="nightly")
    runs = stub.state.recurring_runs
    assert first.recurring_run_id not in runs
    assert {second.recurring_run_id, other.recurring_run_id} == set(runs)
    assert runs[second.recurring_run_id]["trigger"]["cron_schedule"]["cron"] == "0 30 3 * * *"
    assert len(stub.calls("DELETE", f"/recurringruns/{first.recurring_run_id}")) == 1
