"""A long-lived local Ray the user and the pipeline attach to (``unlearnops ray start|status|stop``).

``start`` launches a detached process (``python -m unlearnops.local_ray``) that calls
``ray.init`` as the head of a one-node cluster — its own short temp folder under ``/tmp`` (Ray's
socket paths must stay under 107 bytes), dashboard off, ``num_cpus`` = the cores — and
then sleeps until it is sent SIGTERM. Once the head is up it writes ``HOME/ray.json``
(``address``, ``pid``, ``temp_dir``); runs attach with ``UNLEARNOPS_RAY_ADDRESS=<address>``.
``stop`` signals that pid (never ``ray stop``, which kills every Ray on the machine), waits for
it to exit — ``ray.shutdown()`` stops the node processes it started — and removes the temp folder.
``RAY_AUTH_MODE`` and ``RAY_USAGE_STATS_ENABLED`` pass through from the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .settings import get_settings

STATE_FILE = "ray.json"
LOG_FILE = "ray-head.log"


class LocalRayError(RuntimeError):
    """The local Ray could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class LocalRay:
    """A running head: its GCS address, the pid of the process holding it, its temp folder."""

    address: str
    pid: int
    temp_dir: str


def state_path() -> Path:
    return get_settings().home / STATE_FILE


def pid_alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of this process counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def current() -> LocalRay | None:
    """The running local Ray from the state file, or None (a stale file is removed)."""
    path = state_path()
    try:
        found = LocalRay(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if pid_alive(found.pid):
        return found
    path.unlink(missing_ok=True)
    return None


def start(num_cpus: int | None = None, timeout_s: float = 120.0) -> tuple[LocalRay, bool]:
    """Start the local Ray unless one runs; (it, True when this call started it)."""
    running = current()
    if running:
        return running, False
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    temp = tempfile.mkdtemp(prefix="uo-ray-", dir="/tmp")
    log = (home / LOG_FILE).open("wb")
    cmd = [sys.executable, "-m", "unlearnops.local_ray", str(state_path().absolute()), temp,
           str(num_cpus or os.cpu_count() or 1)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=os.environ.copy())
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            shutil.rmtree(temp, ignore_errors=True)
            raise LocalRayError(f"the Ray head exited with code {proc.returncode} before it was up "
                                f"(its output: {home / LOG_FILE})")
        found = current()
        if found and found.pid == proc.pid:
            return found, True
        time.sleep(0.2)
    _terminate(proc.pid, 10.0)
    shutil.rmtree(temp, ignore_errors=True)
    raise LocalRayError(f"the Ray head was not up within {timeout_s:.0f} s (its output: {home / LOG_FILE})")


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM ``pid`` (the head shuts Ray down), SIGKILL its process group if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the head runs in its own session: pgid == pid


def stop(timeout_s: float = 30.0) -> LocalRay | None:
    """Stop the local Ray by its pid and remove its temp folder; the one stopped, or None."""
    running = current()
    if running is None:
        return None
    _terminate(running.pid, timeout_s)
    if pid_alive(running.pid):
        raise LocalRayError(f"the Ray head (pid {running.pid}) did not exit")
    shutil.rmtree(running.temp_dir, ignore_errors=True)
    state_path().unlink(missing_ok=True)
    return running


def _serve(state: Path, temp: str, num_cpus: int) -> None:
    """The detached head: ``ray.init`` as a one-node cluster, write the state file, wait for SIGTERM."""
    import ray

    stopping = False

    def _on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp,
                   configure_logging=False, log_to_driver=False)
    try:
        found = LocalRay(address=ray.get_runtime_context().gcs_address, pid=os.getpid(), temp_dir=temp)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(found)))
        tmp.replace(state)
        print(f"Ray head up at {found.address} (pid {found.pid}, temp {temp})", flush=True)
        while not stopping:
            time.sleep(0.5)
    finally:
        ray.shutdown()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
