"""The Helm chart charts/unlearnops: lint, render (default and full values), validate every object.

Core kinds are validated with kubernetes-validate (strict: unknown fields refused); RayCluster and
InferenceService against the vendored CRD schemas (unlearnops.crds: defaults filled, unknown
fields refused). RBAC is namespaced and least-privilege; bad values are rejected by the schema.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.k8s_tools import CHART, run_helm
from unlearnops import crds

FULL = CHART / "ci" / "full-values.yaml"
K8S_VERSION = "1.33.0"
Render = Callable[..., list[dict[str, Any]]]


def _by_kind(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objs:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def _pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in objs:
        if obj["kind"] in ("Deployment", "Job"):
            specs.append((obj["kind"], obj["spec"]["template"]["spec"]))
    return specs


def test_lint_strict(helm_bin: Path) -> None:
    for extra in ([], ["-f", str(FULL)]):
        done = run_helm(helm_bin, "lint", "--strict", str(CHART), *extra)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [[], [FULL]], ids=["default", "full"])
def test_every_object_valid(helm_render: Render, values: list[Path]) -> None:
    import kubernetes_validate

    objs = helm_render(*values)
    kinds = _by_kind(objs)
    core = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service", "NetworkPolicy",
            "Job"}
    assert core <= set(kinds), sorted(kinds)
    if values:
        assert {"Ingress", "RayCluster", "InferenceService"} <= set(kinds)
    for obj in objs:
        if (obj["apiVersion"].split("/")[0], obj["kind"]) in crds.CRD_FILES:
            assert crds.errors(obj) == [], (obj["kind"], crds.errors(obj))
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_rbac_least_privilege(helm_render: Render) -> None:
    objs = helm_render(FULL)
    kinds = _by_kind(objs)
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    (role,) = kinds["Role"]
    granted = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    for verbs in granted.values():
        assert "*" not in verbs
    assert all("*" not in rule["apiGroups"] + rule["resources"] for rule in role["rules"])
    assert granted[("ray.io", "rayjobs")] == {"create", "get", "watch", "delete"}
    assert granted[("serving.kserve.io", "inferenceservices")] == {"get", "create", "patch"}
    (binding,) = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    runner = {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    assert runner in binding["subjects"]


@pytest.mark.parametrize("values", [[], [FULL]], ids=["default", "full"])
def test_pod_security_and_probes(helm_render: Render, values: list[Path]) -> None:
    objs = helm_render(*values)
    for kind, spec in _pod_specs(objs):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault", kind
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, kind
            assert sc["capabilities"]["drop"] == ["ALL"], kind
            assert c["resources"]["requests"] and c["resources"]["limits"], kind
            assert "env" not in c, "credentials come from Secret references (envFrom) only"
            if kind == "Deployment":
                assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["livenessProbe"]


def test_secrets_are_references_only(helm_render: Render) -> None:
    objs = helm_render(FULL)
    assert "Secret" not in _by_kind(objs)
    deploy = _by_kind(objs)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    refs = {e["secretRef"]["name"] for e in deploy["envFrom"] if "secretRef" in e}
    assert refs == {"mlflow-basic-auth", "unlearnops-ledger", "unlearnops-signing-key"}


def test_post_install_job_uploads_then_schedules(helm_render: Render) -> None:
    job = _by_kind(helm_render(FULL))["Job"][0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[0] == "schedule"
    upload = pod["initContainers"][0]  # every pipeline uploaded before the schedule is created
    assert upload["args"][0] == "upload" and upload["image"] == pod["containers"][0]["image"]
    assert {a for a in upload["args"] if a.startswith(("--host=", "--image="))} <= set(args)
    assert upload["securityContext"] == pod["containers"][0]["securityContext"]
    assert "--name=compliance-batch-nightly" in args and "--policy=/etc/unlearnops/policy.yaml" in args
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example.com/ml/unlearnops@sha256:") and f"--image={image}" in args
    cron = next(a for a in args if a.startswith("--cron=")).removeprefix("--cron=")
    maps = _by_kind(helm_render(FULL))["ConfigMap"]
    settings = next(c for c in maps if c["metadata"]["name"].endswith("-settings"))
    assert settings["data"]["UNLEARNOPS_BATCH_CRON"] == cron  # the ledger's expected completion dates
    unscheduled = _by_kind(helm_render(FULL, **{"pipelines.enabled": "false"}))["ConfigMap"]
    assert all("UNLEARNOPS_BATCH_CRON" not in c["data"] for c in unscheduled)


def test_network_policy_egress(helm_render: Render) -> None:
    default = _by_kind(helm_render())["NetworkPolicy"][0]["spec"]
    assert all("ipBlock" not in peer for rule in default["egress"] for peer in rule.get("to", []))
    full = _by_kind(helm_render(FULL))["NetworkPolicy"][0]["spec"]
    assert {"ipBlock": {"cidr": "0.0.0.0/0"}} in full["egress"][-1]["to"]
    assert full["egress"][-1]["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_raycluster_gpu_workers_tolerate_the_pool(helm_render: Render) -> None:
    ray = _by_kind(helm_render(FULL))["RayCluster"][0]
    worker = ray["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_crd_typo_is_caught(helm_render: Render) -> None:
    isvc = _by_kind(helm_render(FULL))["InferenceService"][0]
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    assert any("storageURI" in e for e in crds.errors(isvc))


@pytest.mark.parametrize("bad", [
    "api.replicas=-1", "rbac.pipelineRunnerServiceAccount=Bad_Name", "settings.gatePolicy=yolo",
    "settings.storageRoot=/local/path", "image.digest=sha256:short", "unknownKey=1", "api.typo=1",
    "pipelines.cron=every-night", "networkPolicy.egressCidrs={everywhere}",
])
def test_bad_values_rejected(helm_bin: Path, bad: str) -> None:
    done = run_helm(helm_bin, "template", "rel", str(CHART), "--set", bad)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


def test_schema_closed_everywhere() -> None:
    import json

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(json.loads((CHART / "values.schema.json").read_text()), "#")


def test_readme_generated_and_current() -> None:
    done = subprocess.run([sys.executable, str(CHART.parent / "gen_readme.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_make_chart_renders_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "chart"
    cmd = [sys.executable, str(CHART.parent / "render.py"), "--out", str(out), "--values", str(FULL)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    kinds = {p.name.split("-")[1] for p in out.glob("*.yaml")}
    assert {"deployment", "role", "job", "raycluster", "inferenceservice"} <= kinds
