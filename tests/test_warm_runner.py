"""The warm fork server under kfp.local (issue 15): same pipeline semantics, tasks forked warm."""

from pathlib import Path

import pytest
from kfp import dsl, local
from unlearnops.pipelines import warm_runner


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
