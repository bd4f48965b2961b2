"""``unlearn_on_request`` built once for kfp.local: importing this module builds it.

Building walks kfp's call stack for every task setting (``inspect.stack()`` in kfp's
``PipelineTask``): about 1 s. Local runs share the one built here, and the warm runner
(:mod:`.warm_runner`) imports this module before it forks, so a delegated run finds it built.
"""

from __future__ import annotations

from typing import Any

from .options import CompileOptions
from .unlearn_on_request import build

PIPELINE: Any = build(CompileOptions.local())
