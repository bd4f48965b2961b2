"""Unlearning objectives, one file each, registered by name (the open-unlearning pattern).

``get_method("npo", {"beta": 0.05})`` returns a validated :class:`~.base.Method`; unknown names
and parameters raise :class:`~.base.MethodError` listing the valid ones.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .altpo import AltPO
from .base import Batch, LossOutput, Method, MethodError, frozen_copy
from .ce_u import CEU
from .finetune import Finetune
from .grad_ascent import GradAscent
from .grad_diff import GradDiff
from .idk import Idk
from .idk_dpo import IdkDPO
from .kl import KL
from .npo import NPO
from .pdu import PDU
from .rmu import RMU
from .satimp import SatImp
from .simnpo import SimNPO
from .undial import UNDIAL
from .wga import WGA

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Finetune, GradAscent, GradDiff, KL, NPO, SimNPO, Idk, IdkDPO, RMU,
                              UNDIAL, WGA, SatImp, CEU, PDU, AltPO)
}


def get_method(name: str, params: Mapping[str, Any] | None = None) -> Method:
    """The method ``name`` with validated hyper-parameters."""
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name](params)


def _doc(cls: type[Method]) -> str:
    module_doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    return module_doc.split("\n\n")[0].replace("\n", " ") or (cls.__doc__ or "").strip()


def describe_methods() -> dict[str, dict[str, Any]]:
    """name → {params (defaults), param_help, needs_reference, needs_retain, forget_views, doc}."""
    return {
        name: {
            "params": {k: f.default for k, f in cls.Params.model_fields.items()},
            "param_help": {k: f.description or "" for k, f in cls.Params.model_fields.items()},
            "needs_reference": cls.needs_reference,
            "needs_retain": cls.needs_retain,
            "forget_views": list(cls.forget_views),
            "doc": _doc(cls),
        }
        for name, cls in METHODS.items()
    }


__all__ = ["METHODS", "Batch", "LossOutput", "Method", "MethodError", "describe_methods", "frozen_copy",
           "get_method"]
