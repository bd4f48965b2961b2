"""Loading and saving Hugging Face-format model folders, safely, from any URI.

A model URI is a local path, ``file://``, ``s3://`` prefix, or a registry URI
(``models:/NAME@alias`` / ``models:/NAME/VERSION``) resolved through MLflow to the version's
exported ``save_pretrained`` copy (tag :data:`EXPORT_TAG`). Weights load from safetensors
only and never with remote code.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import storage
from .types import ModelRef

EXPORT_TAG = "unlearnops.export_uri"
_REGISTRY = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelError(ValueError):
    """The model folder is unusable (no safetensors, needs remote code, unreadable)."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the model's files are, and which registered version they are (if any)."""

    uri: str
    ref: ModelRef | None = None


def parse_registry_uri(uri: str) -> ModelRef | None:
    match = _REGISTRY.match(uri)
    if not match:
        return None
    return ModelRef(name=match["name"], version=match["version"], alias=match["alias"])


def resolve(uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Map a registry URI to its exported copy; other URIs pass through."""
    ref = parse_registry_uri(uri)
    if ref is None:
        if uri.startswith("models:/"):
            raise ModelError(f"{uri}: expected models:/NAME@alias or models:/NAME/VERSION")
        return ResolvedModel(uri)
    from mlflow import MlflowClient

    from .settings import get_settings

    client = MlflowClient(tracking_uri=tracking_uri or get_settings().tracking_uri)
    try:
        mv = (client.get_model_version_by_alias(ref.name, ref.alias) if ref.alias
              else client.get_model_version(ref.name, str(ref.version)))
    except Exception as err:  # MlflowException carries the server's reason
        raise ModelError(f"{uri}: not found in the registry ({err})") from err
    export = (mv.tags or {}).get(EXPORT_TAG)
    if not export:
        raise ModelError(f"{uri}: version {mv.version} has no exported copy (tag {EXPORT_TAG})")
    return ResolvedModel(export, ModelRef(name=ref.name, version=str(mv.version), alias=ref.alias))


def check_model_dir(path: Path, source: str) -> dict[str, Any]:
    """Refuse folders without safetensors weights or that ask for remote code; return config."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{source}: no config.json — not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{source}: config.json is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{source}: config.json is not a JSON object")
    if config.get("auto_map"):
        raise ModelError(f"{source}: the model needs remote code (auto_map in config.json); refused")
    if not any(path.glob("*.safetensors")):
        raise ModelError(f"{source}: no *.safetensors weights (pickled .bin weights are refused)")
    return config


class LocalModel:
    """A context manager giving a checked local folder for any model URI."""

    def __init__(self, uri: str, tracking_uri: str | None = None):
        self.resolved = resolve(uri, tracking_uri)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        uri = self.resolved.uri
        if storage.is_s3(uri):
            self._tmp = tempfile.TemporaryDirectory(prefix="unlearnops-model-")
            path = storage.download_dir(uri, Path(self._tmp.name) / "model")
        else:
            path = storage.local_path(uri)
            if not path.is_dir():
                raise ModelError(f"{uri}: no such model folder")
        check_model_dir(path, uri)
        return path

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, device: str = "cpu", dtype: Any = None) -> Any:
    """Load a causal LM from a checked local folder (safetensors only, no remote code)."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_dir(path, str(path))
    model = AutoModelForCausalLM.from_pretrained(
        str(path), trust_remote_code=False, use_safetensors=True, local_files_only=True,
        dtype=dtype or torch.float32,
    )
    return model.to(device)  # type: ignore[arg-type]  # transformers types .to() for a model only


def save_model(model: Any, tokenizer: Any, uri: str) -> None:
    """save_pretrained (safetensors) to a temp folder, then upload atomically to ``uri``."""
    with tempfile.TemporaryDirectory(prefix="unlearnops-save-") as tmp:
        out = Path(tmp) / "model"
        model.save_pretrained(str(out), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(out))
        storage.upload_dir(out, uri)
