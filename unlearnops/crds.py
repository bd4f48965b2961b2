"""Validate custom-resource manifests (InferenceService, RayJob, ...) against their CRD schemas, offline.

The CRD files are vendored in ``infra/crds/`` (and found in ``../shared/crds/`` beside the
repository, or in ``$UNLEARNOPS_CRDS_DIR``). Validation follows what the API server does where
it can offline: fill schema ``default`` values, then check with ``jsonschema.Draft7Validator``
against the served version's ``openAPIV3Schema``; and, to catch typos the server would silently
prune, every object schema with ``properties`` and no ``additionalProperties`` /
``x-kubernetes-preserve-unknown-fields`` is closed with ``additionalProperties: false``.
CEL rules and ``metadata`` contents are only checked in a cluster.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

CRDS_ENV = "UNLEARNOPS_CRDS_DIR"
_REPO = Path(__file__).resolve().parents[1]

#: (group/version, kind) → CRD file name.
CRD_FILES: dict[tuple[str, str], str] = {
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("ray.io", "RayJob"): "ray.io_rayjobs.yaml",
    ("ray.io", "RayCluster"): "ray.io_rayclusters.yaml",
    ("ray.io", "RayService"): "ray.io_rayservices.yaml",
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("kubeflow.org", "ScheduledWorkflow"): "kubeflow.org_scheduledworkflows.yaml",
}


class ManifestError(ValueError):
    """A manifest does not match its CRD schema; ``errors`` lists each problem with its path."""

    def __init__(self, kind: str, errors: list[str]):
        self.errors = errors
        super().__init__(f"{kind} manifest is invalid:\n  - " + "\n  - ".join(errors))


def crd_dirs() -> list[Path]:
    """Folders searched for CRD files, in order."""
    dirs = [Path(os.environ[CRDS_ENV])] if os.environ.get(CRDS_ENV) else []
    return [*dirs, _REPO / "infra" / "crds", _REPO.parent / "shared" / "crds"]


def crd_path(file_name: str) -> Path:
    for folder in crd_dirs():
        if (folder / file_name).is_file():
            return folder / file_name
    raise FileNotFoundError(
        f"CRD file {file_name} not found in {', '.join(str(d) for d in crd_dirs())}; "
        f"set {CRDS_ENV} to a folder holding it"
    )


@lru_cache(maxsize=16)
def load_crd(file_name: str) -> dict[str, Any]:
    """Parse a CRD file once (C YAML loader: ~4x faster on these 1-2 MB files)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with crd_path(file_name).open("rb") as handle:
        return yaml.load(handle, Loader=loader)  # noqa: S506 - safe loader


@lru_cache(maxsize=16)
def _closed_schema(file_name: str, version: str) -> dict[str, Any]:
    crd = load_crd(file_name)
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", False):
            return close_schema(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
    raise ManifestError(crd["spec"]["names"]["kind"], [f"apiVersion version {version!r} is not served"])


def schema_for(api_version: str, kind: str) -> dict[str, Any]:
    """The closed openAPIV3Schema for ``apiVersion``/``kind`` (cached)."""
    group, _, version = api_version.rpartition("/")
    file_name = CRD_FILES.get((group, kind))
    if file_name is None:
        known = ", ".join(f"{g}/{k}" for g, k in CRD_FILES)
        raise ManifestError(kind, [f"no CRD known for {api_version} {kind} (known: {known})"])
    return _closed_schema(file_name, version)


def close_schema(schema: Any) -> Any:
    """Add ``additionalProperties: false`` to every open object schema with ``properties``."""
    if isinstance(schema, dict):
        for value in schema.values():
            close_schema(value)
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for item in schema:
            close_schema(item)
    return schema


def fill_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Fill missing properties that have a schema ``default`` (recursively), as the API server does."""
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                fill_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                if key not in schema.get("properties", {}):
                    fill_defaults(value, extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            fill_defaults(item, schema["items"])
    return obj


def errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation of ``manifest`` as ``path: message`` (empty when valid)."""
    from jsonschema import Draft7Validator

    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    if not api_version or not kind:
        return ["apiVersion and kind are required"]
    schema = schema_for(str(api_version), str(kind))
    filled = fill_defaults(copy.deepcopy(manifest), schema)
    found = sorted(Draft7Validator(schema).iter_errors(filled), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in found]


def validate(manifest: dict[str, Any]) -> dict[str, Any]:
    """Raise :class:`ManifestError` listing every problem; return the manifest when valid."""
    problems = errors(manifest)
    if problems:
        raise ManifestError(str(manifest.get("kind", "?")), problems)
    return manifest
