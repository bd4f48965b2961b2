"""Where a worker runs (:class:`Context`, :class:`RayContext`) and how its state is checkpointed.

A checkpoint is one ``state.pt`` (model and optimizer state gathered whole on CPU — from FSDP
shards on every rank —, scheduler, :class:`.state.TrainState`) reported to Ray Train by rank 0;
Ray keeps ``train.num_to_keep`` of them and hands the latest back to a restarted worker group.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .state import TrainState

STATE_FILE = "state.pt"


class Context:
    """In-process run: rank 0 of 1, no checkpoints."""

    rank = 0
    world_size = 1

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        return None

    def progress(self, step: int, total: int, loss: float) -> None:
        """After each step (the in-process loop shows its own bar)."""
        return None

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        yield None


class RayContext(Context):
    """Inside a Ray Train worker: rank, world, device and checkpoints from ``ray.train``; rank 0
    sends its progress to the driver's board (:mod:`.progress`) when there is one."""

    def __init__(self, progress_board: str | None = None) -> None:
        import ray.train
        import ray.train.torch

        from .progress import ProgressSender

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._progress = ProgressSender(progress_board if self.rank == 0 else None)

    def progress(self, step: int, total: int, loss: float) -> None:
        self._progress(step, total, loss)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as folder:
            yield Path(folder)


class Checkpointer:
    """Saves and restores a worker's model, optimizer, scheduler and :class:`.state.TrainState`."""

    def __init__(self, ctx: Context, model: Any, optimizer: Any, scheduler: Any, fsdp: bool):
        self.ctx, self.model, self.fsdp = ctx, model, fsdp
        self.optimizer, self.scheduler = optimizer, scheduler

    def model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights on CPU (gathered from FSDP shards on every rank)."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))
            return {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}  # full: plain tensors
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _optim_state(self) -> dict[str, Any]:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, self.optimizer, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def save(self, state: TrainState, seconds: float) -> None:
        """Gather on every rank; rank 0 writes ``state.pt`` and reports it to Ray Train."""
        model_state, optim_state = self.model_state(), self._optim_state()
        with tempfile.TemporaryDirectory(prefix="unlearnops-ckpt-") as tmp:
            if self.ctx.rank == 0:
                torch.save({"model": model_state, "optimizer": optim_state,
                            "scheduler": self.scheduler.state_dict(), **state.to_checkpoint(seconds)},
                           Path(tmp) / STATE_FILE)
            self.ctx.report({"step": state.step, "tokens": state.tokens},
                            Path(tmp) if self.ctx.rank == 0 else None)

    def restore(self, state: TrainState) -> bool:
        """Load the latest checkpoint Ray hands back, if any (True when one was restored)."""
        with self.ctx.checkpoint() as folder:
            if folder is None:
                return False
            saved = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, saved["model"], options=opts)
            set_optimizer_state_dict(self.model, self.optimizer, saved["optimizer"], options=opts)
        else:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        state.restore(saved, self.ctx.world_size)
        return True
