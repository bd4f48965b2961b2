"""Resilience drills: step hooks (:class:`.job.StepHook`) that break a run on purpose.

Run one on a cluster to check that a Ray Train run survives a worker death by resuming from its
last checkpoint (``train.max_failures``) and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def kill_worker_once(*, step: int, rank: int, at_step: int, marker: str, on_rank: int = 0) -> None:
    """SIGKILL this worker when it reaches ``at_step`` on rank ``on_rank``, once.

    ``marker`` is a file on storage every attempt sees: written before the kill, so the resumed
    run passes the same step without dying again (and its existence proves the drill ran).
    """
    if step != at_step or rank != on_rank or os.path.exists(marker):
        return
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
