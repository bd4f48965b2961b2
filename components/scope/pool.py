"""Local worker processes for the shard passes (``parallel="processes"``).

The driver and ``workers`` worker processes share one queue of per-shard calls: the workers take
calls from the front, the driver takes the next one itself whenever it is free (so ``n`` cores run
``n - 1`` workers plus the driver), and results come back in call order, so merging them gives
exactly what the in-process loop gives. An exception (a :class:`.shards.ScopeError` naming a bad
line, an unreadable shard) is kept with its call and raised when the results reach it: the first
failing call in order raises, with its own message, as in-process.

Start method: ``spawn``, chosen on measurements (2-core machine, 1,000,038 records in 8 shards,
one worker, best of two runs, the machine shared): spawn 2.16 s with the worker's VmHWM at 63 MiB;
forkserver 1.96 s, 61 MiB, and a server process that stays alive for the rest of the caller's life;
fork 1.85 s, 52 MiB. Fork is cheapest, but forking a process that runs threads — Python ones, or
the native pools of torch, Ray's gRPC, the dashboard's server — can deadlock the child, and
``threading.active_count()`` does not see native threads, so a fallback on it would not be safe
either. A spawned worker is a fresh interpreter importing only :mod:`.scan` (numpy, re2, the
storage layer and its settings): safe in any caller, no in-process fallback needed, nothing left
behind after :meth:`ShardPool.close`; it costs about 0.2 s of start (overlapped with the driver's
own reads) and ~10 MiB more than a forked worker. As with any spawn pool, a script that calls
:func:`.resolve.resolve_scope` at import time needs the ``if __name__ == "__main__":`` guard
(the worker imports the caller's main module).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

START_METHOD = "spawn"


def cores() -> int:
    """CPU cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def peak_rss_kib() -> int:
    """This process's peak resident set (``VmHWM`` of ``/proc/self/status``, KiB); 0 if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def warm() -> int:
    """Import the per-shard module in a fresh worker (done while the driver prepares); its pid."""
    from . import scan  # noqa: F401

    return os.getpid()


def in_worker(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, int, int]:
    """Run ``fn(*args)`` in a worker: (result, worker pid, worker peak RSS in KiB)."""
    result = fn(*args)
    return result, os.getpid(), peak_rss_kib()


Outcome = tuple[bool, Any]  # (ok, result or the exception)


def _run_here(fn: Callable[..., Any], args: tuple[Any, ...]) -> Outcome:
    try:
        return True, fn(*args)
    except Exception as err:  # kept with its call, raised in call order
        return False, err


class ShardPool:
    """``workers`` spawned processes, started once and reused for every :meth:`map`."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.peaks: dict[int, int] = {}  # worker pid -> its peak RSS (KiB), from its latest result
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now (each imports :mod:`.scan` while the driver goes on)."""
        if self.workers > 0 and self._executor is None:
            context = multiprocessing.get_context(START_METHOD)
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
            for _ in range(self.workers):
                self._executor.submit(warm)

    def close(self) -> None:
        """Cancel calls not started, wait for running ones, and stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        assert self._executor is not None
        return self._executor.submit(in_worker, fn, args)

    def _outcome(self, future: Future[Any]) -> Outcome:
        err = future.exception()
        if err is not None:
            return False, err
        result, pid, peak = future.result()
        self.peaks[pid] = max(peak, self.peaks.get(pid, 0))
        return True, result

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        """``fn(*args)`` for each of ``calls``, in order, spread over the workers and the driver."""
        if self._executor is None:
            for args in calls:
                yield fn(*args)
            return
        pending = deque(range(len(calls)))
        running: dict[Future[Any], int] = {}
        done: dict[int, Outcome] = {}
        try:
            for index in range(len(calls)):
                while index not in done:
                    for future in [f for f in running if f.done()]:
                        done[running.pop(future)] = self._outcome(future)
                    while pending and len(running) < self.workers:
                        taken = pending.popleft()
                        running[self._submit(fn, calls[taken])] = taken
                    if index in done:
                        break
                    if pending:  # the driver's share: the next call no worker has taken
                        mine = pending.popleft()
                        done[mine] = _run_here(fn, calls[mine])
                    else:
                        wait(running, return_when=FIRST_COMPLETED)
                ok, value = done.pop(index)
                if not ok:
                    raise value
                yield value
        finally:
            for future in running:
                future.cancel()
