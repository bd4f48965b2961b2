"""Training progress of a Ray run on the driver's terminal.

Ray workers' output stays in Ray's log files unless ``--verbose`` (:func:`.runner.ray_session`),
so a Ray run would show nothing while it trains. Rank 0 sends its step and loss to a small named
actor (:class:`ProgressBoard`) — fire-and-forget, at most every :data:`SEND_EVERY` seconds, so
training never waits on it — and a driver thread polls that actor into a rich progress bar on
stderr. Without a terminal there is no board and nothing is sent.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

NAMESPACE = "unlearnops"
#: Key of the board's actor name in Ray Train's ``train_loop_config`` (popped before the TrainJob).
CONFIG_KEY = "progress_board"
SEND_EVERY = 0.5  # seconds between two sends of rank 0 (the last step is always sent)
POLL_EVERY = 0.5  # seconds between two reads of the driver


class ProgressBoard:
    """The latest ``{"step", "total", "loss"}`` of one run (run as a Ray actor, 0 CPUs)."""

    def __init__(self) -> None:
        self.latest: dict[str, float] = {}

    def put(self, latest: dict[str, float]) -> None:
        self.latest = latest

    def get(self) -> dict[str, float]:
        return self.latest


class ProgressSender:
    """Rank 0's side: sends step, total and loss to the run's board, throttled; never raises."""

    def __init__(self, board: str | None, handle: Any = None) -> None:
        self.board, self.handle, self.last = board, handle, float("-inf")

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if not self.board or (step < total and now - self.last < SEND_EVERY):
            return
        self.last = now
        try:
            if self.handle is None:
                import ray

                self.handle = ray.get_actor(self.board, namespace=NAMESPACE)
            self.handle.put.remote({"step": step, "total": total, "loss": loss})
        except Exception:  # progress is cosmetic: a missing board must not fail training
            self.board = None


@contextlib.contextmanager
def driver_progress(label: str, console: Any = None) -> Iterator[str | None]:
    """While a Ray run trains: a progress bar fed by its board; yields the board's actor name.

    Yields ``None`` (no board, no bar) when ``console`` (default: rich's stderr console) is not a
    terminal. The board is read once more after the run, so the bar ends on the last step.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    name = f"progress-{uuid.uuid4().hex}"
    # Any: Ray types an actor's methods as plain callables, without their ``.remote``
    board: Any = ray.remote(num_cpus=0)(ProgressBoard).options(name=name, namespace=NAMESPACE).remote()
    done = threading.Event()

    def show() -> None:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(f"{label}: starting", total=None)
            while True:
                finished = done.is_set()
                with contextlib.suppress(Exception):  # a slow or gone board: try again next time
                    latest: dict[str, float] = ray.get(board.get.remote(), timeout=10)
                    if latest:
                        bar.update(task, completed=latest["step"], total=latest["total"],
                                   description=f"{label} loss {latest['loss']:.4f}")
                if finished:
                    break
                done.wait(POLL_EVERY)

    thread = threading.Thread(target=show, name="unlearnops-progress", daemon=True)
    thread.start()
    try:
        yield name
    finally:
        done.set()
        thread.join(timeout=20)
        with contextlib.suppress(Exception):
            ray.kill(board)
