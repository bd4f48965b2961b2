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
