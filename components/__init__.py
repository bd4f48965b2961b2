"""Pipeline steps, one folder each (installed as ``unlearnops.components``)."""

from __future__ import annotations

import os

#: Container image of the KFP components (the control image, infra/images/control.Dockerfile);
#: the one setting, at compile time. The trainer image (infra/images/trainer.Dockerfile, run by the
#: RayJob workers) is the same repository with ``-trainer`` unless UNLEARNOPS_TRAINER_IMAGE is set.
BASE_IMAGE = os.environ.get("UNLEARNOPS_IMAGE", "ghcr.io/unlearnops/unlearnops:0.1.0")


def trainer_image(base: str = BASE_IMAGE) -> str:
    """The trainer image beside ``base`` (``repo:tag`` → ``repo-trainer:tag``), or the env override."""
    if os.environ.get("UNLEARNOPS_TRAINER_IMAGE"):
        return os.environ["UNLEARNOPS_TRAINER_IMAGE"]
    sep = "@" if "@" in base else ":" if ":" in base.rsplit("/", 1)[-1] else ""
    repo, rest = (base.rsplit(sep, 1)[0], sep + base.rsplit(sep, 1)[1]) if sep else (base, "")
    return f"{repo}-trainer{rest}"
