"""The KServe target: an ``InferenceService`` (serving.kserve.io/v1beta1) for a registered version.

Built as a plain dict (the ``kserve`` SDK conflicts with kfp's pins), Hugging Face runtime
(``modelFormat.name: huggingface``) loading the version's exported ``save_pretrained`` copy from
S3, optionally as a canary, and validated against the vendored CRD schema (unlearnops.crds).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from unlearnops import crds

API_VERSION = "serving.kserve.io/v1beta1"
_STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://", "hf://")


def dns_name(name: str, max_len: int = 63) -> str:
    """An RFC 1123 label from a registered model name (lower case, ``-`` for others, trimmed)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)[:max_len].strip("-")
    if not label or not label[0].isalpha():
        label = ("m-" + label)[:max_len].strip("-")
    return label


def inference_service(name: str, version: str, storage_uri: str, *, namespace: str | None = None,
                      canary_traffic_percent: int | None = None,
                      resources: dict[str, Any] | None = None,
                      args: list[str] | None = None) -> dict[str, Any]:
    """The validated InferenceService manifest serving ``name`` version ``version`` from ``storage_uri``."""
    if not storage_uri.startswith(_STORAGE_SCHEMES):
        raise ValueError(
            f"storageUri {storage_uri!r}: KServe loads models from {', '.join(_STORAGE_SCHEMES)}; "
            "register with UNLEARNOPS_STORAGE_ROOT=s3://... so the exported copy lives on S3"
        )
    model: dict[str, Any] = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": storage_uri,
        "args": list(args or ["--task=text_generation", "--backend=huggingface"]),
    }
    if resources:
        model["resources"] = resources
    predictor: dict[str, Any] = {"model": model}
    if canary_traffic_percent is not None:
        if not 0 <= canary_traffic_percent <= 100:
            raise ValueError(f"canaryTrafficPercent must be 0..100, got {canary_traffic_percent}")
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    metadata: dict[str, Any] = {
        "name": dns_name(name),
        "labels": {"app.kubernetes.io/managed-by": "unlearnops"},
        "annotations": {"unlearnops.io/registered-model": name, "unlearnops.io/model-version": str(version)},
    }
    if namespace:
        metadata["namespace"] = namespace
    manifest = {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
                "spec": {"predictor": predictor}}
    return crds.validate(manifest)


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False)
