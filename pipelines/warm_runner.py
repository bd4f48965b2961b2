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
  on the socket. The child's first line acknowledges the task (its pid: the client forwards Ctrl-C
  to it); its exit status follows the output as a trailer; both carry a per-task nonce.

The server stays up after the run that started it (``UNLEARNOPS_WARM_RUNNER_KEEP`` seconds idle,
default :data:`DEFAULT_KEEP`; ``0``: it stops with its run), so later runs fork from it without
paying its imports: one server per user and :func:`fingerprint` (interpreter, environment, the
installed code's files), its socket in a folder only the user can enter. ``unlearnops run`` then
hands its whole command to a fork of the server (:func:`delegate`), whose tasks go to the same
server. The server never runs task code itself, holds no threads and no data of any run, and waits
on children with pidfds, so every fork copies a clean, single-threaded process; a child whose
client went away is terminated. ``UNLEARNOPS_WARM_RUNNER=0`` turns it all off.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
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
#: seconds a server stays up with no task after its last one (0: it stops with the run that started it)
KEEP_ENV = "UNLEARNOPS_WARM_RUNNER_KEEP"
DEFAULT_KEEP = 600.0
#: staying servers one user keeps at most (set-ups: environments, interpreters); older ones retire
MAX_STAYING = 2
#: set in a delegated command's process: the socket of the server it was forked from
SOCKET_ENV = "UNLEARNOPS_WARM_SOCKET"
#: the folder of this user's staying servers' sockets (default ``/tmp/uo-warm-<uid>``; a test run
#: uses its own, so it neither finds nor retires the user's servers)
FOLDER_ENV = "UNLEARNOPS_WARM_RUNNER_DIR"
#: environment variables that differ between runs of one set-up and do not change what is imported:
#: the run's own folders and actor (the dashboard names each run's), the terminal's session, and what
#: torch, Ray and OpenMP set in a process that imported them (a benchmark or dashboard launching
#: runs must find the shell's server)
_VOLATILE_ENV = frozenset({
    "TMPDIR", "TMP", "TEMP", "PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "PYTEST_CURRENT_TEST",
    SOCKET_ENV, "UNLEARNOPS_ACTOR", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "TERM_SESSION_ID",
    "WINDOWID", "TMUX_PANE", "XDG_SESSION_ID", "KITTY_WINDOW_ID", "STY",
    "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK", "RAY_CLIENT_MODE", "TORCHINDUCTOR_CACHE_DIR"})
EXECUTOR_MODULE = "kfp.dsl.executor_main"
#: kfp's lightweight-component script (kfp.dsl.component_factory), with any python executable
_SCRIPT = re.compile(
    r'\s*program_path=\$\(mktemp -d\)\s+printf "%s" "\$0" > "\$program_path/ephemeral_component\.py"\s+'
    r"_KFP_RUNTIME=true (?P<python>\S+) -m kfp\.dsl\.executor_main\s+(?:\\\s+)?--component_module_path\s+"
    r'(?:\\\s+)?"\$program_path/ephemeral_component\.py"\s+(?:\\\s+)?"\$@"\s*')
#: always worth having warm: the executor and what the components' packages import at the top
BASE_MODULES = (EXECUTOR_MODULE, "kfp.dsl", "torch", "transformers", "mlflow", "unlearnops.settings")
#: what a delegated ``unlearnops run`` needs beyond the tasks' modules (the local pipeline, built)
COMMAND_MODULES = ("kfp.local", "unlearnops.pipelines.local_runner", "unlearnops.pipelines.local_pipeline")
STAYING_MODULES = (*BASE_MODULES, *COMMAND_MODULES)  # a staying server also runs delegated commands
READY = b"ready\n"


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").lower() not in ("0", "false", "no", "off")


def keep_seconds() -> float:
    """How long a server waits idle for the next run (``UNLEARNOPS_WARM_RUNNER_KEEP``; a value that
    is not a number >= 0 keeps nothing: the server stops with its run)."""
    try:
        keep = float(os.environ.get(KEEP_ENV, DEFAULT_KEEP))
    except ValueError:
        return 0.0
    return keep if keep >= 0 else 0.0


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
    """Import what tasks will import; a module that fails to import is left to the task (listed).

    Then ``gc.freeze()``: what is imported moves to the collector's permanent generation, so a
    child's collections never walk (and copy-on-write) the server's millions of objects — a full
    ``gc.collect()`` in a task cost 0.5 s before (CPython docs: freeze before fork)."""
    import gc

    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # the task imports it again and reports the real error
            failed.append(name)
    gc.collect()
    gc.freeze()
    return failed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _enter(request: dict[str, Any]) -> None:
    """In the forked child: the client's environment and folder, as a fresh process would have them."""
    import logging

    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    tempfile.tempdir = None  # TMPDIR is the task's
    if "unlearnops.settings" in sys.modules:  # settings read from the task's environment
        sys.modules["unlearnops.settings"].get_settings.cache_clear()
    logging.root.handlers.clear()  # the executor's basicConfig must take effect, as in a fresh process


def _exit_code(exit_: SystemExit) -> int:
    """The status a process exiting with ``exit_`` has (a message is printed, status 1)."""
    if isinstance(exit_.code, int):
        return exit_.code
    if exit_.code is not None:
        print(exit_.code, file=sys.stderr)
        return 1
    return 0


def _call(run: Callable[[], Any]) -> int:
    """``run()`` as a process's main: its exit status, a traceback and 1 for an uncaught exception."""
    import atexit
    import traceback

    code = 0
    try:
        run()
    except SystemExit as exit_:
        code = _exit_code(exit_)
    except BaseException:  # noqa: BLE001 - what an uncaught exception does: traceback, status 1
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    return code


def _run_task(request: dict[str, Any]) -> int:
    """In the forked child: what kfp's script does, in this already-warm interpreter."""
    import runpy

    warm = set(sys.modules)
    _enter(request)
    os.environ["_KFP_RUNTIME"] = "true"
    sys.path.insert(0, request["cwd"])  # ``python -m`` in the task's folder puts it first
    program = Path(tempfile.mkdtemp())
    (program / "ephemeral_component.py").write_text(request["source"], encoding="utf-8")
    sys.argv = [EXECUTOR_MODULE, "--component_module_path", str(program / "ephemeral_component.py"),
                *request["args"]]
    sys.modules.pop(EXECUTOR_MODULE, None)  # run as __main__ from its source, as ``python -m`` does
    code = _call(lambda: runpy.run_module(EXECUTOR_MODULE, run_name="__main__", alter_sys=True))
    with contextlib.suppress(OSError):  # what this task still had to import: the next run preloads it
        Path(request["modules_out"]).write_text("\n".join(sorted(learnable(set(sys.modules) - warm))))
    return code


def _run_command(request: dict[str, Any]) -> int:
    """In the forked child: ``unlearnops ARGS…`` (:func:`delegate`); its tasks go to this server."""
    _enter(request)
    os.environ[SOCKET_ENV] = request["socket"]
    sys.argv = ["unlearnops", *request["command"]]
    from unlearnops.cli import main as cli_main

    return _call(lambda: cli_main(list(request["command"])))


#: never preloaded from what tasks imported: modules whose import may start threads or connect
_NOT_LEARNED = ("ray", "grpc", "ephemeral_component", "__main__", "__mp_main__", "kfp.dsl.executor_main")


def learnable(names: Iterable[str]) -> list[str]:
    """The imported module names worth preloading next time (public, not :data:`_NOT_LEARNED`)."""
    return [n for n in names if not n.startswith("_") and "._" not in n
            and not any(n == p or n.startswith(p + ".") for p in _NOT_LEARNED)]


def _disown_server_finalizers() -> None:
    """The server's ``weakref.finalize`` callbacks (torch's operator libraries, any temp folder of
    its imports) are not the child's to run at exit: they would undo the server's state (a temp
    folder deleted under it) and cost ~40 ms a task. The child's own finalizers still run."""
    import weakref

    registry = getattr(weakref.finalize, "_registry", {})
    for finalizer in list(registry):
        finalizer.atexit = False


def _child(conn: socket.socket, request: dict[str, Any]) -> None:
    """The forked child: stdio on the connection, acknowledge, run the task, exit with its status."""
    _disown_server_finalizers()
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
        sys.stdout.write(f"{started(request['nonce'])}{os.getpid()}\n")
        code = _run_command(request) if "command" in request else _run_task(request)
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


def _same_file(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def serve(socket_path: str, ready_fd: int, lifeline_fd: int, keep: float = 0.0) -> None:
    """Fork a child per task until SIGTERM, the client's end of ``lifeline_fd`` closes (the client
    exited; ``-1``: no lifeline), or — when ``keep`` > 0 — ``keep`` seconds pass with no child
    running, its socket file is removed or replaced, or it is retired (then once no child runs).
    Children are terminated when the server stops, and each when its own client goes away."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    inode = os.stat(socket_path).st_ino
    server.listen(16)
    running: dict[int, tuple[int, socket.socket, str]] = {}  # pidfd -> (pid, connection, nonce)
    started_at = time.time()

    def stop(*_: Any) -> None:
        for pid, _conn, _nonce in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if _same_file(socket_path, inode):
            with contextlib.suppress(OSError):
                os.unlink(socket_path)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the children; the client stops us
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, ("accept", None))
    if lifeline_fd >= 0:
        selector.register(lifeline_fd, selectors.EVENT_READ, ("lifeline", None))
    _write_all(ready_fd, READY)
    os.close(ready_fd)
    idle_since, retiring = time.monotonic(), False
    while True:
        if keep > 0 and not running and (retiring or time.monotonic() - idle_since > keep
                                         or not _same_file(socket_path, inode)):
            stop()
        for key, _ in selector.select(max(0.5, keep / 10) if keep > 0 else None):
            kind, pidfd = key.data
            if kind == "lifeline":
                stop()
            elif kind == "accept":
                conn, _addr = server.accept()
                try:
                    request = _read_request(conn)
                except (ConnectionError, ValueError):
                    conn.close()
                    continue
                if "retire" in request:  # a server for newer code took over: stop when idle
                    retiring = True
                    conn.close()
                    continue
                if "status" in request:  # `unlearnops warm-runner status`
                    with contextlib.suppress(OSError):
                        conn.sendall(json.dumps(_status(started_at, keep, len(running), retiring,
                                                        time.monotonic() - idle_since)).encode() + b"\n")
                    conn.close()
                    continue
                if "preload" in request:  # more modules to have warm (the pipeline's, once known)
                    preload(request["preload"])
                    conn.close()
                    idle_since = time.monotonic()
                    continue
                request["socket"] = socket_path
                pid = os.fork()
                if pid == 0:
                    server.close()
                    for _pid, other, _nonce in running.values():
                        other.close()
                    _child(conn, request)
                child = os.pidfd_open(pid)
                running[child] = (pid, conn, request["nonce"])
                selector.register(child, selectors.EVENT_READ, ("child", child))
                selector.register(conn, selectors.EVENT_READ, ("client", child))
            elif kind == "client":  # the client sends nothing after its request: this is its exit
                if running.get(pidfd, (0, None))[1] is not key.fileobj:
                    continue  # its task ended earlier in this batch of events
                pid, conn, _nonce = running[pidfd]
                selector.unregister(conn)
                with contextlib.suppress(OSError):
                    if not conn.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK):
                        os.kill(pid, signal.SIGTERM)
            else:
                selector.unregister(pidfd)
                pid, conn, nonce = running.pop(pidfd)
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(conn)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(f"\n{trailer(nonce)}{code}\n".encode())
                conn.close()
                idle_since = time.monotonic()


def _status(started_at: float, keep: float, tasks: int, retiring: bool, idle: float) -> dict[str, Any]:
    """What a server says about itself: pid, start time, idle time, tasks, whether it retires, and
    its resident memory (``VmRSS``; its tasks' forks are their own processes)."""
    rss_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return {"pid": os.getpid(), "started_at": started_at, "keep_s": keep, "tasks": tasks,
            "retiring": retiring, "idle_s": 0.0 if tasks else round(idle, 1), "rss_mib": rss_kib // 1024}


def trailer(nonce: str) -> str:
    return f"\x00unlearnops-warm-exit {nonce} "


def started(nonce: str) -> str:
    return f"\x00unlearnops-warm-start {nonce} "


# ---------------------------------------------------------------- finding the shared server
def _code_roots() -> list[str]:
    """The folders of the installed unlearnops code (core, components, pipelines)."""
    import importlib.util

    roots: list[str] = []
    for name in ("unlearnops", "unlearnops.components", "unlearnops.pipelines"):
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(name)
            roots += list(spec.submodule_search_locations or []) if spec else []
    return sorted(set(roots))


def _site_folders() -> list[str]:
    """The site-packages folders a fresh interpreter of this set-up imports from (``site``): the
    import path a task's own process would get, not this process's ``sys.path``, which a script's
    folder, pytest or a caller may have changed (the stdlib comes with the interpreter, PYTHONPATH
    with the environment)."""
    import site

    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    return sorted(set(folders))


def fingerprint(env: dict[str, str] | None = None) -> str:
    """What a warm server's imports depend on: the interpreter, the environment (less
    :data:`_VOLATILE_ENV`; hashed, never stored), its site-packages folders with the distributions
    installed there (names with versions) and their ``.pth`` files — the set-up — then every ``.py``
    file of the unlearnops code (path, size, mtime): ``SETUP-CODE``. A server serves only clients
    with its fingerprint."""
    env = dict(os.environ if env is None else env)
    # the interpreter by its file and environment: a console script runs ``python3.11`` where
    # ``python -c`` runs ``python``, the same interpreter
    interpreter = f"{os.path.realpath(sys.executable)}\0{sys.prefix}\0{sys.version}\0"
    digest = hashlib.sha256(interpreter.encode())
    code = hashlib.sha256()
    for key in sorted(env):
        if key not in _VOLATILE_ENV and not key.startswith("UNLEARNOPS_WARM_"):
            digest.update(f"{key}={env[key]}\0".encode())
    for entry in _site_folders():  # the distributions installed there and the paths its .pth files add
        digest.update(f"{entry}\0".encode())
        with contextlib.suppress(OSError):
            names = sorted(n for n in os.listdir(entry) if n.endswith((".dist-info", ".pth")))
            digest.update(" ".join(names).encode())
            for name in (n for n in names if n.endswith(".pth")):
                digest.update(Path(entry, name).read_bytes())
    for root in _code_roots():
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                with contextlib.suppress(OSError):
                    info = os.stat(os.path.join(folder, name))
                    code.update(f"{folder}/{name}:{info.st_size}:{info.st_mtime_ns}\0".encode())
    return f"{digest.hexdigest()[:12]}-{code.hexdigest()[:12]}"


def _folder_path() -> Path:
    # AF_UNIX paths are short (108 bytes): not under TMPDIR
    return Path(os.environ.get(FOLDER_ENV) or f"/tmp/uo-warm-{os.getuid()}")


def server_folder() -> Path | None:
    """``/tmp/uo-warm-<uid>`` (or ``UNLEARNOPS_WARM_RUNNER_DIR``): this user's servers' sockets (mode
    0700; None when it is not safe to use — another owner, or open to others: whoever can connect
    runs code as the user)."""
    folder = _folder_path()
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    try:
        info = folder.lstat()
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return folder


def _retire(socket_path: Path) -> bool:
    """Ask the server on ``socket_path`` to stop once its running tasks end; False if none is there."""
    conn = _connect(str(socket_path))
    if conn is None:
        return False
    with conn, contextlib.suppress(OSError):
        conn.sendall(b'{"retire": true}\n')
    return True


def _retire_others(folder: Path, name: str) -> None:
    """Before a new server starts: servers of its set-up with older code retire, and of the other
    set-ups only the :data:`MAX_STAYING` - 1 newest stay (each holds ~1.5 GB of imports)."""
    setup = name.split("-")[0]
    others = sorted((p for p in folder.glob("*.sock") if p.name != f"{name}.sock"),
                    key=lambda p: p.stat().st_mtime if p.exists() else 0.0, reverse=True)
    kept = 0
    for other in others:
        if other.name.startswith(f"{setup}-") or kept >= MAX_STAYING - 1:
            _retire(other)
        elif _connect_ok(other):
            kept += 1


def _connect_ok(socket_path: Path) -> bool:
    conn = _connect(str(socket_path))
    if conn is not None:
        conn.close()
    return conn is not None


def retire_all() -> int:
    """Every staying server of this user stops once its running tasks end (not waited for); how
    many were asked."""
    stopped, up = stop_servers(timeout=0)
    return len(stopped) + len(up)


@dataclass(frozen=True)
class ServerInfo:
    """One staying server, as ``unlearnops warm-runner status`` shows it."""

    name: str  # its fingerprint (``SETUP-CODE``)
    current: bool  # it serves this process's set-up and code
    pid: int | None  # None: its socket is there but nothing answers (a server that died)
    started_at: float = 0.0
    keep_s: float = 0.0
    tasks: int = 0
    idle_s: float = 0.0
    retiring: bool = False
    rss_mib: int = 0


def _ask_status(socket_path: Path, timeout: float = 5.0) -> dict[str, Any] | None:
    conn = _connect(str(socket_path))
    if conn is None:
        return None
    with conn, contextlib.suppress(OSError, ValueError):
        conn.settimeout(timeout)
        conn.sendall(b'{"status": true}\n')
        with conn.makefile("rb") as stream:
            reply: dict[str, Any] = json.loads(stream.readline())
            return reply
    return None


def servers() -> list[ServerInfo]:
    """This user's staying servers, newest first (each asked for its :func:`_status`)."""
    folder = server_folder()
    if folder is None:
        return []
    mine = fingerprint()
    found = []
    for path in folder.glob("*.sock"):
        reply = _ask_status(path) or {}
        fields = {k: reply[k] for k in ("started_at", "keep_s", "tasks", "idle_s", "retiring", "rss_mib")
                  if k in reply}
        found.append(ServerInfo(path.stem, path.stem == mine, reply.get("pid"), **fields))
    return sorted(found, key=lambda info: info.started_at, reverse=True)


class NotStartable(Exception):
    """A staying server cannot be started here; the message says why and what to do."""


def start_server(log_folder: Path, profile: Path | None = None,
                 timeout: float = 120.0) -> tuple[ServerInfo | None, bool]:
    """This set-up's staying server, started now unless one is up (``unlearnops warm-runner
    start``: its imports are paid before the next run instead of on its critical path). Returns its
    status once it listens (None: not ready within ``timeout`` s, or it died) and whether this call
    started it; :class:`NotStartable` when the warm runner is off or cannot be shared here."""
    if not available():
        raise NotStartable(f"the warm runner is off ({ENV_SWITCH}=0) or this system lacks pidfd_open; "
                           f"unset {ENV_SWITCH} to use it")
    keep = keep_seconds()
    if keep <= 0:
        raise NotStartable(f"{KEEP_ENV}={os.environ.get(KEEP_ENV)}: a server would stop as soon as it "
                           f"is idle; set it to the idle seconds it should stay (default {DEFAULT_KEEP:.0f})")
    pool = WarmPool.shared(STAYING_MODULES, log_folder, profile, keep)
    if pool is None:
        raise NotStartable(f"the socket folder {_folder_path()} "
                           "is not this user's alone (mode 0700); fix its owner and mode, or set "
                           f"{FOLDER_ENV} to a folder of your own")
    started_now = pool.process is not None
    try:
        ready = pool.wait_ready(timeout) and pool.alive()
    finally:
        pool.close()  # a staying server outlives this call
    name = fingerprint()
    found = [info for info in servers() if info.name == name and info.pid is not None] if ready else []
    return (found[0] if found else None), started_now


def stop_servers(now: bool = False, timeout: float = 10.0) -> tuple[list[ServerInfo], list[ServerInfo]]:
    """Retire every staying server of this user (an idle one stops at once, a busy one after its
    running tasks); ``now``: terminate them (their running tasks too). Waits up to ``timeout`` s;
    returns (stopped, still up)."""
    folder = server_folder()
    asked = [info for info in servers() if info.pid is not None]
    for info in asked:
        if now and info.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
        elif folder is not None:
            _retire(folder / f"{info.name}.sock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(info.pid) for info in asked):
        time.sleep(0.1)
    up = [info for info in asked if _pid_alive(info.pid)]
    return [info for info in asked if info not in up], up


def _pid_alive(pid: int | None) -> bool:
    from unlearnops.local_ray import pid_alive

    return pid is not None and pid_alive(pid)


def _connect(socket_path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(socket_path)
    except OSError:
        conn.close()
        return None
    return conn


# ---------------------------------------------------------------- the client (the run's process)
class WarmPool:
    """A server the run's tasks go to; :meth:`run` sends it a task, :meth:`close` is the run's end.

    Made by :meth:`start` (a new server: the run's own, or — with ``keep`` > 0 — one that stays for
    later runs) or :meth:`attach` (one already up). ``profile``: a file of module names that earlier
    runs' tasks imported beyond the server's; a new server preloads them, and what this run's tasks
    import is added to it (and sent to a staying server) on :meth:`close`.
    """

    def __init__(self, socket_path: str, profile: Path | None = None,
                 process: subprocess.Popen[bytes] | None = None, ready_fd: int = -1,
                 lifeline: int = -1, folder: Path | None = None, lock: int = -1) -> None:
        self.socket_path = socket_path
        self.profile = profile
        self.process = process  # the server, when this pool started it
        self.ready_fd, self.lifeline, self.folder, self.lock = ready_fd, lifeline, folder, lock
        self.ready: bool | None = None if ready_fd >= 0 else True
        self.learned: set[str] = set()
        self.log: Any = None

    @classmethod
    def start(cls, modules: Iterable[str], log_folder: Path, profile: Path | None = None,
              keep: float = 0.0, socket_path: str | None = None, lock: int = -1) -> WarmPool:
        """Start a server that imports ``modules`` (and the profile's); with ``keep`` == 0 it stops
        with this process (a lifeline pipe), else it outlives it, in its own session."""
        folder = None
        if socket_path is None:
            folder = Path(tempfile.mkdtemp(prefix="uo-warm-", dir="/tmp"))  # AF_UNIX: short path
            socket_path = str(folder / "s")
        log_folder.mkdir(parents=True, exist_ok=True)
        log = (log_folder / "warm-runner.log").open("ab")
        read_fd, write_fd = os.pipe()
        lifeline, own_end = os.pipe() if keep <= 0 else (-1, -1)
        fds = (write_fd, lifeline) if keep <= 0 else (write_fd,)
        # -P: the starting folder is not first on the server's import path (each task puts its own)
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", __name__, socket_path, str(write_fd), str(lifeline), str(keep),
             *dict.fromkeys([*modules, *read_profile(profile)])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=fds, start_new_session=keep > 0)
        for fd in fds:
            os.close(fd)
        pool = cls(socket_path, profile, process, read_fd, own_end, folder, lock)
        pool.log = log
        return pool

    @classmethod
    def attach(cls, socket_path: str, profile: Path | None = None) -> WarmPool | None:
        """The server listening on ``socket_path``, or None when none answers there."""
        conn = _connect(socket_path)
        if conn is None:
            return None
        conn.close()
        return cls(socket_path, profile)

    @classmethod
    def shared(cls, modules: Iterable[str], log_folder: Path, profile: Path | None = None,
               keep: float = DEFAULT_KEEP) -> WarmPool | None:
        """This user's staying server for :func:`fingerprint`: attached, or started (one starter at a
        time: the others wait on its lock until it is ready). None when it is not safe to share."""
        folder = server_folder()
        if folder is None:
            return None
        base = folder / fingerprint()
        lock = os.open(f"{base}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by close(), or when the ready wait ends
        pool = cls.attach(f"{base}.sock", profile)
        if pool is not None:
            os.close(lock)
            return pool
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{base}.sock")  # a server that died left it behind
        _retire_others(folder, base.name)
        return cls.start(modules, log_folder, profile, keep, f"{base}.sock", lock)

    @property
    def server_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """True once the server has imported its modules and listens (False when it died)."""
        if self.ready is None:
            selector = selectors.DefaultSelector()
            selector.register(self.ready_fd, selectors.EVENT_READ)
            got = os.read(self.ready_fd, len(READY)) if selector.select(timeout) else b""
            selector.close()
            os.close(self.ready_fd)
            self.ready = got == READY
            self._unlock()
        return self.ready

    def _unlock(self) -> None:
        if self.lock >= 0:
            os.close(self.lock)
            self.lock = -1

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def run(self, task: TaskCommand, env: dict[str, str], echo: Callable[[str], None]) -> int | None:
        """Run ``task`` in a fork of the server; its output through ``echo``. None: the server is gone
        (or did not take the task)."""
        if not self.wait_ready() or not self.alive():
            return None
        nonce = secrets.token_hex(8)
        modules_out = Path(tempfile.gettempdir()) / f"uo-warm-{nonce}.modules"
        request = {"source": task.source, "args": task.args, "env": env, "cwd": os.getcwd(), "nonce": nonce,
                   "modules_out": str(modules_out)}
        try:
            return self.send(request, echo)
        finally:  # also when Ctrl-C ends the run: the file goes
            with contextlib.suppress(OSError):
                self.learned.update(modules_out.read_text().split())
            modules_out.unlink(missing_ok=True)

    def send(self, request: dict[str, Any], echo: Callable[[str], None]) -> int | None:
        """Send a task or command request; relay its output; its exit status (None: not taken)."""
        conn = self._send(request)
        return None if conn is None else _relay(conn, request["nonce"], echo)

    def preload(self, modules: Iterable[str]) -> None:
        """Ask the server to import ``modules`` too (before the tasks that follow)."""
        if not self.wait_ready():
            return
        conn = self._send({"preload": list(modules)})
        if conn is not None:
            conn.close()

    def _send(self, request: dict[str, Any]) -> socket.socket | None:
        conn = _connect(self.socket_path)
        if conn is None:
            return None
        try:
            conn.sendall(json.dumps(request).encode() + b"\n")
        except OSError:
            conn.close()
            return None
        return conn

    def close(self) -> None:
        """The run's end: a server of this run stops; a staying one gets what the tasks learned."""
        staying = self.lifeline < 0 and self.folder is None
        if staying and self.learned and self.ready is not False:
            self.preload(learnable(self.learned))
        if self.lifeline >= 0:
            os.close(self.lifeline)
            self.lifeline = -1
        if self.process is not None and not staying and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.ready is None:
            os.close(self.ready_fd)
            self.ready = False
        self._unlock()
        if self.log is not None:
            self.log.close()
        if self.profile is not None and self.learned:
            write_profile(self.profile, self.learned)
        if self.folder is not None:
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


def _forward_interrupt(pid: int) -> None:
    """Ctrl-C reaches a staying server's child (another session) only through its client — and a
    delegated command's tasks (the same session as it) only through that command."""
    with contextlib.suppress(OSError):
        if os.environ.get(SOCKET_ENV) or os.getpgid(pid) != os.getpgrp():
            os.kill(pid, signal.SIGINT)


def _relay(conn: socket.socket, nonce: str, echo: Callable[[str], None]) -> int | None:
    """Echo the task's output line by line until its trailer; the exit status (1 when it vanished,
    None when it never acknowledged the task). Ctrl-C is forwarded to the task, then re-raised."""
    head, tail = started(nonce), trailer(nonce)
    interrupted = False
    with conn, conn.makefile("r", encoding="utf-8", errors="replace", newline="\n") as stream:
        try:
            first = stream.readline()
        except OSError:
            return None
        if not first.startswith(head):
            return None
        pid = int(first[len(head):].strip())
        previous: str | None = None
        code = 1
        while True:
            try:
                for line in stream:
                    if line.startswith(tail):  # sent after a newline: a blank line held is not output
                        previous = None
                        code = int(line[len(tail):].strip())
                        break
                    if previous is not None:
                        echo(previous)
                        previous = None
                    if line == "\n":  # held until the next line: it may be the trailer's own
                        previous = line
                    else:
                        echo(line)  # at once: a line before a long pause is seen when it is written
                break
            except KeyboardInterrupt:
                interrupted = True
                _forward_interrupt(pid)
        if previous is not None:
            echo(previous)
    if interrupted:
        raise KeyboardInterrupt
    return code


_started: WarmPool | None = None


def available() -> bool:
    return enabled() and hasattr(os, "pidfd_open")


def _pool(log_folder: Path, profile: Path | None) -> WarmPool | None:
    """The server this process's tasks go to: the one it was forked from (a delegated command), a
    staying shared one, or one of its own (``keep`` 0, or sharing not safe)."""
    if os.environ.get(SOCKET_ENV):
        return WarmPool.attach(os.environ[SOCKET_ENV], profile)
    keep = keep_seconds()
    pool = WarmPool.shared(STAYING_MODULES, log_folder, profile, keep) if keep > 0 else None
    return pool or WarmPool.start(BASE_MODULES, log_folder, profile)


def prestart(log_folder: Path, profile: Path | None = None) -> None:
    """Start (or find) the server now, so its imports overlap the caller's own work; :func:`patched`
    uses it."""
    global _started
    if available() and _started is None:
        _started = _pool(log_folder, profile)
        import atexit

        atexit.register(_close_unused)


def _close_unused() -> None:
    """A prestarted server no run took (the caller exited early) is released at exit."""
    global _started
    if _started is not None:
        _started.close()
        _started = None


def delegate(command: list[str], echo: Callable[[str], None] | None = None) -> int | None:
    """Run ``unlearnops COMMAND…`` in a fork of this user's staying server, when one with this
    process's fingerprint is up (its imports are already paid); its exit status, or None — not
    delegated (none is up, or the warm runner is off, or this process is such a fork): run here."""
    if not available() or keep_seconds() <= 0 or os.environ.get(SOCKET_ENV) or not command:
        return None
    folder = server_folder()
    pool = WarmPool.attach(str(folder / f"{fingerprint()}.sock")) if folder else None
    if pool is None:
        return None
    env = dict(os.environ)
    if sys.stderr.isatty():  # the fork writes to a socket: keep the terminal's width and colours
        env.setdefault("COLUMNS", str(os.get_terminal_size(sys.stderr.fileno()).columns))
        env.setdefault("FORCE_COLOR", "1")
    request = {"command": command, "env": env, "cwd": os.getcwd(), "nonce": secrets.token_hex(8)}
    return pool.send(request, echo or (lambda line: print(line, end="", file=sys.stderr, flush=True)))


@contextlib.contextmanager
def patched(pipeline: Any, log_folder: Path, profile: Path | None = None) -> Iterator[WarmPool | None]:
    """For the duration, kfp.local's subprocess tasks run in forks of a warm :class:`WarmPool`
    (the one :func:`prestart` found or started, else one found or started now); a server of this run
    is stopped afterwards, a staying one is not."""
    global _started
    if not available():
        yield None
        return
    from kfp.local import subprocess_task_handler as handler

    pool, _started = _started, None
    if pool is None:
        pool = _pool(log_folder, profile)
    if pool is None:
        yield None
        return
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
    """``python -m unlearnops.pipelines.warm_runner SOCKET READY_FD LIFELINE_FD KEEP MODULE…``."""
    started_at = time.monotonic()
    socket_path, ready_fd, lifeline_fd, keep = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    modules = argv[4:]
    failed = preload(modules)
    left = f" (left to the tasks: {', '.join(failed)})" if failed else ""
    stays = f", staying {keep:.0f}s idle" if keep > 0 else ""
    print(f"warm runner {os.getpid()}: imported {len(modules) - len(failed)} modules in "
          f"{time.monotonic() - started_at:.1f}s{left}{stays}", flush=True)
    serve(socket_path, ready_fd, lifeline_fd, keep)


if __name__ == "__main__":
    main(sys.argv[1:])
