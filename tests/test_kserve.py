"""InferenceService manifests and CRD validation (offline, against the vendored CRD schemas)."""

from __future__ import annotations

import copy

import pytest
from unlearnops.components.promote import kserve

from unlearnops import crds


def test_dns_name() -> None:
    assert kserve.dns_name("My_Model.v2") == "my-model-v2"
    assert kserve.dns_name("7b--chat") == "m-7b-chat"
    assert len(kserve.dns_name("x" * 100)) == 63


def test_inference_service_valid() -> None:
    isvc = kserve.inference_service("people_llm", "4", "s3://bucket/registry/people_llm/v4",
                                    canary_traffic_percent=20, namespace="ml",
                                    resources={"limits": {"cpu": "2", "memory": "4Gi"},
                                               "requests": {"cpu": 1}})
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert model["storageUri"] == "s3://bucket/registry/people_llm/v4"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert isvc["metadata"]["name"] == "people-llm" and isvc["metadata"]["annotations"][
        "unlearnops.io/model-version"] == "4"
    assert crds.errors(isvc) == []
    assert "storageUri: s3://" in kserve.to_yaml(isvc)


def test_inference_service_bad_input() -> None:
    with pytest.raises(ValueError, match="S3"):
        kserve.inference_service("m", "1", "/local/path")
    with pytest.raises(ValueError, match="0..100"):
        kserve.inference_service("m", "1", "s3://b/k", canary_traffic_percent=120)


def test_typos_and_bad_values_caught() -> None:
    good = kserve.inference_service("m", "1", "s3://b/k")
    typo = copy.deepcopy(good)
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e for e in crds.errors(typo))
    bad_cpu = copy.deepcopy(good)
    bad_cpu["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": "lots"}}
    assert any("resources.limits.cpu" in e for e in crds.errors(bad_cpu))
    no_format = copy.deepcopy(good)
    del no_format["spec"]["predictor"]["model"]["modelFormat"]["name"]
    with pytest.raises(crds.ManifestError, match="name"):
        crds.validate(no_format)
    with pytest.raises(crds.ManifestError, match="no CRD known"):
        crds.validate({"apiVersion": "x.io/v1", "kind": "Thing"})
    assert crds.errors({"kind": "InferenceService"}) == ["apiVersion and kind are required"]


def test_rayjob_defaults_filled() -> None:
    """A RayJob whose worker group leaves out defaulted-required fields passes once defaults are filled."""
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "u"},
           "spec": {"entrypoint": "python -m x",
                    "rayClusterSpec": {
                        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                            {"name": "h", "image": "i"}]}}},
                        "workerGroupSpecs": [{"groupName": "w", "replicas": 1, "rayStartParams": {},
                                              "template": {"spec": {"containers": [
                                                  {"name": "w", "image": "i"}]}}}]}}}
    assert crds.errors(job) == []
    job["spec"]["entrypont"] = job["spec"].pop("entrypoint")
    assert any("entrypont" in e for e in crds.errors(job))


def test_crd_dirs_include_vendored() -> None:
    assert crds.crd_path("serving.kserve.io_inferenceservices.yaml").parent.name == "crds"
    with pytest.raises(FileNotFoundError, match="UNLEARNOPS_CRDS_DIR"):
        crds.crd_path("nope.yaml")
