"""A warm fork server for kfp.local's subprocess tasks: import once, fork per task.

kfp.local's ``SubprocessRunner`` starts every task as ``sh -ec <script> <source> --executor_input …
--function_to_execute …``: a fresh interpreter that imports kfp, torch, transformers and mlflow
again (2–7 s a task here, issue 15). This module keeps kfp.local's orchestration untouched — the same
compiled pipeline, its DAG, conditions, exit handler, executor input and output files — and changes
only *where* that command's Python runs:

- :class:`WarmPool` starts one server process (``python -m unlearnops.pipelines.warm_runner SOCKET
  MODULE…``) that imports the modules the pipeline's components import (read from their source with
  :func:`component_imports`), then waits on a Unix socket.
- :func:`patched` replaces kfp.local's ``run_local_subprocess`` for the run: a command that is
  exactly kfp's lightweight-component script, run by this interpreter, goes to the server; anything
  else (and everything when the server is gone) runs as before.
- For each task the server forks a child that does what the script does — writes the source to a
  fresh ``mktemp -d`` folder as ``ephemeral_component.py``, sets ``_KFP_RUNTIME=true`` and the task's
  environment, runs ``python -m kfp.dsl.executor_main`` with the task's arguments — with its output
  on the socket. The exit status follows the output as a trailer carrying a per-task nonce.

The server never runs task code itself, holds no threads and waits on children with pidfds, so
every fork copies a clean, single-threaded process. ``UNLEARNOPS_WARM_RUNNER=0`` turns it off.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_SWITCH = "UNLEARNOPS_WARM_RUNNER"
EXECUTOR_MODULE = "kfp.dsl.executor_main"
#: kfp's lightweight-component script (kfp.dsl.component_factory), with any python executable
_SCRIPT = re.compile(
    r'\s*program_path=\$\(mktemp -d\)\s+printf "%s" "\$0" > "\$program_path/ephemeral_component\.py"\s+'
    r"_KFP_RUNTIME=true (?P<python>\S+) -m kfp\.dsl\.executor_main\s+(?:\\\s+)?--component_module_path\s+"
    r'(?:\\\s+)?"\$program_path/ephemeral_component\.py"\s+(?:\\\s+)?"\$@"\s*')
#: always worth having warm: the executor and what the components' packages import at the top
BASE_MODULES = (EXECUTOR_MODULE, "kfp.dsl", "torch", "transformers", "mlflow", "unlearnops.settings")
READY = b"ready\n"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class TaskCommand:
    """A kfp lightweight-component command: its source and the executor's arguments."""

    source: str
    args: list[str]


def parse_command(full_command: list[str], python: str = sys.executable) -> TaskCommand | None:
    """The task in ``full_command`` when it is exactly kfp's script run by ``python``; else None."""
    if len(full_command) < 4 or full_command[:2] != ["sh", "-ec"]:
        return None
    match = _SCRIPT.fullmatch(full_command[2])
    if match is None or match.group("python") not in (python, "python3"):
        return None
    return TaskCommand(source=full_command[3], args=list(full_command[4:]))


def component_imports(sources: Iterable[str]) -> list[str]:
    """Top-level module names the component sources import (``import x.y`` / ``from x.y import z``)."""
    found: dict[str, None] = {}
    for source in sources:
        with contextlib.suppress(SyntaxError):
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    found.update((alias.name, None) for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found[node.module] = None
    return list(found)


def pipeline_sources(pipeline: Any) -> list[str]:
    """The component sources of a compiled ``@dsl.pipeline`` (its executors' ``sh -ec`` commands)."""
    spec = getattr(pipeline, "pipeline_spec", None)
    if spec is None:
        return []
    from google.protobuf import json_format

    executors = json_format.MessageToDict(spec).get("deploymentSpec", {}).get("executors", {})
    sources = []
    for executor in executors.values():
        command = executor.get("container", {}).get("command", [])
        if parse_command(command[:4], python="python3"):
            sources.append(command[3])
    return sources


# ---------------------------------------------------------------- the server (its own process)
def preload(modules: Iterable[str]) -> list[str]:
    """Import what tasks will import; a module that fails to import is left to the task (listed)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # the task imports it again and reports the real error
            failed.append(name)
    return failed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _run_task(request: dict[str, Any]) -> int:
    """In the forked child: what kfp's script does, in this already-warm interpreter."""
    import atexit
    import logging
    import runpy
    import traceback

    warm = set(sys.modules)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["_KFP_RUNTIME"] = "true"
    os.chdir(request["cwd"])
    tempfile.tempdir = None  # TMPDIR is the task's
    if "unlearnops.settings" in sys.modules:  # settings read from the task's environment
        sys.modules["unlearnops.settings"].get_settings.cache_clear()
    logging.root.handlers.clear()  # the executor's basicConfig must take effect, as in a fresh process
    program = Path(tempfile.mkdtemp())
    (program / "ephemeral_component.py").write_text(request["source"], encoding="utf-8")
    sys.argv = [EXECUTOR_MODULE, "--component_module_path", str(program / "ephemeral_component.py"),
                *request["args"]]
    code = 0
    try:
        runpy.run_module(EXECUTOR_MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what an uncaught exception does: traceback, status 1
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    with contextlib.suppress(OSError):  # what this task still had to import: the next run preloads it
        Path(request["modules_out"]).write_text("\n".join(sorted(learnable(set(sys.modules) - warm))))
    return code


#: never preloaded from what tasks imported: modules whose import may start threads or connect
_NOT_LEARNED = ("ray", "grpc", "ephemeral_component", "__main__", "__mp_main__", "kfp.dsl.executor_main")


def learnable(names: Iterable[str]) -> list[str]:
    """The imported module names worth preloading next time (public, not :data:`_NOT_LEARNED`)."""
    return [n for n in names if not n.startswith("_") and "._" not in n
            and not any(n == p or n.startswith(p + ".") for p in _NOT_LEARNED)]


def _child(conn: socket.socket, request: dict[str, Any]) -> None:
    """The forked child: stdio on the connection, run the task, exit with its status."""
    fd = conn.fileno()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the child's lifetime
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 1
    try:
        code = _run_task(request)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code & 0xFF)


def _read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the client closed before sending a task")
        data += chunk
    request: dict[str, Any] = json.loads(data)
    return request


def serve(socket_path: str, ready_fd: int, lifeline_fd: int) -> None:
    """Fork a child per task until SIGTERM or the client's end of ``lifeline_fd`` closes (the client
    exited): the children are terminated too."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(16)
    running: dict[int, tuple[int, socket.socket, str]] = {}  # pidfd -> (pid, connection, nonce)

    def stop(*_: Any) -> None:
        for pid, _conn, _nonce in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the children; the client stops us
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, "accept")
    selector.register(lifeline_fd, selectors.EVENT_READ, "lifeline")
    _write_all(ready_fd, READY)
    os.close(ready_fd)
    while True:
        for key, _ in selector.select():
            if key.data == "lifeline":
                stop()
            if key.data == "accept":
                conn, _addr = server.accept()
                try:
                    request = _read_request(conn)
                except (ConnectionError, ValueError):
                    conn.close()
                    continue
                if "preload" in request:  # more modules to have warm (the pipeline's, once known)
                    preload(request["preload"])
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    server.close()
                    for _pid, other, _nonce in running.values():
                        other.close()
                    _child(conn, request)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn, request["nonce"])
                selector.register(pidfd, selectors.EVENT_READ, "child")
            else:
                pidfd = key.fd
                selector.unregister(pidfd)
                pid, conn, nonce = running.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(f"\n{trailer(nonce)}{code}\n".encode())
                conn.close()


def trailer(nonce: str) -> str:
    return f"\x00unlearnops-warm-exit {nonce} "


# ---------------------------------------------------------------- the client (the run's process)
class WarmPool:
    """The server process for one local run; :meth:`run` sends it a task, :meth:`close` stops it.

    ``profile``: a file of module names that earlier runs' tasks imported beyond the server's; they
    are preloaded too, and what this run's tasks import is added to it on :meth:`close`.
    """

    def __init__(self, modules: Iterable[str], log_folder: Path, profile: Path | None = None):
        self.profile = profile
        self.learned: set[str] = set()
        modules = [*modules, *read_profile(profile)]
        self.folder = Path(tempfile.mkdtemp(prefix="uo-warm-", dir="/tmp"))  # AF_UNIX: short path
        self.socket_path = str(self.folder / "s")
        log_folder.mkdir(parents=True, exist_ok=True)
        self.log = (log_folder / "warm-runner.log").open("ab")
        read_fd, write_fd = os.pipe()
        lifeline, self.lifeline = os.pipe()  # the server stops when this process's end closes
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, self.socket_path, str(write_fd), str(lifeline),
             *dict.fromkeys(modules)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, pass_fds=(write_fd, lifeline))
        os.close(write_fd)
        os.close(lifeline)
        self.ready_fd = read_fd
        self.ready: bool | None = None

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """True once the server has imported its modules and listens (False when it died)."""
        if self.ready is None:
            selector = selectors.DefaultSelector()
            selector.register(self.ready_fd, selectors.EVENT_READ)
            got = os.read(self.ready_fd, len(READY)) if selector.select(timeout) else b""
            selector.close()
            os.close(self.ready_fd)
            self.ready = got == READY
        return self.ready

    def run(self, task: TaskCommand, env: dict[str, str], echo: Callable[[str], None]) -> int | None:
        """Run ``task`` in a fork of the server; its output through ``echo``. None: the server is gone."""
        if not self.wait_ready() or self.process.poll() is not None:
            return None
        nonce = secrets.token_hex(8)
        modules_out = self.folder / f"{nonce}.modules"
        request = {"source": task.source, "args": task.args, "env": env, "cwd": os.getcwd(), "nonce": nonce,
                   "modules_out": str(modules_out)}
        conn = self._send(request)
        if conn is None:
            return None
        code = _relay(conn, trailer(nonce), echo)
        with contextlib.suppress(OSError):
            self.learned.update(modules_out.read_text().split())
            modules_out.unlink()
        return code

    def preload(self, modules: Iterable[str]) -> None:
        """Ask the server to import ``modules`` too (before the tasks that follow)."""
        if not self.wait_ready():
            return
        conn = self._send({"preload": list(modules)})
        if conn is not None:
            conn.close()

    def _send(self, request: dict[str, Any]) -> socket.socket | None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.socket_path)
            conn.sendall(json.dumps(request).encode() + b"\n")
        except OSError:
            conn.close()
            return None
        return conn

    def close(self) -> None:
        if self.lifeline >= 0:
            os.close(self.lifeline)
            self.lifeline = -1
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.ready is None:
            os.close(self.ready_fd)
            self.ready = False
        self.log.close()
        if self.profile is not None and self.learned:
            write_profile(self.profile, self.learned)
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def read_profile(profile: Path | None) -> list[str]:
    """Module names from a profile file (none when it is missing or unreadable)."""
    try:
        return learnable(profile.read_text(encoding="utf-8").split()) if profile else []
    except OSError:
        return []


def write_profile(profile: Path, modules: Iterable[str]) -> None:
    """Add ``modules`` to the profile file, atomically (a temp file renamed over it)."""
    names = sorted({*read_profile(profile), *learnable(modules)})
    profile.parent.mkdir(parents=True, exist_ok=True)
    tmp = profile.with_name(f".{profile.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(names) + "\n", encoding="utf-8")
    os.replace(tmp, profile)


def _relay(conn: socket.socket, tail: str, echo: Callable[[str], None]) -> int:
    """Echo the task's output line by line until its trailer; the exit status (1 when it vanished)."""
    with conn, conn.makefile("r", encoding="utf-8", errors="replace", newline="\n") as stream:
        previous: str | None = None
        for line in stream:
            if line.startswith(tail):
                if previous not in (None, "\n"):
                    echo(previous)
                return int(line[len(tail):].strip())
            if previous is not None:
                echo(previous)
            previous = line
        if previous is not None:
            echo(previous)
    return 1


_started: WarmPool | None = None


def available() -> bool:
    return enabled() and hasattr(os, "pidfd_open")


def prestart(log_folder: Path, profile: Path | None = None) -> None:
    """Start the server now, so its imports overlap the caller's own work; :func:`patched` uses it."""
    global _started
    if available() and _started is None:
        _started = WarmPool(BASE_MODULES, log_folder, profile)
        import atexit

        atexit.register(_close_unused)


def _close_unused() -> None:
    """A prestarted server no run took (the caller exited early) is stopped at exit."""
    global _started
    if _started is not None:
        _started.close()
        _started = None


@contextlib.contextmanager
def patched(pipeline: Any, log_folder: Path, profile: Path | None = None) -> Iterator[WarmPool | None]:
    """For the duration, kfp.local's subprocess tasks run in forks of a warm :class:`WarmPool`
    (the one :func:`prestart` started, else a new one); it is stopped afterwards."""
    global _started
    if not available():
        yield None
        return
    from kfp.local import subprocess_task_handler as handler

    pool, _started = _started, None
    if pool is None:
        pool = WarmPool(BASE_MODULES, log_folder, profile)
    pool.preload(component_imports(pipeline_sources(pipeline)))
    original = handler.run_local_subprocess

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        task = parse_command(full_command)
        if task is not None:
            code = pool.run(task, {**os.environ, **(env_vars or {})}, lambda line: print(line, end=""))
            if code is not None:
                print("\n")  # as kfp.local does after a subprocess's logs
                return code
        return int(original(full_command=full_command, env_vars=env_vars))

    handler.run_local_subprocess = run_local_subprocess
    try:
        yield pool
    finally:
        handler.run_local_subprocess = original
        pool.close()


def main(argv: list[str]) -> None:
    """``python -m unlearnops.pipelines.warm_runner SOCKET READY_FD LIFELINE_FD MODULE…`` (by WarmPool)."""
    started = time.monotonic()
    socket_path, ready_fd, lifeline_fd, modules = argv[0], int(argv[1]), int(argv[2]), argv[3:]
    failed = preload(modules)
    left = f" (left to the tasks: {', '.join(failed)})" if failed else ""
    print(f"warm runner {os.getpid()}: imported {len(modules) - len(failed)} modules in "
          f"{time.monotonic() - started:.1f}s{left}", flush=True)
    serve(socket_path, ready_fd, lifeline_fd)


if __name__ == "__main__":
    main(sys.argv[1:])
