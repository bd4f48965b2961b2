"""The pipeline run locally with kfp.local, and the ledger steps it is built from.

Fast tests call the ledger components' functions directly (``component.python_func``). The slow
tests run the real ``unlearn_on_request`` pipeline on the tiny benchmark model: a run that
promotes (lenient policy) and its idempotent re-run, a run that fails its gates (strict policy,
champion unchanged), and a run whose scope step fails (the exit handler marks the request failed).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from unlearnops.components.ledger import component as ops
from unlearnops.components.ledger import updates

from unlearnops import storage
from unlearnops.ledger import InvalidStatusMove
from unlearnops.model_erasure import requests_tag
from unlearnops.types import ForgetRequest, RequestKind, RequestStatus, Selectors

MODEL = "people-qa-test"
LENIENT = yaml.safe_dump({"gates": [{"name": "forget-rouge", "metric": "forget.rouge_l", "max": 1.0}]})
STRICT = yaml.safe_dump({"gates": [{"name": "impossible-utility", "metric": "utility.model_utility",
                                    "min": 2.0}]})
FAST: dict[str, Any] = {"workers": 1, "method_params": {"train": {"steps": 40}}, "promote_target": "local"}


def _request(rid: str, subjects: list[str], deadline_days: int = 30) -> ForgetRequest:
    now = datetime.now(UTC)
    return ForgetRequest(id=rid, kind=RequestKind.subject, selectors=Selectors(subject_ids=subjects),
                         legal_basis="gdpr-art17", requester="test", received_at=now - timedelta(days=1),
                         deadline=now + timedelta(days=deadline_days))


def _ledger() -> Any:
    from unlearnops.ledger import Ledger

    return Ledger()


def _file_approved(ledger: Any, req: ForgetRequest) -> None:
    """File ``req`` as one person, verify and approve it as another (the ledger's four-eyes rule)."""
    ledger.file(req, actor="filer")
    ledger.set_status(req.id, RequestStatus.verified, "identity checked", actor="dpo")
    ledger.set_status(req.id, RequestStatus.approved, "approved", actor="dpo")


# ------------------------------------------------------------------ ledger steps (fast)
def test_status_moves_and_idempotency(unlearnops_home: Path) -> None:
    with _ledger() as ledger:
        _file_approved(ledger, _request("r1", ["p1"]))
        _file_approved(ledger, _request("r2", ["p2"]))
        ledger.file(_request("r3", ["p3"]), actor="filer")
    with pytest.raises(InvalidStatusMove, match="cannot move from 'received' to 'running'"):
        updates.mark_running(["r3"], "run-a")  # nothing runs unapproved
    assert ops.check_already_unlearned_op.python_func  # a real KFP component
    assert updates.check_already_unlearned(["r1", "r2"]) == (False, "")
    assert ops.mark_running_op.python_func(request_ids=["r1", "r2"], run_id="run-a") == "r1,r2"
    assert ops.mark_running_op.python_func(request_ids=["r1", "r2"], run_id="run-a") == ""  # retried task
    assert updates.running_by("run-a") == ["r1", "r2"] and updates.running_by("run-b") == []
    assert ops.mark_done_op.python_func(request_ids=["r1", "r2"], model_name="m", version="7",
                                        run_id="run-a") == "r1,r2"
    assert updates.check_already_unlearned(["r1", "r2"]) == (True, "models:/m/7")
    # a completed request is never moved again
    assert ops.mark_running_op.python_func(request_ids=["r1"], run_id="run-c") == ""
    with _ledger() as ledger:
        done = ledger.get("r1")
    assert done.status == RequestStatus.completed and done.purged and done.selectors.is_empty()
    assert [c.model_uri for c in done.history if c.status == RequestStatus.completed][0] == "models:/m/7"


def test_gate_failure_reason_and_exit_handler(unlearnops_home: Path, tmp_path: Path) -> None:
    with _ledger() as ledger:
        _file_approved(ledger, _request("r1", ["p1"]))
        _file_approved(ledger, _request("r2", ["p2"]))
    updates.mark_running(["r1"], "run-x")
    moved = ops.mark_failed_op.python_func(request_ids=["r1", "r2"], reasons="forget-rouge: 0.9 > 0.3",
                                           run_id="run-x", model_name="m", version="3")
    assert moved == "r1"  # r2 was never running
    with _ledger() as ledger:
        req = ledger.get("r1")
    last = req.history[-1]
    assert req.status == RequestStatus.failed and last.code == updates.GATES_FAILED
    assert last.gate_reasons == ["forget-rouge: 0.9 > 0.3"] and last.model_uri == "models:/m/3"
    assert not req.purged  # failed is retried: the selectors are still needed

    # exit handler: only requests this run left running, with the failing step named
    updates.mark_running(["r1", "r2"], "run-y")
    root = str(tmp_path / "runs")
    plan = updates.run_plan(root, "run-y")
    storage.write_json(storage.join(plan.scope_uri, "manifest.json"), {})
    ok = ops.exit_mark_failed_op.python_func(run_root=root, run_id="run-y",
                                             status={"state": "SUCCEEDED", "error": {}})
    assert ok == ""
    assert not storage.exists(plan.scope_uri)  # the exit path disposed of the working data
    storage.write_json(storage.join(plan.scope_uri, "manifest.json"), {})
    status = {"state": "FAILED", "pipeline_task_name": "exit-handler-1",
              "error": {"code": 1, "message": "Task exit-handler-1 failed."}}
    assert ops.exit_mark_failed_op.python_func(run_root=root, run_id="run-y", status=status) == "r1,r2"
    with _ledger() as ledger:
        last = ledger.get("r2").history[-1]
    assert "at step unlearn" in last.reason and "exit-handler-1 failed" in last.reason
    assert last.code == updates.PIPELINE_FAILED


def test_pending_requests_earliest_deadline_first(unlearnops_home: Path) -> None:
    with _ledger() as ledger:
        _file_approved(ledger, _request("late", ["a"], deadline_days=20))
        _file_approved(ledger, _request("soon", ["b"], deadline_days=2))
        ledger.file(_request("unapproved", ["c"], deadline_days=1), actor="filer")
    out = ops.pending_requests_op.python_func(cutoff="", schedule_time="{{$.pipeline_job_schedule_time_utc}}")
    assert list(out) == [["soon", "late"], 2]
    past = (datetime.now(UTC) - timedelta(days=10)).isoformat().replace("+00:00", "Z")
    assert list(ops.pending_requests_op.python_func(cutoff=past)) == [[], 0]
    with pytest.raises(ValueError, match="ISO 8601"):
        updates.parse_time("yesterday")


def test_run_plan_and_failed_step(tmp_path: Path) -> None:
    plan = updates.run_plan(str(tmp_path), "{{$.pipeline_job_uuid}}")
    assert plan.run_uri.endswith("/run")  # an unresolved placeholder never becomes a folder name
    plan = updates.run_plan(str(tmp_path), "123")
    assert updates.failed_step(plan) == "resolve_scope"
    storage.write_json(storage.join(plan.model_uri, "training.json"), {})
    storage.write_json(storage.join(plan.scope_uri, "manifest.json"), {})
    assert updates.failed_step(plan) == "evaluate"


# ------------------------------------------------------------------ the pipeline on the tiny model (slow)
def _champion_version() -> str:
    from mlflow import MlflowClient

    from unlearnops.settings import get_settings

    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def _versions() -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient

    from unlearnops.settings import get_settings

    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    return {str(v.version): dict(v.tags) for v in client.search_model_versions(f"name='{MODEL}'")}


@pytest.fixture
def stack(unlearnops_home: Path, tiny_models: Path, bench_data: Path) -> dict[str, str]:
    """A fresh home with the tiny base registered as champion and a request for two forget people."""
    from unlearnops.components.promote.promote import promote
    from unlearnops.components.register.register import register_model

    ref = register_model(str(tiny_models / "base"), MODEL)
    promote(MODEL, str(ref.version), expect_parent=False)
    bench_req = json.loads((tiny_models / "forget-request.json").read_text())
    subjects = bench_req["selectors"]["subject_ids"][:2]
    with _ledger() as ledger:
        _file_approved(ledger, _request("erase-1", subjects))
    return {"corpus": str(bench_data), "reference": str(tiny_models / "reference"),
            "base_version": str(ref.version)}


def _run(stack: dict[str, str], policy: str, corpus: str | None = None, events: Path | None = None) -> Any:
    from unlearnops.pipelines.local_runner import EventSink, run_local
    from unlearnops.pipelines.run_request import RunRequest

    request = RunRequest(request_ids=["erase-1"], corpus_uri=corpus or stack["corpus"], model_name=MODEL,
                         method="npo", policy=policy, reference_uri=stack["reference"], **FAST)
    sink = EventSink(events) if events else None
    try:
        return run_local(request, console=None, events=sink)
    finally:
        if sink:
            sink.close()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # model build + full local runs; slow on a loaded machine
def test_local_run_promotes_then_rerun_is_idempotent(stack: dict[str, str]) -> None:
    run = _run(stack, LENIENT)
    assert run.exit_code == 0, (run.message, run.log_file.read_text()[-4000:])
    champion = _champion_version()
    assert champion != stack["base_version"]
    tags = _versions()[champion]
    assert tags["unlearnops.gate"] == "passed" and tags["unlearnops.requests"] == requests_tag(["erase-1"])
    assert tags["unlearnops.parent_version"] == str(stack["base_version"])
    with _ledger() as ledger:
        req = ledger.get("erase-1")
    assert req.status == RequestStatus.completed and req.purged
    assert updates.completed_by(req) == f"models:/{MODEL}/{champion}"
    assert {s.name for s in run.steps} >= {"resolve-scope-op", "unlearn-op", "evaluate-op", "promote-op"}

    before = _versions()
    again = _run(stack, LENIENT)
    assert again.exit_code == 0 and again.outcome == "already-unlearned"
    assert f"models:/{MODEL}/{champion}" in again.message
    assert _versions() == before and _champion_version() == champion  # nothing unlearned or registered twice
    assert "unlearn-op" not in {s.name for s in again.steps}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # model build + full local runs; slow on a loaded machine
def test_local_run_gate_failure_keeps_champion(stack: dict[str, str], tmp_path: Path) -> None:
    run = _run(stack, STRICT, events=tmp_path / "events.jsonl")
    assert run.exit_code == 3, (run.message, run.log_file.read_text()[-4000:])
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "run-started" and events[0]["run_root"] == run.run_root
    assert events[-1] == {**events[-1], "event": "run-finished", "exit_code": 3, "outcome": "gate-failed"}
    finished = {e["step"]: e["status"] for e in events if e["event"] == "step-finished"}
    started = [e["step"] for e in events if e["event"] == "step-started"]
    assert set(started) == set(finished) and finished["evaluate-op"] == "SUCCESS"
    assert [s.name for s in run.steps] == [e["step"] for e in events if e["event"] == "step-finished"]
    assert _champion_version() == str(stack["base_version"])
    rejected = [t for v, t in _versions().items() if v != str(stack["base_version"])]
    assert len(rejected) == 1 and rejected[0]["unlearnops.gate"] == "failed"
    with _ledger() as ledger:
        req = ledger.get("erase-1")
    assert req.status == RequestStatus.failed and req.history[-1].code == updates.GATES_FAILED
    assert any("impossible-utility" in r for r in req.history[-1].gate_reasons)


@pytest.mark.slow
@pytest.mark.timeout(2400)  # model build + full local runs; slow on a loaded machine
def test_failed_step_marks_request_failed(stack: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    run = _run(stack, LENIENT, corpus=str(empty))
    assert run.exit_code == 1
    with _ledger() as ledger:
        req = ledger.get("erase-1")
    assert req.status == RequestStatus.failed
    assert "at step resolve_scope" in req.history[-1].reason
    assert _champion_version() == str(stack["base_version"])


@pytest.mark.slow
@pytest.mark.timeout(2400)  # model build + full local runs; slow on a loaded machine
def test_cli_run_hands_itself_to_the_staying_warm_server(stack: dict[str, str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With staying servers on, the first ``unlearnops run`` starts one; the next runs in a fork of it."""
    import os
    import subprocess
    import sys

    from unlearnops.pipelines import warm_runner
    from unlearnops.pipelines.local_runner import kfp_root

    policy = tmp_path / "lenient.yaml"
    policy.write_text(LENIENT)
    env = {**os.environ, warm_runner.KEEP_ENV: "60", "WARM_TEST_SETUP": tmp_path.name}
    cmd = [sys.executable, "-c", "from unlearnops.cli import main; main()", "run", "--request", "erase-1",
           "--corpus", stack["corpus"], "--model-name", MODEL, "--method", "npo", "--policy", str(policy),
           "--reference", stack["reference"], "--target", "local", "--param", "train.steps=40"]
    log = kfp_root() / "logs" / "warm-runner.log"
    try:
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        assert first.returncode == 0, first.stderr[-4000:]
        assert "promoted" in first.stderr
        starts = log.read_text().count("staying 60s idle")
        assert starts == 1  # the first run started a server that outlived it
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-4000:]
        assert "already-unlearned" in again.stderr and "Steps" in again.stderr  # the fork's output came back
        assert log.read_text().count("staying 60s idle") == starts  # no new server: it ran in the fork
    finally:
        monkeypatch.setenv(warm_runner.KEEP_ENV, "60")
        warm_runner.retire_all()
