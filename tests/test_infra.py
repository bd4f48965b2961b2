"""The cluster recipe infra/: bootstrap.sh is shellcheck-clean and pins the platform versions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"
PINNED = {"CERT_MANAGER_VERSION": "v1.21.1", "KFP_VERSION": "2.17.0", "KUBERAY_VERSION": "1.7.0",
          "KSERVE_VERSION": "v0.20.0", "SEAWEEDFS_CHART_VERSION": "4.44.0", "MLFLOW_CHART_VERSION": "1.11.5"}


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (apt-get install shellcheck)")
def test_bootstrap_shellcheck_clean() -> None:
    done = subprocess.run(["shellcheck", "--severity=style", str(INFRA / "bootstrap.sh")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bootstrap_pins_versions() -> None:
    text = (INFRA / "bootstrap.sh").read_text()
    found = dict(re.findall(r"^([A-Z_]+_VERSION)=(\S+)$", text, re.M))
    assert found == PINNED
    assert "env/platform-agnostic" in text and "env/dev" not in text.replace("env/dev re-tags", "")
    assert "deploymentMode=Standard" in text and "huggingfaceserver.enabled=true" in text
    assert "curl" not in text, "tools come from package managers, not download scripts"


def test_kind_config() -> None:
    cfg = yaml.safe_load((INFRA / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert {n["role"] for n in cfg["nodes"]} == {"control-plane", "worker"}
    assert all(re.fullmatch(r"kindest/node:v1\.\d+\.\d+", n["image"]) for n in cfg["nodes"])
