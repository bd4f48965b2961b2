"""Ray stays quiet unless --verbose; a failed worker's error is one line with where the logs are."""

from __future__ import annotations

import pytest
from unlearnops.components.unlearn import runner

WORKER_FAILURE = """Training failed due to worker errors:
[Rank 0 Traceback]
Traceback (most recent call last):
  File "/x/loop.py", line 10, in step
    raise ValueError("loss is nan at step 3")
ValueError: loss is nan at step 3
"""


def test_failure_is_one_line() -> None:
    line = runner._one_line(RuntimeError(WORKER_FAILURE))
    assert line == 'ValueError: loss is nan at step 3' and "\n" not in line
    assert runner._one_line(RuntimeError("")) == "RuntimeError"


def test_verbose_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNLEARNOPS_VERBOSE", raising=False)
    assert not runner.verbose()
    monkeypatch.setenv("UNLEARNOPS_VERBOSE", "1")
    assert runner.verbose()


# ------------------------------------------------------------------ the driver's progress bar
class _Board:
    """A stand-in actor handle: ``put.remote(x)`` records x."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict] = []

        def remote(latest: dict) -> None:
            if fail:
                raise ConnectionError("board gone")
            self.sent.append(latest)

        self.put = type("Put", (), {"remote": staticmethod(remote)})


def test_rank0_progress_is_throttled_and_never_fails_training() -> None:
    from unlearnops.components.unlearn.progress import ProgressSender

    board = _Board()
    send = ProgressSender("progress-x", board)
    for step in range(1, 6):  # five quick steps: the first and the last are sent
        send(step, 5, 0.5 / step)
    assert [s["step"] for s in board.sent] == [1, 5] and board.sent[-1]["loss"] == 0.1
    quiet = _Board()
    ProgressSender(None, quiet)(5, 5, 0.1)  # no board (no terminal on the driver): nothing sent
    assert quiet.sent == []
    broken = ProgressSender("progress-y", _Board(fail=True))
    broken(1, 5, 0.3)  # a gone board is dropped, training goes on
    assert broken.board is None


def test_no_progress_board_without_a_terminal() -> None:
    import io

    from rich.console import Console
    from unlearnops.components.unlearn.progress import driver_progress

    with driver_progress("npo", Console(file=io.StringIO())) as board:
        assert board is None
