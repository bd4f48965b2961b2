"""Promotion through KServe against the stub Kubernetes API (tests/stubs/k8s_api.py).

The InferenceService is created or merge-patched, the alias moves only once it is Ready at the
new generation; a failed or slow rollout restores the old storageUri and leaves the aliases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from unlearnops.components.promote import kserve, rollout
from unlearnops.components.promote import promote as pm

from tests.stubs.k8s_api import FAILED_LOAD, K8sApiStub
from tests.test_promote import _aliases, _child, lineage  # noqa: F401 - the fixture
from unlearnops.modelio import EXPORT_TAG
from unlearnops.settings import get_settings

NS = "models"


def _manifest(version: str, canary: int | None = None) -> dict:
    return kserve.inference_service("m", version, f"s3://bucket/registry/m/v{version}",
                                    canary_traffic_percent=canary)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "POLL_S", 0.01)


@pytest.fixture
def stub() -> Iterator[K8sApiStub]:
    with K8sApiStub() as server:
        yield server


def _storage(stub: K8sApiStub, name: str = "m") -> str:
    return stub.state.isvcs[(NS, name)]["spec"]["predictor"]["model"]["storageUri"]


def test_create_then_patch_waits_for_new_generation(stub: K8sApiStub) -> None:
    runner = rollout.KServeRollout(stub.api_client())
    done = runner.apply_and_wait(_manifest("1"), NS)
    assert done.created and done.generation == 1
    (post,) = stub.calls("POST", "/inferenceservices")
    assert post.body["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/registry/m/v1"
    stub.isvc_script = ["progress", "progress", "ready"]
    done = runner.apply_and_wait(_manifest("2", canary=20), NS)
    assert not done.created and done.generation == 2
    assert stub.state.patch_types == ["application/merge-patch+json"]
    obj = stub.state.isvcs[(NS, "m")]
    assert _storage(stub) == "s3://bucket/registry/m/v2"
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert obj["metadata"]["annotations"]["unlearnops.io/model-version"] == "2"
    assert stub.state.isvc_gets == 3  # waited through two InProgress reads
    runner.apply_and_wait(_manifest("3"), NS)  # no canary now: the stale percentage is removed
    assert "canaryTrafficPercent" not in stub.state.isvcs[(NS, "m")]["spec"]["predictor"]


@pytest.mark.parametrize(("script", "message"),
                         [(["failed"], FAILED_LOAD), (["progress"], "not Ready after")],
                         ids=["failed", "slow"])
def test_failed_or_slow_rollout_restores_old_revision(stub: K8sApiStub, script: list[str],
                                                      message: str) -> None:
    runner = rollout.KServeRollout(stub.api_client(), timeout_s=0.3)
    runner.apply_and_wait(_manifest("1"), NS)
    stub.isvc_script = script
    with pytest.raises(rollout.RolloutError, match=message):
        runner.apply_and_wait(_manifest("2"), NS)
    patches = stub.calls("PATCH", "/inferenceservices")
    assert len(patches) == 2 and patches[-1].body["spec"]["predictor"]["model"]["storageUri"].endswith("/v1")
    assert _storage(stub) == "s3://bucket/registry/m/v1"


def test_invalid_patch_refused_by_api(stub: K8sApiStub) -> None:
    runner = rollout.KServeRollout(stub.api_client())
    runner.apply_and_wait(_manifest("1"), NS)
    bad = _manifest("2")
    bad["spec"]["predictor"]["canaryTrafficPercent"] = "half"  # the CRD wants an integer
    with pytest.raises(rollout.RolloutError, match="cannot patch InferenceService models/m .*422"):
        runner.apply_and_wait(bad, NS)


def _export_tags(*versions: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    for v in versions:
        client.set_model_version_tag("m", v, EXPORT_TAG, f"s3://bucket/registry/m/v{v}")


def test_promote_and_rollback_through_kserve(lineage: dict[str, str], stub: K8sApiStub,  # noqa: F811
                                             tmp_path: Path) -> None:
    _export_tags(lineage["v1"], lineage["v2"])
    out = str(tmp_path / "isvc.yaml")
    stub.isvc_script = ["failed"]
    with pytest.raises(pm.PromotionError, match="BlockedByFailedLoad.*aliases were not moved"):
        pm.promote("m", lineage["v2"], target="kserve", namespace=NS, api_client=stub.api_client(), out=out)
    assert _aliases("m") == {"champion": "1", "challenger": "3"}
    stub.isvc_script = ["progress", "ready"]
    pm.promote("m", lineage["v2"], target="kserve", namespace=NS, api_client=stub.api_client(), out=out,
               canary_traffic_percent=10)
    assert _aliases("m")["champion"] == "2" and _storage(stub).endswith("/m/v2")
    stub.isvc_script = ["progress"]
    with pytest.raises(pm.PromotionError, match="not Ready after"):
        pm.rollback("m", "v2 regressed", target="kserve", namespace=NS, api_client=stub.api_client(),
                    timeout_s=0.2)
    assert _aliases("m")["champion"] == "2" and _storage(stub).endswith("/m/v2")
    stub.isvc_script = ["ready"]
    ref = pm.rollback("m", "v2 regressed", target="kserve", namespace=NS, api_client=stub.api_client())
    assert ref.version == "1"
    assert _aliases("m")["champion"] == "1" and _storage(stub).endswith("/m/v1")


def test_cli_gate_failed_exits_3(lineage: dict[str, str], tiny_model_factory, tmp_path: Path) -> None:  # noqa: F811
    from unlearnops import cli

    cli._load_plugins()
    bad = _child(tiny_model_factory, tmp_path, 4, lineage["v1"], gate="failed")
    result = CliRunner().invoke(cli.app, ["promote", "m", bad])
    assert result.exit_code == 3, result.output
    assert "failed its gates" in result.output and _aliases("m")["champion"] == "1"
