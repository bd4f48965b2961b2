"""Runs triggered from the dashboard, and the background worker that executes them.

A run is recorded ``queued`` with the requests it covers, then the worker (one thread in the
dashboard process, one run at a time) starts ``unlearnops run --events FILE`` as a child process:
the same CLI, guards and compiled pipeline as on the command line, kfp.local's real DAG. The
child's step events (JSON lines, see ``pipelines.local_runner.EventSink``) are read while it
runs, so the runs page shows each step live; its last event gives the outcome. Statuses:
queued → running → promoted | already-unlearned | gate-failed | failed. A run that was running
when the dashboard stopped is marked failed at the next start (its child is gone).

With ``UNLEARNOPS_KFP_HOST`` set, a run is a Kubeflow Pipelines run instead: the worker submits
the compiled pipeline (``pipelines.remote.submit``, as ``unlearnops submit`` does), then polls
the run's state and task states until it ends; the outcome is read back from the ledger.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import String, cast, select, update

from .. import storage
from ..cli import command_line
from ..ledger import Ledger
from ..masking import mask_secrets
from ..pipelines.run_request import DEFAULT_METHOD
from ..settings import get_settings
from ..types import EvalReport, RequestStatus
from .store import Background, Store, now_naive, runs_table

RUNNABLE = (RequestStatus.approved, RequestStatus.scheduled, RequestStatus.failed)
DONE = ("promoted", "already-unlearned", "gate-failed", "failed")
KFP_TERMINAL = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED")
OUTCOME_STATUS = {"promoted": "promoted", "already-unlearned": "already-unlearned",
                  "gate-failed": "gate-failed"}


class RunRefused(ValueError):
    """The run cannot start: no runnable request, an unknown request, a bad parameter."""


@dataclass
class RunDefaults:
    """What a dashboard run unlearns, unless the trigger says otherwise."""

    model_name: str = "unlearnops-model"
    corpus_uri: str = ""  # default: STORAGE_ROOT/corpus
    reference_uri: str = ""
    method: str = DEFAULT_METHOD  # its calibrated recipe fills the params not given (RunRequest)
    params: dict[str, str] = field(default_factory=dict)
    policy: str = "default"
    target: str = "local"

    def corpus(self) -> str:
        return self.corpus_uri or storage.join(get_settings().storage_root_uri, "corpus")


def policy_value(policy: str) -> str:
    """A policy for a cluster run: a local policy file becomes its YAML text (the cluster cannot read
    this machine's files); a bundled name, URI or YAML text is passed on."""
    path = Path(policy)
    return path.read_text(encoding="utf-8") if "\n" not in policy and path.is_file() else policy


@dataclass
class Step:
    name: str
    status: str  # running | SUCCESS | FAILURE | ...
    seconds: float | None = None


@dataclass
class RunView:
    id: str
    created_at: datetime
    actor: str
    request_ids: list[str]
    method: str
    params: dict[str, str]
    status: str
    steps: list[Step]
    run_root: str
    exit_code: int | None
    message: str
    versions: list[str]
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def failed_step(self) -> str:
        return next((s.name for s in self.steps if s.status not in ("running", "SUCCESS")), "")


def _view(row: Any) -> RunView:
    steps = [Step(s["name"], s["status"], s.get("seconds")) for s in row.steps or []]
    return RunView(row.id, row.created_at, row.actor, list(row.request_ids), row.method, dict(row.params),
                   row.status, steps, row.run_root, row.exit_code, row.message, list(row.versions),
                   row.started_at, row.finished_at)


def runs_folder() -> Path:
    folder = Path(get_settings().home).absolute() / "dashboard" / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------- reading and triggering
def list_runs(store: Store, limit: int = 100, request_id: str = "") -> list[RunView]:
    """The newest runs (those covering ``request_id`` when given: matched in the database on the
    JSON text, then checked exactly)."""
    query = select(runs_table).order_by(runs_table.c.created_at.desc())
    if request_id:
        as_text = cast(runs_table.c.request_ids, String)
        query = query.where(as_text.contains(json.dumps(request_id), autoescape=True))
    views = [_view(r) for r in store.rows(query.limit(limit))]
    return [v for v in views if request_id in v.request_ids] if request_id else views


def get_run(store: Store, run_id: str) -> RunView | None:
    row = store.one(select(runs_table).where(runs_table.c.id == run_id))
    return None if row is None else _view(row)


def runnable_ids(ledger: Ledger) -> list[str]:
    """Every approved or scheduled request, earliest deadline first (what 'run all' covers)."""
    from ..types import utcnow

    return ledger.pending_ids(utcnow())


def trigger(store: Store, actor: str, request_ids: list[str], defaults: RunDefaults, *,
            method: str = "", params: dict[str, str] | None = None, policy: str = "") -> RunView:
    """Queue a run of ``request_ids`` (each must be approved, scheduled or failed) for the worker."""
    if not request_ids:
        raise RunRefused("no request to run: select approved requests, or approve some first")
    if len(request_ids) > 1000:
        raise RunRefused("at most 1000 requests per run")
    for rid in request_ids:
        try:
            status = store.ledger.get(rid).status
        except KeyError:
            raise RunRefused(f"no request {rid!r} in the ledger") from None
        if status not in RUNNABLE:
            raise RunRefused(f"request {rid} is {status.value!r}: only approved (or failed) requests run; "
                             "approve it first")
    busy = store.rows(select(runs_table.c.id, runs_table.c.request_ids)
                      .where(runs_table.c.status.in_(("queued", "running"))))
    for row in busy:
        if overlap := sorted(set(request_ids) & set(row.request_ids)):
            raise RunRefused(f"run {row.id} already covers {', '.join(overlap)}; wait for it to finish")
    run_id = uuid.uuid4().hex[:12]
    backend = "kfp" if get_settings().kfp_host else "local"
    store.execute(runs_table.insert().values(
        id=run_id, created_at=now_naive(), actor=actor, request_ids=request_ids,
        method=method or defaults.method, params=params if params is not None else defaults.params,
        status="queued", backend=backend, steps=[], run_root="", exit_code=None, message="",
        versions=[], external_id="", started_at=None, finished_at=None))
    view = get_run(store, run_id)
    assert view is not None
    return view


def cluster_request(defaults: RunDefaults, request_ids: list[str], method: str, params: dict[str, str],
                    policy: str) -> Any:
    """The validated RunRequest of a run on the cluster (KFP), promoted to KServe."""
    from unlearnops.pipelines.run_request import RunRequest

    from ..cli.params import parse_assignments

    return RunRequest(request_ids=request_ids, corpus_uri=defaults.corpus(), model_name=defaults.model_name,
                      method=method or defaults.method,
                      method_params=parse_assignments([f"{k}={v}" for k, v in params.items()]),
                      policy=policy_value(policy), reference_uri=defaults.reference_uri,
                      promote_target="kserve")


# ---------------------------------------------------------------- the worker
def command(run: RunView, defaults: RunDefaults, events: Path, policy: str) -> list[str]:
    """The ``unlearnops run`` command line of ``run``."""
    argv = command_line("run", "--request", ",".join(run.request_ids), "--corpus", defaults.corpus(),
                        "--model-name", defaults.model_name, "--method", run.method, "--policy", policy,
                        "--target", defaults.target, "--events", str(events))
    if defaults.reference_uri:
        argv += ["--reference", defaults.reference_uri]
    for key, value in run.params.items():
        argv += ["--param", f"{key}={value}"]
    return argv


def read_events(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of an events file so far (a line being written is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def steps_from(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step status from step events, in start order."""
    steps: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("event") == "step-started":
            steps[event["step"]] = {"name": event["step"], "status": "running", "seconds": None}
        elif event.get("event") == "step-finished":
            steps[event["step"]] = {"name": event["step"], "status": event.get("status", ""),
                                    "seconds": event.get("seconds")}
    return list(steps.values())


class WarmUp:
    """Starts the embedded stack's staying warm server ahead of a run, in a child process
    (``unlearnops warm-runner start``): when the dashboard starts and when a request is approved,
    so the run that follows hands itself to a server whose imports are paid instead of paying them
    on its critical path (issue 15). Nothing with the KFP backend, ``UNLEARNOPS_WARM_RUNNER=0`` or
    ``UNLEARNOPS_WARM_RUNNER_KEEP=0``; one child at a time (a server already up answers at once)."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None

    def __call__(self) -> None:
        from ..pipelines.warm_runner import available, keep_seconds

        if get_settings().kfp_host or not available() or keep_seconds() <= 0:
            return
        if self.child is not None and self.child.poll() is None:
            return
        # the runs' environment (UNLEARNOPS_ACTOR aside, which the fingerprint skips): their server
        try:  # a warm-up that cannot start never fails the approval that asked for it
            self.child = subprocess.Popen(command_line("warm-runner", "start", "--quiet"),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, cwd=os.getcwd())
        except OSError:
            self.child = None

    def wait(self, timeout: float = 150.0) -> int | None:
        """The child's exit status once it ends (None: none was started)."""
        return None if self.child is None else self.child.wait(timeout)


class RunWorker(Background):
    """Runs queued dashboard runs one at a time in a daemon thread."""

    def __init__(self, store: Store, defaults: RunDefaults, poll_s: float = 1.0) -> None:
        super().__init__()
        self.store, self.defaults, self.poll_s = store, defaults, poll_s
        self.policy: dict[str, str] = {}
        self.warm_up = WarmUp()

    name = "unlearnops-run-worker"

    def start(self) -> None:
        self.warm_up()
        self.store.approval_hooks.append(self.warm_up)
        self.store.execute(update(runs_table).where(runs_table.c.status.in_(("running",))).values(
            status="failed", message="the dashboard stopped while this run was running",
            finished_at=now_naive()))
        super().start()

    def loop(self) -> None:
        while not self.stop_event.is_set():
            row = self.store.one(select(runs_table).where(runs_table.c.status == "queued")
                                 .order_by(runs_table.c.created_at))
            if row is None:
                self.stop_event.wait(self.poll_s)
                continue
            try:
                (self.execute_kfp if row.backend == "kfp" else self.execute)(_view(row))
            except Exception as err:  # noqa: BLE001 - a broken run never stops the worker
                self._finish(row.id, "failed", 1, f"the run could not start: {mask_secrets(str(err))}")

    def execute(self, run: RunView) -> None:
        """Run one queued run to its end, updating its steps as the child reports them."""
        events = runs_folder() / f"{run.id}.jsonl"
        log = runs_folder() / f"{run.id}.log"
        policy = self.policy.get(run.id, self.defaults.policy)
        self.store.execute(update(runs_table).where(runs_table.c.id == run.id).values(
            status="running", started_at=now_naive()))
        env = {**os.environ, "UNLEARNOPS_ACTOR": f"dashboard-run:{run.id}"}
        with log.open("w", encoding="utf-8") as out:
            child = subprocess.Popen(command(run, self.defaults, events, policy), stdout=out,
                                     stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
            while child.poll() is None:
                if self.stop_event.wait(self.poll_s):
                    child.terminate()
                self._progress(run.id, events)
        found = read_events(events)
        self._progress(run.id, events)
        events.unlink(missing_ok=True)  # its content is in the run's row now
        last = found[-1] if found and found[-1].get("event") == "run-finished" else None
        if last is None:
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines() or [""]
            self._finish(run.id, "failed", child.returncode,
                         f"the run stopped before its end (exit {child.returncode}): {lines[-1][-300:]}")
            return
        status = OUTCOME_STATUS.get(last.get("outcome", ""), "failed")
        if status != "failed":
            log.unlink(missing_ok=True)  # the steps' output is kept only to diagnose a failure
        code = last.get("exit_code")
        self._finish(run.id, status, int(code) if code is not None else child.returncode,
                     str(last.get("message", "")), run_root=str(last.get("run_root", "")),
                     versions=list(last.get("versions", [])))

    def execute_kfp(self, run: RunView) -> None:
        """Submit ``run`` to the KFP API and follow it to its end (state and task states)."""
        from unlearnops.pipelines.remote import client, submit

        host, token = get_settings().kfp_host or "", os.environ.get("KFP_TOKEN") or None
        request = cluster_request(self.defaults, run.request_ids, run.method, run.params,
                                  self.policy.get(run.id, self.defaults.policy))
        submitted = submit(host, request.arguments(), token=token, run_name=f"dashboard-{run.id}")
        self.store.execute(update(runs_table).where(runs_table.c.id == run.id).values(
            status="running", started_at=now_naive(), external_id=submitted.run_id))
        kfp_client = client(host, token)
        state = ""
        while not self.stop_event.is_set():
            remote = kfp_client.get_run(submitted.run_id)
            state = str(getattr(remote, "state", "") or "")
            tasks = getattr(getattr(remote, "run_details", None), "task_details", None) or []
            steps = [{"name": str(t.display_name), "status": str(t.state), "seconds": None} for t in tasks
                     if getattr(t, "display_name", None)]
            self.store.execute(update(runs_table).where(runs_table.c.id == run.id).values(steps=steps))
            if state in KFP_TERMINAL:
                break
            self.stop_event.wait(self.poll_s)
        status, code, message = self.outcome_from_ledger(run.request_ids, state)
        self._finish(run.id, status, code, message)

    def outcome_from_ledger(self, request_ids: list[str], state: str) -> tuple[str, int, str]:
        """(status, exit code, message) of an ended KFP run, from the requests' status."""
        from unlearnops.components.ledger.updates import GATES_FAILED

        reqs = [self.store.ledger.get(rid) for rid in request_ids]
        if state == "SUCCEEDED" and all(r.status == RequestStatus.completed for r in reqs):
            return "promoted", 0, f"KFP run succeeded; {', '.join(request_ids)} completed"
        failed = [r.history[-1] for r in reqs if r.status == RequestStatus.failed and r.history]
        if failed and all(f.code == GATES_FAILED for f in failed):
            return "gate-failed", 3, "gates failed; champion unchanged: " + "; ".join(failed[0].gate_reasons)
        statuses = ", ".join(f"{r.id}={r.status.value}" for r in reqs)
        return "failed", 1, f"KFP run {state or 'unknown'}: {statuses}"

    def _progress(self, run_id: str, events: Path) -> None:
        found = read_events(events)
        values: dict[str, Any] = {"steps": steps_from(found)}
        started = next((e for e in found if e.get("event") == "run-started"), None)
        if started:
            values["run_root"] = started.get("run_root", "")
        self.store.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))

    def _finish(self, run_id: str, status: str, code: int | None, message: str, *, run_root: str = "",
                versions: list[str] | None = None) -> None:
        values: dict[str, Any] = {"status": status, "exit_code": code, "message": mask_secrets(message),
                                  "finished_at": now_naive(), "versions": versions or []}
        if run_root:
            values["run_root"] = run_root
        self.store.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))


# ---------------------------------------------------------------- the run's evaluation report
def run_report(run: RunView) -> EvalReport | None:
    """The evaluation report the run wrote (none before evaluate ran, or for a run that failed early)."""
    if not run.run_root:
        return None
    from unlearnops.pipelines.local_runner import find_report

    try:
        return find_report(run.run_root)
    except Exception:  # noqa: BLE001 - an unreadable report is shown as absent, never a 500
        return None


def report_plot(run: RunView, plot: str) -> bytes | None:
    """A PNG listed in the run's report (``plots/NAME.png`` beside report.json)."""
    report = run_report(run)
    if report is None or f"plots/{plot}" not in report.plots:
        return None
    found = [f.uri for f in storage.list_files(run.run_root, suffixes=(f"eval/plots/{plot}",))]
    return storage.read_bytes(found[-1]) if found else None
