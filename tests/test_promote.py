"""Promotion: compare-and-set on the parent, alias moves that undo on failure, rollback, registry outage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from unlearnops.components.promote import promote as pm
from unlearnops.components.register.register import register_model

from unlearnops import crds
from unlearnops.model_erasure import ERASED_BY_TAG, ERASED_OVERRIDE_TAG, request_tokens
from unlearnops.settings import get_settings


def _aliases(name: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return pm.read_aliases(MlflowClient(tracking_uri=get_settings().tracking_uri), name)


def _tags(name: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient(tracking_uri=get_settings().tracking_uri).get_model_version(name, version).tags)


def _child(factory, tmp_path: Path, seed: int, parent: str, name: str = "m", gate: str = "passed") -> str:
    model = factory(tmp_path / f"v{seed}", seed)
    (model / "training.json").write_text(json.dumps({"method": "npo", "params": {}, "seed": seed,
                                                     "parent": {"name": name, "version": parent}}))
    return register_model(str(model), name, gate=gate, request_ids=[f"req-{seed}"]).version


@pytest.fixture
def lineage(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> dict[str, str]:
    """v1 base (champion), v2 and v3 both unlearned from v1."""
    v1 = register_model(str(tiny_model_factory(tmp_path / "base", 0)), "m").version
    pm.promote("m", v1)
    return {"v1": v1, "v2": _child(tiny_model_factory, tmp_path, 2, v1),
            "v3": _child(tiny_model_factory, tmp_path, 3, v1)}


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pm, "RETRY", pm.RetryPolicy(attempts=2, wait_initial=0.1, wait_max=0.2,
                                                    undo_attempts=2, undo_wait_max=0.2))


def test_check_parent_rule() -> None:
    pm.check_parent("m", "1", None, None)
    pm.check_parent("m", "2", "1", "1")
    with pytest.raises(pm.PromotionConflict, match="someone promoted in between"):
        pm.check_parent("m", "3", "1", "2")
    with pytest.raises(pm.PromotionConflict, match="no champion"):
        pm.check_parent("m", "3", "1", None)


def test_promote_conflict_rollback(lineage: dict[str, str]) -> None:
    assert _aliases("m") == {"champion": "1", "challenger": "3"}
    assert pm.promote("m", lineage["v2"]).uri == "models:/m@champion"
    assert _aliases("m") == {"champion": "2", "previous": "1", "challenger": "3"}
    with pytest.raises(pm.PromotionConflict, match="(?i)re-run the requests on the new champion"):
        pm.promote("m", lineage["v3"])  # v3 was unlearned from v1, but v2 is champion now
    assert _aliases("m") == {"champion": "2", "previous": "1", "challenger": "3"}
    pm.promote("m", lineage["v2"])  # already champion: no change
    # v2 erased req-2: v1, trained on that data, is tagged and never served again without an override
    with pytest.raises(pm.PromotionRefused, match="version 1 of m was trained on data erased since"):
        pm.rollback("m")
    assert _aliases("m") == {"champion": "2", "previous": "1", "challenger": "3"}  # nothing changed
    assert pm.rollback("m", override_reason="v2 answers wrongly; legal approved for 24 h").version == "1"
    assert _aliases("m") == {"champion": "1", "challenger": "3"}
    tags = _tags("m", "1")
    assert tags[ERASED_BY_TAG] == ",".join(request_tokens(["req-2"]))
    override = json.loads(tags[ERASED_OVERRIDE_TAG])
    assert override["action"] == "rollback" and override["reason"].startswith("v2 answers wrongly")
    with pytest.raises(pm.PromotionError, match="no 'previous'"):
        pm.rollback("m")
    with pytest.raises(pm.PromotionError, match="has no version 9"):
        pm.promote("m", "9")
    with pytest.raises(pm.PromotionError, match="no registered model"):
        pm.promote("nope", "1")
    with pytest.raises(pm.PromotionError, match="target"):
        pm.promote("m", "3", target="mars")
    rows = pm.describe("m")
    assert [r["aliases"] for r in rows] == [["champion"], [], ["challenger"]]
    assert rows[0]["erased_by"] and not rows[2]["erased_by"]
    assert rows[1]["requests"] == request_tokens(["req-2"]) and rows[1]["parent"] == "1"  # keyed hashes


def test_failed_gate_refused(lineage: dict[str, str], tiny_model_factory, tmp_path: Path) -> None:
    bad = _child(tiny_model_factory, tmp_path, 4, lineage["v1"], gate="failed")
    with pytest.raises(pm.PromotionError, match="failed its gates"):
        pm.promote("m", bad)


def test_failure_midway_undoes_moves(lineage: dict[str, str], fast_retry: None,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    before = _aliases("m")

    def hook(step: str) -> None:
        if step == "move:champion":
            raise ConnectionError("registry went away")

    monkeypatch.setattr(pm, "_hook", hook)
    with pytest.raises(pm.PromotionError, match="aliases left as they were"):
        pm.promote("m", lineage["v2"])
    assert _aliases("m") == before  # 'previous' was set, then undone


def test_concurrent_promotion_detected(lineage: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    def hook(step: str) -> None:  # another promoter moves the champion between our read and our write
        if step == "move:champion":
            MlflowClient(tracking_uri=get_settings().tracking_uri).set_registered_model_alias(
                "m", "champion", lineage["v3"])

    monkeypatch.setattr(pm, "_hook", hook)
    with pytest.raises(pm.PromotionConflict, match="changed to version 3"):
        pm.promote("m", lineage["v2"])
    assert _aliases("m") == {"champion": "3", "challenger": "3"}


def test_kserve_needs_s3(lineage: dict[str, str]) -> None:
    with pytest.raises(pm.PromotionError, match="S3"):
        pm.promote("m", lineage["v2"], target="kserve")
    assert _aliases("m")["champion"] == "1"  # validated before any alias moved


def test_promote_op_component(lineage: dict[str, str]) -> None:
    from unlearnops.components.promote.component import promote_op

    assert promote_op.python_func(name="m", version=lineage["v2"]) == "models:/m@champion"


def test_cli_flow(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    from unlearnops import cli

    cli._load_plugins()
    runner = CliRunner()
    base = tiny_model_factory(tmp_path / "base", 0)
    out = runner.invoke(cli.app, ["register", "--model", str(base), "--name", "c"])
    assert out.exit_code == 0, out.output
    assert "version 1" in out.output
    cand = tiny_model_factory(tmp_path / "cand", 1)
    out = runner.invoke(cli.app, ["register", "--model", str(cand), "--name", "c", "--parent", "1",
                                  "--request", "r-9"])
    assert out.exit_code == 0, out.output
    assert runner.invoke(cli.app, ["promote", "c", "2"]).exit_code == 1  # no champion yet, v2 has parent 1
    assert runner.invoke(cli.app, ["promote", "c", "1"]).exit_code == 0
    assert runner.invoke(cli.app, ["promote", "c", "2"]).exit_code == 0
    models = runner.invoke(cli.app, ["models", "c"])
    token = request_tokens(["r-9"])[0]  # the registry lists request tokens, never the ids
    assert models.exit_code == 0 and token in models.output and "r-9" not in models.output
    assert "champion" in models.output
    refused = runner.invoke(cli.app, ["rollback", "c"])  # v1 holds r-9's data, erased by v2
    assert refused.exit_code == 2 and "trained on data erased since" in " ".join(refused.stderr.split())
    assert _aliases("c")["champion"] == "2"
    assert runner.invoke(cli.app, ["rollback", "c", "--override-reason", "incident 7"]).exit_code == 0
    assert _aliases("c")["champion"] == "1"
    bad = runner.invoke(cli.app, ["register", "--model", str(tmp_path / "none"), "--name", "c"])
    assert bad.exit_code == 2


def test_models_dispose_deletes_erased_versions(lineage: dict[str, str], tiny_model_factory,
                                                tmp_path: Path) -> None:
    from unlearnops import cli, storage
    from unlearnops.model_erasure import DISPOSED_TAG

    pm.promote("m", lineage["v2"])  # v1 (and nothing newer) now holds erased data
    v4 = _child(tiny_model_factory, tmp_path, 4, lineage["v2"])
    pm.promote("m", v4)  # previous = v2: v1 and v3 have no alias left
    export = _tags("m", "1")[pm.EXPORT_TAG]
    assert storage.exists(export)
    cli._load_plugins()
    out = CliRunner().invoke(cli.app, ["models", "dispose", "m"])
    # v1 and v3 (unaliased, older than the champion v4): exported copy + MLflow artifacts each
    assert out.exit_code == 0 and "deleted 4 artifact location(s)" in out.stdout, out.output
    assert not storage.exists(export) and DISPOSED_TAG in _tags("m", "1") and DISPOSED_TAG in _tags("m", "3")
    assert DISPOSED_TAG not in _tags("m", lineage["v2"])  # behind an alias: never disposed
    again = CliRunner().invoke(cli.app, ["models", "dispose", "m"])
    assert "deleted 0 artifact location(s)" in again.stdout


def test_server_refuses_an_erased_version(lineage: dict[str, str]) -> None:
    from mlflow import MlflowClient

    from unlearnops.serving import AliasFollower, ModelHolder

    pm.promote("m", lineage["v2"])
    # someone points the alias at v1 behind promote's back: the server does not load it
    MlflowClient(tracking_uri=get_settings().tracking_uri).set_registered_model_alias("m", "champion", "1")
    follower = AliasFollower(ModelHolder(), "m", "champion", get_settings().tracking_uri, poll_seconds=60)
    assert follower.check() is False
    assert follower.last_error is not None and "trained on data erased since" in follower.last_error
    assert follower.holder.current is None


@pytest.mark.services
@pytest.mark.slow
def test_kserve_target_on_server(mlflow_env: str, tiny_model_factory, tmp_path: Path) -> None:
    v1 = register_model(str(tiny_model_factory(tmp_path / "base", 0)), "Kserve_Demo").version
    out = tmp_path / "isvc.yaml"
    pm.promote("Kserve_Demo", v1, target="kserve", out=str(out), canary_traffic_percent=10, apply=False)
    manifest = yaml.safe_load(out.read_text())
    assert manifest["metadata"]["name"] == "kserve-demo"
    model = manifest["spec"]["predictor"]["model"]
    assert model["storageUri"].startswith("s3://") and model["storageUri"].endswith("/Kserve_Demo/v1")
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert crds.errors(manifest) == []


@pytest.mark.services
@pytest.mark.slow
def test_registry_outage_leaves_aliases(mlflow_server_factory, s3_env: str, unlearnops_home: Path,
                                        tiny_model_factory, tmp_path: Path, fast_retry: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server = mlflow_server_factory()
    monkeypatch.setenv("UNLEARNOPS_MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("UNLEARNOPS_STORAGE_ROOT", f"{s3_env}/store")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    get_settings.cache_clear()
    v1 = register_model(str(tiny_model_factory(tmp_path / "base", 0)), "o").version
    pm.promote("o", v1)
    v2 = _child(tiny_model_factory, tmp_path, 2, v1, name="o")
    before = _aliases("o")
    stops = []

    def outage(step: str) -> None:
        if step == "move:previous" and not stops:
            stops.append(step)
            server.stop()  # the registry dies between reading the state and the first move

    monkeypatch.setattr(pm, "_hook", outage)
    with pytest.raises(pm.PromotionError, match="registry .* failed"):
        pm.promote("o", v2)
    server.start()
    assert _aliases("o") == before
    monkeypatch.setattr(pm, "_hook", None)
    pm.promote("o", v2)  # once the registry is back, the same promotion goes through
    assert _aliases("o") == {"champion": v2, "previous": v1}
