"""The training state one worker carries from step to step and through a checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class TrainState:
    """Counters, loss curve, probe points and the best probe's weights of one run."""

    step: int = 0
    tokens: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)
    probes: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False
    seconds_before: float = 0.0  # wall seconds of the attempts before a resume (per worker)
    compute_seconds: float = 0.0  # reference caching + optimizer steps (no probes, no I/O)

    def to_checkpoint(self, seconds: float) -> dict[str, Any]:
        """What a checkpoint keeps (``seconds``: worker-seconds so far, all workers together)."""
        out = asdict(self)
        del out["seconds_before"], out["compute_seconds"], out["stopped_early"]
        return {**out, "seconds": seconds}

    def restore(self, saved: dict[str, Any], world_size: int) -> None:
        self.step, self.tokens = int(saved["step"]), int(saved["tokens"])
        self.curve, self.probes = list(saved["curve"]), list(saved["probes"])
        self.best, self.best_state = saved["best"], saved["best_state"]
        self.seconds_before = float(saved["seconds"]) / max(1, world_size)
