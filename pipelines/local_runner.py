"""Run a pipeline on this machine with ``kfp.local`` (``SubprocessRunner(use_venv=False)``).

The real pipeline runs: each task is a process of the installed package — forked from a warm
server that imported kfp, torch, transformers and mlflow once (:mod:`.warm_runner`;
``UNLEARNOPS_WARM_RUNNER=0``: a fresh subprocess per task, as kfp.local does). Roots stay inside
unlearnops' home: pipeline and workspace roots under the storage root (under HOME/kfp when the
storage root is S3), TMPDIR pointed at a per-run folder that is removed afterwards. kfp.local's
verbose logs go to ``<kfp root>/logs/<run>.log``; the console shows one line per step and the
steps' own output. The outcome is read back from the ledger and the run's evaluation report.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from unlearnops import storage
from unlearnops.documents import read_report
from unlearnops.masking import mask_secrets
from unlearnops.settings import get_settings
from unlearnops.types import EvalReport, RequestStatus

from . import warm_runner
from .run_request import RunRequest

EXIT_OK, EXIT_ERROR, EXIT_GATE_FAILED = 0, 1, 3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_PIPELINE_END = re.compile(r"Pipeline '([^']+)' finished with status (\w+)")


@dataclass
class StepTiming:
    name: str
    seconds: float
    status: str


@dataclass
class LocalRun:
    """What a local run did: outcome, exit code, per-step timings, where its files are."""

    exit_code: int
    outcome: str
    message: str
    run_root: str
    log_file: Path
    wall_seconds: float
    steps: list[StepTiming] = field(default_factory=list)
    report: EvalReport | None = None
    versions: list[str] = field(default_factory=list)


class EventSink:
    """Step events of a run as JSON lines (``--events FILE``): what a dashboard or a wrapper reads,
    instead of parsing the console. One object per line: ``{"at", "event", ...}`` with events
    ``run-started`` (run_root), ``step-started`` (step), ``step-finished`` (step, status, seconds)
    and ``run-finished`` (exit_code, outcome, message, versions, run_root). Each line is flushed."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        fields = {k: mask_secrets(v) if isinstance(v, str) else v for k, v in fields.items()}
        record = {"at": datetime.now(UTC).isoformat(), "event": event, **fields}
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _ProgressStream(io.TextIOBase):
    """Stands in for stdout during the run: full log to a file, a condensed view to the console.

    kfp.local prints each task's start/end, its executor input/output JSON and the subprocess
    output; the console gets '▶ task', the task's own lines, and '✓ task (s)' / '✗ task'.
    """

    def __init__(self, log: TextIO, console: TextIO | None, verbose: bool = False,
                 events: EventSink | None = None):
        self.log, self.console, self.verbose = log, console, verbose
        self.events = events
        self.buffer_text = ""
        self.skipping = False
        self.started: dict[str, float] = {}
        self.steps: list[StepTiming] = []
        self.pipeline_status = ""
        self.failed_tasks: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buffer_text += text
        while "\n" in self.buffer_text:
            line, self.buffer_text = self.buffer_text.split("\n", 1)
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        if self.console:
            self.console.flush()

    def _echo(self, text: str) -> None:
        if self.console is not None:
            self.console.write(text + "\n")

    def _line(self, line: str) -> None:
        if self.verbose:
            self._echo(line)
        if m := _START.search(line):
            self.started[m.group(1)] = time.monotonic()
            self.skipping = False
            if self.events:
                self.events.emit("step-started", step=m.group(1))
            if not self.verbose:
                self._echo(f"▶ {m.group(1)}")
            return
        if m := _END.search(line):
            name, status = m.group(1), m.group(2)
            secs = time.monotonic() - self.started.pop(name, time.monotonic())
            self.steps.append(StepTiming(name, secs, status))
            if status != "SUCCESS":
                self.failed_tasks.append(name)
            if self.events:
                self.events.emit("step-finished", step=name, status=status, seconds=round(secs, 3))
            if not self.verbose:
                self._echo(f"{'✓' if status == 'SUCCESS' else '✗'} {name} ({secs:.1f}s)")
            self.skipping = True  # outputs listing follows
            return
        if m := _PIPELINE_END.search(line):
            self.pipeline_status = m.group(2)
            return
        if " - INFO - " in line or " - WARNING - " in line:
            return  # kfp.local's own bookkeeping (in the log file)
        if self.verbose:
            return
        stripped = line.strip()
        if "Got executor_input:" in line or "Streamed logs:" in line:
            self.skipping = "Got executor_input:" in line
            return
        if stripped.startswith("[KFP Executor"):
            self.skipping = False
            return
        if self.skipping or not stripped or set(stripped) <= {"-"}:
            return
        self._echo(f"    {stripped}")


#: Ray puts AF_UNIX sockets under TMPDIR (at most 107 bytes): a deeper TMPDIR breaks local Ray.
MAX_TMPDIR_LEN = 40


@contextlib.contextmanager
def contained_tmpdir(root: Path) -> Iterator[Path]:
    """Point TMPDIR (and ``tempfile``) at a fresh folder under ``root``; remove it afterwards.

    When ``root`` is too deep for Ray's socket paths, the folder is made in the system temp
    folder instead (still fresh, still removed).
    """
    if len(str(root)) <= MAX_TMPDIR_LEN:
        root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    else:
        folder = Path(tempfile.mkdtemp(prefix="uo-run-"))
    old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None
    try:
        yield folder
    finally:
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
        tempfile.tempdir = old_tempdir
        shutil.rmtree(folder, ignore_errors=True)


def kfp_root() -> Path:
    """Local folder for kfp.local's pipeline and workspace roots (under the storage root if local)."""
    settings = get_settings()
    root = settings.storage_root_uri
    base = settings.home.absolute() if storage.is_s3(root) else storage.local_path(root).absolute()
    return base / "kfp"


def warm_profile() -> Path:
    """What earlier local runs' tasks imported (:mod:`.warm_runner` preloads it): under the kfp root,
    or the file ``UNLEARNOPS_WARM_PROFILE`` names (one profile shared by several homes)."""
    shared = os.environ.get("UNLEARNOPS_WARM_PROFILE")
    return Path(shared) if shared else kfp_root() / "warm-modules.txt"


def prestart_warm_runner() -> None:
    """Start the warm runner now (its imports overlap the caller's checks); the next run uses it."""
    warm_runner.prestart(kfp_root() / "logs", warm_profile())


def new_run_root() -> str:
    """A fresh ``STORAGE/runs/<time>-<id>`` under which this run's outputs land."""
    tag = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    return storage.join(get_settings().storage_root_uri, "runs", tag)


def _patch_named_output_conditions() -> None:
    """Let kfp.local (2.17.3) evaluate ``dsl.If`` on a *named* output of a NamedTuple component.

    Its condition evaluator only splits ``<task>-Output`` / ``<task>--<key>`` channel names and
    treats ``<task>-<key>`` (what the compiler emits for ``task.outputs["passed"]``) as a parent
    input, so the branch is silently skipped. This wraps the resolver: when it finds nothing, try
    every ``<task>-<key>`` split against the task outputs. Local only; the compiled IR is unchanged.
    """
    from kfp.local.orchestrator import enhanced_dag_orchestrator as dag

    evaluator = dag.ConditionEvaluator
    if getattr(evaluator, "_unlearnops_patched", False):
        return
    original = evaluator._resolve_pipeline_channel

    def resolve(channel_ref: str, io_store: Any) -> Any:
        import logging

        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)  # the original warns before we get a chance to resolve
        try:
            value = original(channel_ref, io_store)
        finally:
            logger.setLevel(level)
        if value is not None:
            return value
        ref = channel_ref.replace("pipelinechannel--", "")
        for i in range(len(ref) - 1, 0, -1):
            if ref[i] == "-":
                try:
                    return io_store.get_task_output(ref[:i], ref[i + 1:])
                except ValueError:
                    continue
        return None

    evaluator._resolve_pipeline_channel = staticmethod(resolve)
    evaluator._unlearnops_patched = True


def run_pipeline(pipeline: Any, arguments: dict[str, Any], *, console: TextIO | None = sys.stderr,
                 verbose: bool = False,
                 events: EventSink | None = None) -> tuple[_ProgressStream, Path, float]:
    """Run ``pipeline(**arguments)`` with kfp.local in contained roots; (progress, log file, wall s)."""
    from kfp import local

    root = kfp_root()
    (root / "outputs").mkdir(parents=True, exist_ok=True)
    (root / "workspace").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    log_file = root / "logs" / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}.log"
    _patch_named_output_conditions()
    start = time.monotonic()
    with contained_tmpdir(root / "tmp"), log_file.open("w", encoding="utf-8") as log, \
            warnings.catch_warnings():
        # kfp.local warns that cluster-only settings are ignored and that the image is not run
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "outputs"),
                   workspace_root=str(root / "workspace"), raise_on_error=False)
        progress = _ProgressStream(log, console, verbose, events)
        with warm_runner.patched(pipeline, root / "logs", warm_profile()), \
                contextlib.redirect_stdout(progress):
            pipeline(**arguments)
        progress.flush()
    return progress, log_file, time.monotonic() - start


def find_report(run_root: str) -> EvalReport | None:
    """The evaluation report this run wrote (``RUN_ROOT/<job>/eval/report.json``), if any."""
    reports = [f.uri for f in storage.list_files(run_root, suffixes=("eval/report.json",))]
    return read_report(reports[-1].removesuffix("/report.json")) if reports else None


def outcome(request_ids: list[str], run_root: str) -> tuple[int, str, str, list[str], EvalReport | None]:
    """(exit code, outcome word, message, versions, report) read back from the ledger and the run."""
    from unlearnops.components.ledger.updates import GATES_FAILED, completed_by

    from unlearnops.ledger import Ledger

    with Ledger() as ledger:
        reqs = [ledger.get(rid) for rid in request_ids]
    report = find_report(run_root)
    if all(r.status == RequestStatus.completed for r in reqs):
        versions = sorted({completed_by(r) for r in reqs})
        fresh = report is not None
        word = "promoted" if fresh else "already-unlearned"
        verb = "unlearned by" if fresh else "already unlearned by"
        return EXIT_OK, word, f"{', '.join(request_ids)} {verb} {', '.join(versions)}", versions, report
    failures = [r.history[-1] for r in reqs if r.history and r.status == RequestStatus.failed]
    gate_failed = bool(failures) and all(f.code == GATES_FAILED for f in failures)
    if report is not None and report.verdict is not None and not report.verdict.passed and gate_failed:
        reasons = "; ".join(failures[0].gate_reasons)
        msg = "gates failed; champion unchanged" + (f": {reasons}" if reasons else "")
        return EXIT_GATE_FAILED, "gate-failed", msg, [], report
    detail = failures[0].reason if failures else ", ".join(f"{r.id}={r.status}" for r in reqs)
    return EXIT_ERROR, "error", f"pipeline failed: {detail}", [], report


def run_local(request: RunRequest, *, console: TextIO | None = sys.stderr, verbose: bool = False,
              events: EventSink | None = None) -> LocalRun:
    """Run ``unlearn_on_request`` locally for ``request``; see :class:`LocalRun`.

    ``events``: step events as JSON lines (:class:`EventSink`), the last one ``run-finished``."""
    from .local_pipeline import PIPELINE

    run_root = request.run_root or new_run_root()
    args = request.model_copy(update={"run_root": run_root}).arguments()
    if events:
        events.emit("run-started", run_root=run_root, request_ids=list(request.request_ids))
    progress, log_file, wall = run_pipeline(PIPELINE, args, console=console, verbose=verbose, events=events)
    code, word, message, versions, report = outcome(list(request.request_ids), run_root)
    if code == EXIT_ERROR and progress.failed_tasks:
        message += f" (failed task: {', '.join(progress.failed_tasks)}; log: {log_file})"
    if events:
        events.emit("run-finished", exit_code=code, outcome=word, message=message, versions=versions,
                    run_root=run_root, failed_steps=progress.failed_tasks)
    return LocalRun(code, word, message, run_root, log_file, wall, progress.steps, report, versions)
