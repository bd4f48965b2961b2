"""The warm fork server under kfp.local (issue 15): same pipeline semantics, tasks forked warm."""

from pathlib import Path

import pytest
from kfp import dsl, local
from typer.testing import CliRunner
from unlearnops.pipelines import warm_runner

from unlearnops.cli import _load_plugins, app


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def whoami(label: str) -> str:
    """The task's process facts: parent pid, an env var, whether kfp's runtime flag is set."""
    import json
    import os
    import sys

    return json.dumps({"label": label, "ppid": os.getppid(), "flag": os.environ.get("_KFP_RUNTIME"),
                       "task_env": os.environ.get("WARM_TEST_VAR"), "torch": "torch" in sys.modules})


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail(message: str) -> str:
    raise RuntimeError(message)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def is_even(n: int) -> bool:
    return n % 2 == 0


@dsl.pipeline(name="warm-test")
def branching(n: int) -> str:
    first = whoami(label="first")
    first.set_env_variable("WARM_TEST_VAR", "set-on-task")
    check = is_even(n=n)
    with dsl.If(check.output == True):  # noqa: E712 - a KFP condition, not a Python comparison
        whoami(label="even").after(first)
    with dsl.Else():
        fail(message="odd input").after(first)
    return first.output


def test_parse_command_accepts_exactly_kfps_script() -> None:
    spec = whoami.component_spec.implementation.container
    command = [*spec.command, *spec.args]
    task = warm_runner.parse_command(command, python="python3")
    assert task is not None and "def whoami" in task.source
    assert task.args[0] == "--executor_input" and task.args[-2:] == ["--function_to_execute", "whoami"]
    assert warm_runner.parse_command(["sh", "-c", *command[2:]]) is None
    tampered = [command[0], command[1], command[2] + "; rm -rf /", *command[3:]]
    assert warm_runner.parse_command(tampered, python="python3") is None
    assert warm_runner.parse_command(command, python="/other/python") is not None  # python3 is accepted
    other = [command[0], command[1], command[2].replace("python3", "/opt/py/bin/python"), *command[3:]]
    assert warm_runner.parse_command(other, python="/usr/bin/python") is None


def test_component_imports_reads_the_sources_imports() -> None:
    source = "import a.b\nfrom c.d import e\nfrom . import rel\ndef f():\n    import g\n"
    assert warm_runner.component_imports([source, "not python ("]) == ["a.b", "c.d", "g"]
    sources = warm_runner.pipeline_sources(branching)
    assert len(sources) == 4 and any("def fail" in s for s in sources)  # whoami runs twice


@pytest.fixture
def kfp_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "outputs"),
               workspace_root=str(tmp_path / "ws"), raise_on_error=False)
    return tmp_path


def _outputs(capfd: pytest.CaptureFixture[str]) -> str:
    import re

    captured = capfd.readouterr()
    return re.sub(r"\x1b\[[0-9;]*m", "", captured.out + captured.err)


def test_tasks_run_forked_from_the_warm_server_with_kfp_semantics(kfp_roots: Path, capfd) -> None:
    import json

    with warm_runner.patched(branching, kfp_roots) as pool:
        assert pool is not None
        even = branching(n=2)
        branching(n=3)  # the failing branch
        server_pid = pool.process.pid
    first = json.loads(even.output)
    assert first["ppid"] == server_pid and first["flag"] == "true" and first["task_env"] == "set-on-task"
    assert first["torch"]  # the server imported torch once: the task found it warm
    shown = _outputs(capfd)
    assert "Task 'whoami-2' finished with status SUCCESS" in shown
    assert "RuntimeError: odd input" in shown  # the failing branch's traceback reaches the console
    assert "Task 'fail' finished with status FAILURE" in shown
    assert pool.process.poll() is not None  # stopped with the run
    assert not Path(pool.socket_path).exists()


def test_switched_off_or_unknown_commands_run_as_kfp_does(kfp_roots: Path, monkeypatch, capfd) -> None:
    import json

    monkeypatch.setenv(warm_runner.ENV_SWITCH, "0")
    with warm_runner.patched(branching, kfp_roots) as pool:
        assert pool is None
        out = branching(n=2)
    assert not json.loads(out.output)["torch"]  # a fresh interpreter, as kfp.local starts one
    monkeypatch.delenv(warm_runner.ENV_SWITCH)
    with warm_runner.patched(branching, kfp_roots) as pool:
        assert pool is not None
        pool.close()  # the server is gone: tasks fall back to fresh subprocesses
        out = branching(n=2)
    fallback = json.loads(out.output)
    assert fallback["ppid"] != pool.process.pid and not fallback["torch"]


def test_fingerprint_follows_the_environment_not_its_volatile_parts() -> None:
    env = {"PATH": "/usr/bin", "UNLEARNOPS_HOME": "/a", "TMPDIR": "/t1"}
    same = warm_runner.fingerprint(env)
    assert warm_runner.fingerprint({**env, "TMPDIR": "/t2", warm_runner.KEEP_ENV: "5"}) == same
    other = warm_runner.fingerprint({**env, "UNLEARNOPS_HOME": "/b"})
    assert other != same and other.split("-")[1] == same.split("-")[1]  # same code, other set-up


def _gone(pid: int, seconds: float = 15.0) -> bool:
    import os
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def staying(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Staying servers on, in a set-up of this test's own (its env var), retired afterwards."""
    monkeypatch.setenv(warm_runner.KEEP_ENV, "30")
    monkeypatch.setenv("WARM_TEST_SETUP", tmp_path.name)
    yield
    warm_runner.retire_all()


def test_a_staying_server_serves_later_runs_then_retires(kfp_roots: Path, staying, capfd) -> None:
    import json
    import stat

    with warm_runner.patched(branching, kfp_roots) as pool:
        first = json.loads(branching(n=2).output)
    server = pool.process
    assert server is not None and server.poll() is None  # it stays after the run
    folder = warm_runner.server_folder()
    assert folder is not None and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert Path(pool.socket_path).parent == folder
    with warm_runner.patched(branching, kfp_roots) as again:
        second = json.loads(branching(n=2).output)
    assert again.process is None  # attached, not started
    assert first["ppid"] == second["ppid"] == server.pid and second["torch"]
    # a command handed to the server runs there: its output and exit status come back
    lines: list[str] = []
    assert warm_runner.delegate(["--help"], lines.append) == 0
    assert "Usage" in "".join(lines)
    assert warm_runner.delegate(["no-such-command"], lines.append) == 2
    # `unlearnops warm-runner status` reports it (asked over its socket); `stop` retires it
    _load_plugins()
    (info,) = warm_runner.servers()
    assert info.pid == server.pid and info.current and info.tasks == 0 and not info.retiring
    assert info.keep_s == 30 and info.rss_mib > 100 and 0 <= info.idle_s < 30
    status = CliRunner().invoke(app, ["warm-runner", "status", "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["pid"] == server.pid
    stopped = CliRunner().invoke(app, ["warm-runner", "stop"])
    assert stopped.exit_code == 0 and f"stopped {info.name} (pid {server.pid})" in stopped.output
    server.wait(timeout=15)
    assert not Path(pool.socket_path).exists()
    assert warm_runner.servers() == []
    assert "no staying warm server is up" in CliRunner().invoke(app, ["warm-runner", "status"]).output
    assert warm_runner.delegate(["--help"], lines.append) is None  # none up: the caller runs it


def test_fingerprint_is_the_one_a_fresh_interpreter_of_this_set_up_computes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A process whose ``sys.path`` was changed (pytest's rootdir, a script's folder, a caller's
    insert) fingerprints the set-up a fresh ``python -c`` child of it has: the server that child
    starts is the one this process finds (it failed in CI's full suite, where they differed)."""
    import os
    import subprocess
    import sys

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    monkeypatch.syspath_prepend(str(tmp_path))
    child = subprocess.run([sys.executable, "-c", "from unlearnops.pipelines import warm_runner; "
                            "print(warm_runner.fingerprint())"], capture_output=True, text=True,
                           env=dict(os.environ), check=True, timeout=120)
    assert child.stdout.strip() == warm_runner.fingerprint()


def test_warm_up_starts_the_server_a_run_from_any_entry_point_finds(staying) -> None:
    """The dashboard's warm-up (``python -c`` … ``warm-runner start``) starts the staying server, and
    the console script's ``unlearnops warm-runner start`` (another interpreter name, the same one)
    finds that server up: both fingerprint the same set-up."""
    import os
    import subprocess
    import sys

    from unlearnops.dashboard.runs import WarmUp
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    warm_up = WarmUp()
    warm_up()
    assert warm_up.wait() == 0
    (info,) = warm_runner.servers()
    assert info.current and info.pid is not None and info.keep_s == 30
    script = Path(sys.executable).with_name("unlearnops")
    again = subprocess.run([str(script), "warm-runner", "start"], capture_output=True, text=True,
                           env=dict(os.environ), check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"already up: {info.name} (pid {info.pid}" in again.stderr
    assert [s.pid for s in warm_runner.servers()] == [info.pid]  # no second server


def test_warm_runner_start_refuses_when_no_server_could_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.dashboard.runs import WarmUp

    _load_plugins()
    monkeypatch.setenv(warm_runner.KEEP_ENV, "0")
    result = CliRunner().invoke(app, ["warm-runner", "start"])
    assert result.exit_code == 2 and "UNLEARNOPS_WARM_RUNNER_KEEP=0" in result.output
    monkeypatch.setenv(warm_runner.KEEP_ENV, "30")
    monkeypatch.setenv(warm_runner.ENV_SWITCH, "0")
    result = CliRunner().invoke(app, ["warm-runner", "start"])
    assert result.exit_code == 2 and "the warm runner is off" in result.output
    warm_up = WarmUp()
    warm_up()  # off: the dashboard starts nothing
    assert warm_up.child is None


def test_a_task_whose_client_goes_away_is_stopped(tmp_path: Path) -> None:
    import os

    pool = warm_runner.WarmPool.start(["kfp.dsl.executor_main"], tmp_path)
    try:
        assert pool.wait_ready()
        request = {"source": "import time\ntime.sleep(120)\n", "env": dict(os.environ), "cwd": str(tmp_path),
                   "args": ["--executor_input", "{}", "--function_to_execute", "f"], "nonce": "n1",
                   "modules_out": str(tmp_path / "modules")}
        conn = pool._send(request)
        assert conn is not None
        head = conn.makefile("r").readline()
        assert head.startswith(warm_runner.started("n1"))
        pid = int(head.split()[-1])
        conn.close()  # the client is gone (killed, Ctrl-C'd): its task must not run on
        assert _gone(pid)
        assert pool.process.poll() is None  # the server itself carries on
    finally:
        pool.close()


INTERRUPTIBLE = """
import time
try:  # "task-up" inside: the client's Ctrl-C, sent once it reads the line, lands in this block
    print("task-up", flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    print("task-interrupted", flush=True)
    raise SystemExit(130)
"""

CLIENT = """
import os, sys
from unlearnops.pipelines import warm_runner
pool = warm_runner.WarmPool.attach(sys.argv[1])
task = warm_runner.TaskCommand(sys.argv[2], ["--executor_input", "{}", "--function_to_execute", "f"])
try:
    pool.run(task, dict(os.environ), lambda line: print(line, end="", flush=True))
except KeyboardInterrupt:
    print("client-interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_in_the_client_reaches_its_task_in_the_server(tmp_path: Path) -> None:
    """The task runs in the server's session, not the terminal's: the client forwards SIGINT to it,
    waits for its exit, then stops itself (exit 130)."""
    import os
    import signal
    import subprocess
    import sys

    pool = warm_runner.WarmPool.start(["kfp.dsl.executor_main"], tmp_path)
    try:
        assert pool.wait_ready()
        client = subprocess.Popen([sys.executable, "-c", CLIENT, pool.socket_path, INTERRUPTIBLE],
                                  stdout=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
        assert client.stdout is not None
        while client.stdout.readline().strip() != "task-up":  # the executor's log lines first
            assert client.poll() is None
        os.kill(client.pid, signal.SIGINT)  # what Ctrl-C in the client's terminal sends
        out, _ = client.communicate(timeout=30)
        assert client.returncode == 130
        assert out.split()[-2:] == ["task-interrupted", "client-interrupted"]  # the task saw Ctrl-C
        assert pool.process.poll() is None
    finally:
        pool.close()


def test_a_new_server_retires_older_code_and_the_oldest_other_set_ups(tmp_path: Path) -> None:
    """Same set-up with older code: retired; of the other set-ups only the newest one stays."""
    import os
    import socket
    import time

    listeners = {}
    for age, name in enumerate(["b-1", "c-1", "a-1"]):  # b newest, then c; a: this set-up, older code
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp_path / f"{name}.sock"))
        sock.listen(4)
        sock.settimeout(0.2)
        stamp = time.time() - 10 * age
        os.utime(tmp_path / f"{name}.sock", (stamp, stamp))
        listeners[name] = sock
    warm_runner._retire_others(tmp_path, "a-2")

    def asked(sock: socket.socket) -> bool:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                return False
            with conn:
                conn.settimeout(0.2)
                try:
                    if b"retire" in conn.recv(100):
                        return True
                except TimeoutError:
                    continue  # a liveness probe: connected, sent nothing

    assert {name: asked(sock) for name, sock in listeners.items()} == {"a-1": True, "b-1": False, "c-1": True}
    for sock in listeners.values():
        sock.close()
