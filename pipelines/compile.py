"""Compile the pipelines to KFP IR YAML (``pipelines/compiled/*.yaml`` is the checked-in default).

``python -m unlearnops.pipelines.compile [OUT_DIR]`` or ``unlearnops compile --out DIR``. The
image is set at compile time: every executor's image is rewritten to ``CompileOptions.image``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import compiler
from unlearnops.components import BASE_IMAGE

from .options import CompileOptions

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def _builders() -> dict[str, Callable[[CompileOptions], Any]]:
    from . import compliance_batch, compliance_retrain, unlearn_on_request

    return {"unlearn_on_request": unlearn_on_request.build, "compliance_batch": compliance_batch.build,
            "compliance_retrain": compliance_retrain.build}


#: The unlearning pipelines (their parameters are a RunRequest's fields).
PIPELINES: tuple[str, ...] = ("unlearn_on_request", "compliance_batch")
#: Every compiled pipeline: the unlearning ones and the scheduled retraining (issue 16).
ALL_PIPELINES: tuple[str, ...] = (*PIPELINES, "compliance_retrain")


def compile_text(name: str, options: CompileOptions | None = None) -> str:
    """The compiled YAML of pipeline ``name`` with ``options`` (image rewritten)."""
    opts = options or CompileOptions()
    builder = _builders().get(name)
    if builder is None:
        raise ValueError(f"unknown pipeline {name!r}; choose one of {', '.join(ALL_PIPELINES)}")
    with tempfile.TemporaryDirectory(prefix="unlearnops-compile-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        compiler.Compiler().compile(builder(opts), str(path))
        text = path.read_text()
    if opts.image != BASE_IMAGE:
        text = text.replace(f"image: {BASE_IMAGE}\n", f"image: {opts.image}\n")
    return text


def compile_all(out_dir: Path = COMPILED_DIR, options: CompileOptions | None = None) -> list[Path]:
    """Write ``OUT_DIR/<pipeline>.yaml`` for every pipeline (each file written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ALL_PIPELINES:
        text = compile_text(name, options)
        final = out_dir / f"{name}.yaml"
        tmp = final.with_name(f".{final.name}.tmp")
        tmp.write_text(text)
        tmp.replace(final)
        written.append(final)
    return written


if __name__ == "__main__":
    for file in compile_all(Path(sys.argv[1]) if len(sys.argv) > 1 else COMPILED_DIR):
        print(file)
