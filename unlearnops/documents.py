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
from .types import BuildRecord, CorpusManifest, EvalReport, ScopeManifest, TrainingRecord

D = TypeVar("D", bound=BaseModel)

REPORT_FILE, MANIFEST_FILE, TRAINING_FILE = "report.json", "manifest.json", "training.json"
BUILD_FILE = "build.json"


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


def find_document(model: type[D], uri: str, writer: str) -> D | None:
    """``uri`` read as ``model`` (see :func:`read_document`), or None when there is no such file."""
    return read_document(model, uri, writer) if storage.exists(uri) else None


def read_report(folder_uri: str) -> EvalReport:
    """The evaluate step's ``report.json`` in ``folder_uri``."""
    return read_document(EvalReport, storage.join(folder_uri, REPORT_FILE), "`unlearnops evaluate`")


def find_report(folder_uri: str) -> EvalReport | None:
    """The evaluate step's ``report.json`` in ``folder_uri``, or None when it has none (not evaluated)."""
    return find_document(EvalReport, storage.join(folder_uri, REPORT_FILE), "`unlearnops evaluate`")


def read_training(model_uri: str) -> TrainingRecord:
    """The unlearn step's ``training.json`` in the model folder ``model_uri``."""
    return read_document(TrainingRecord, storage.join(model_uri, TRAINING_FILE), "`unlearnops unlearn`")


def find_training(model_uri: str) -> TrainingRecord | None:
    """The model folder's ``training.json``, or None when it has none (a model not unlearned here)."""
    return find_document(TrainingRecord, storage.join(model_uri, TRAINING_FILE), "`unlearnops unlearn`")


def read_manifest(scope_uri: str) -> ScopeManifest:
    """The scope step's ``manifest.json`` in the DataScope folder ``scope_uri``."""
    return read_document(ScopeManifest, storage.join(scope_uri, MANIFEST_FILE), "`unlearnops scope resolve`")


def find_manifest(scope_uri: str) -> ScopeManifest | None:
    """The DataScope's ``manifest.json``, or None when the folder has none (not resolved, or disposed of)."""
    return find_document(ScopeManifest, storage.join(scope_uri, MANIFEST_FILE), "`unlearnops scope resolve`")


def read_corpus_manifest(corpus_uri: str) -> CorpusManifest:
    """The corpus folder's ``manifest.json`` (written by the corpus generator or importer)."""
    return read_document(CorpusManifest, storage.join(corpus_uri, MANIFEST_FILE),
                         "`unlearnops data generate` or `unlearnops data import`")


def find_build(folder_uri: str) -> BuildRecord | None:
    """The benchmark build's ``build.json`` in ``folder_uri``, or None when there is none."""
    return find_document(BuildRecord, storage.join(folder_uri, BUILD_FILE),
                         "`unlearnops unlearn build-models`")


def read_jsonl(uri: str, writer: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one a line (blank lines skipped); a bad line is a DocumentError."""
    if not storage.exists(uri):
        raise DocumentError(f"{uri}: no such file — write it with {writer}")
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(storage.iter_lines(uri), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DocumentError(f"{uri}:{lineno}: not JSON ({err.args[0]})") from None
        if not isinstance(record, dict):
            raise DocumentError(f"{uri}:{lineno}: not a JSON object")
        records.append(record)
    return records


def read_scope_set(scope_uri: str, name: str, manifest: ScopeManifest | None = None) -> list[dict[str, Any]]:
    """The records of one set of the DataScope ``scope_uri``, from the file its manifest names.

    ``manifest``: the folder's manifest when the caller has read it already.
    """
    manifest = manifest or read_manifest(scope_uri)
    if name not in manifest.sets:
        raise DocumentError(f"{scope_uri}: the DataScope has no {name!r} set (it has "
                            f"{', '.join(sorted(manifest.sets))}); resolve it again")
    return read_jsonl(storage.join(scope_uri, manifest.sets[name].file), "`unlearnops scope resolve`")


def read_scope_sets(scope_uri: str, names: tuple[str, ...] | list[str],
                    manifest: ScopeManifest | None = None) -> dict[str, list[dict[str, Any]]]:
    """Each named set of the DataScope; a set its manifest does not list is empty (an older scope)."""
    manifest = manifest or read_manifest(scope_uri)
    return {name: read_scope_set(scope_uri, name, manifest) if name in manifest.sets else []
            for name in names}
