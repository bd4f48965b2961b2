"""The one reader of every document that crosses steps: each read is validated against its model.

The DataScope folder (manifest + one JSONL file per set) is read here too, by every step.

A step never reaches into another step's JSON by a guessed key: it reads the folder the other
step wrote through these functions and gets the typed document (:mod:`unlearnops.types`) — or a
:class:`DocumentError` saying which file is missing or malformed and which step writes it.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from . import storage
from .types import EvalReport, ScopeManifest, TrainingRecord

D = TypeVar("D", bound=BaseModel)

REPORT_FILE, MANIFEST_FILE, TRAINING_FILE = "report.json", "manifest.json", "training.json"


class DocumentError(ValueError):
    """A cross-step document is missing or does not match its model."""


def read_document(model: type[D], uri: str, writer: str) -> D:
    """``uri`` parsed and validated as ``model`` (``writer``: the command that writes it)."""
    if not storage.exists(uri):
        raise DocumentError(f"{uri}: no such file — write it with {writer}")
    try:
        return model.model_validate_json(storage.read_text(uri))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()[:5])
        raise DocumentError(f"{uri} is not a valid {model.__name__} ({problems})") from None


def read_report(folder_uri: str) -> EvalReport:
    """The evaluate step's ``report.json`` in ``folder_uri``."""
    return read_document(EvalReport, storage.join(folder_uri, REPORT_FILE), "`unlearnops evaluate`")


def read_training(model_uri: str) -> TrainingRecord:
    """The unlearn step's ``training.json`` in the model folder ``model_uri``."""
    return read_document(TrainingRecord, storage.join(model_uri, TRAINING_FILE), "`unlearnops unlearn`")


def find_training(model_uri: str) -> TrainingRecord | None:
    """The model folder's ``training.json``, or None when it has none (a model not unlearned here)."""
    return read_training(model_uri) if storage.exists(storage.join(model_uri, TRAINING_FILE)) else None


def read_manifest(scope_uri: str) -> ScopeManifest:
    """The scope step's ``manifest.json`` in the DataScope folder ``scope_uri``."""
    return read_document(ScopeManifest, storage.join(scope_uri, MANIFEST_FILE), "`unlearnops scope resolve`")


def read_scope_set(scope_uri: str, name: str) -> list[dict[str, Any]]:
    """The records of one set of the DataScope ``scope_uri``, from the file its manifest names."""
    manifest = read_manifest(scope_uri)
    if name not in manifest.sets:
        raise DocumentError(f"{scope_uri}: the DataScope has no {name!r} set (it has "
                            f"{', '.join(sorted(manifest.sets))}); resolve it again")
    text = storage.read_text(storage.join(scope_uri, manifest.sets[name].file))
    return [json.loads(line) for line in text.splitlines() if line.strip()]
