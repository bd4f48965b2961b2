"""Pipeline steps, one folder each (installed as ``unlearnops.components``)."""

from __future__ import annotations

import os

#: Container image of the KFP components (the project's image); configurable at compile time.
BASE_IMAGE = os.environ.get("UNLEARNOPS_IMAGE", "ghcr.io/unlearnops/unlearnops:0.1.0")
