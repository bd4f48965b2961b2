"""``unlearnops upload`` / ``submit`` / ``schedule`` through kfp.Client against a KFP v2beta1 API stub."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner
from unlearnops.pipelines import remote
from unlearnops.pipelines.run_request import DEFAULT_METHOD_PARAMS

from tests.stubs.kfp_api import KfpApiStub
from unlearnops.cli import _load_plugins, app

PARAMS: dict[str, Any] = {"request_ids": "req-1,req-2", "corpus_uri": "s3://data/corpus",
                          "model_name": "people-qa", "method": "npo", "method_params": '{"beta": 0.1}'}


@pytest.fixture
def stub(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with KfpApiStub() as server:
        yield server


def test_submit_uploads_a_version_and_creates_a_run(stub: KfpApiStub) -> None:
    out = remote.submit(stub.url, PARAMS, experiment="compliance")
    uploads = stub.calls("POST", "/pipelines/upload")
    assert len(uploads) == 1 and uploads[0].query["name"] == ["unlearn-on-request"]
    versions = stub.calls("POST", "/pipelines/upload_version")
    assert versions[0].query["pipelineid"] == [out.pipeline_id]
    assert versions[0].query["name"] == [out.version_name]
    spec = stub.state.specs[out.version_id]
    assert spec["pipelineInfo"]["name"] == "unlearn-on-request"
    run = stub.calls("POST", "/runs")[0].body
    assert run["pipeline_version_reference"] == {"pipeline_id": out.pipeline_id,
                                                 "pipeline_version_id": out.version_id}
    assert run["runtime_config"]["parameters"] == PARAMS
    assert run["experiment_id"] == out.experiment_id
    assert stub.state.experiments[out.experiment_id]["display_name"] == "compliance"
    assert out.run_id in stub.state.runs


def test_submit_twice_reuses_pipeline_version_and_experiment(stub: KfpApiStub) -> None:
    first = remote.submit(stub.url, PARAMS)
    second = remote.submit(stub.url, PARAMS)
    assert (first.pipeline_id, first.version_id, first.experiment_id) == (
        second.pipeline_id, second.version_id, second.experiment_id)
    assert len(stub.calls("POST", "/pipelines/upload_version")) == 1
    assert len(stub.calls("POST", "/experiments")) == 1
    assert first.run_id != second.run_id


def test_schedule_creates_recurring_compliance_batch(stub: KfpApiStub) -> None:
    params = {k: v for k, v in PARAMS.items() if k != "request_ids"}
    out = remote.schedule(stub.url, params, cron="0 0 2 * * *")
    body = stub.calls("POST", "/recurringruns")[0].body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * *"}}
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == params
    assert stub.state.specs[out.version_id]["pipelineInfo"]["name"] == "compliance-batch"
    assert out.recurring_run_id in stub.state.recurring_runs


def test_schedule_refuses_five_field_cron(stub: KfpApiStub) -> None:
    with pytest.raises(remote.RemoteError, match="6 fields"):
        remote.schedule(stub.url, {"corpus_uri": "s3://x"}, cron="0 2 * * *")
    assert not stub.calls("POST", "/recurringruns")


def test_stub_rejects_parameters_the_pipeline_does_not_have(stub: KfpApiStub) -> None:
    from kfp_server_api.exceptions import ApiException

    with pytest.raises(ApiException) as err:
        remote.submit(stub.url, {**PARAMS, "learning_rate": 1})
    assert err.value.status == 400 and "learning_rate" in err.value.body


def test_cli_submit_and_schedule(stub: KfpApiStub, tmp_path) -> None:
    _load_plugins()
    policy = tmp_path / "policy.yaml"
    gates = {"gates": [{"metric": "forget.prob", "max": 0.5}]}
    policy.write_text(yaml.safe_dump(gates))
    runner = CliRunner()
    res = runner.invoke(app, ["submit", "--host", stub.url, "-r", "req-9", "--corpus", "s3://d/c",
                              "--param", "beta=0.2", "--param", "train.steps=5", "--policy", str(policy),
                              "--workers", "2", "--use-gpu"])
    assert res.exit_code == 0, res.output
    params = stub.calls("POST", "/runs")[0].body["runtime_config"]["parameters"]
    assert params["request_ids"] == "req-9"  # the pipeline's parameters are text a person can type
    # the default method's recipe (AltPO), with the two values given on the command line
    assert json.loads(params["method_params"]) == {
        **DEFAULT_METHOD_PARAMS, "beta": 0.2, "train": {**DEFAULT_METHOD_PARAMS["train"], "steps": 5}}
    assert params["workers"] == 2 and params["use_gpu"] is True and params["promote_target"] == "kserve"
    assert yaml.safe_load(params["policy"]) == gates  # a local policy file travels as its text
    named = runner.invoke(app, ["submit", "--host", stub.url, "-r", "req-9,req-10", "--corpus", "s3://d/c",
                                "--policy", "strict"])
    assert named.exit_code == 0, named.output
    params = stub.calls("POST", "/runs")[1].body["runtime_config"]["parameters"]
    assert params["policy"] == "strict" and params["request_ids"] == "req-9,req-10"
    bad = runner.invoke(app, ["submit", "--host", stub.url, "-r", "req-9", "--corpus", "s3://d/c",
                              "--param", "note=x"])  # refused before anything reaches the cluster
    assert bad.exit_code == 2 and "note" in bad.output and len(stub.calls("POST", "/runs")) == 2
    unknown = runner.invoke(app, ["submit", "--host", stub.url, "-r", "req-9", "--corpus", "s3://d/c",
                                  "--policy", "paranoid"])
    assert unknown.exit_code == 2 and "unknown gate policy" in unknown.output
    res = runner.invoke(app, ["schedule", "--host", stub.url, "--corpus", "s3://d/c",
                              "--cron", "0 30 1 * * *"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{"):])["recurring_run_id"]
    res = runner.invoke(app, ["schedule", "--host", "localhost:1", "--corpus", "s3://d/c"])
    assert res.exit_code == 2


def test_upload_creates_every_pipeline_then_only_new_versions(stub: KfpApiStub) -> None:
    from unlearnops.pipelines.compile import COMPILED_DIR
    from unlearnops.pipelines.options import CompileOptions

    first = remote.upload_all(stub.url)
    assert set(first) == {p.stem for p in COMPILED_DIR.glob("*.yaml")}
    assert all(up.created for up in first.values())
    uploads = stub.calls("POST", "/pipelines/upload")
    assert sorted(u.query["name"][0] for u in uploads) == ["compliance-batch", "compliance-retrain",
                                                           "unlearn-on-request"]
    for name, up in first.items():
        shipped = next(yaml.safe_load_all((COMPILED_DIR / f"{name}.yaml").read_text()))
        assert stub.state.specs[up.version_id] == shipped  # what pipelines/compiled/ holds
        version = stub.state.versions[up.version_id]
        assert version["description"] == shipped["pipelineInfo"]["description"]  # shown in the KFP UI
    again = remote.upload_all(stub.url)  # the post-upgrade Job with the same YAML: nothing new
    assert again == {n: remote.Uploaded(u.pipeline_id, u.version_id, u.version_name, False)
                     for n, u in first.items()}
    assert len(stub.calls("POST", "/pipelines/upload")) == 3
    assert len(stub.calls("POST", "/pipelines/upload_version")) == 3
    options = CompileOptions(image="registry.example.com/unlearnops:2.0")
    upgraded = remote.upload_all(stub.url, options=options)  # a new image: a new version, same pipeline
    assert len(stub.calls("POST", "/pipelines/upload")) == 3
    for name, up in upgraded.items():
        assert up.created and up.pipeline_id == first[name].pipeline_id
        assert up.version_id != first[name].version_id
    scheduled = remote.schedule(stub.url, {"corpus_uri": "s3://d/c", "model_name": "m"}, options=options)
    assert scheduled.version_id == upgraded["compliance_batch"].version_id  # schedule reuses the upload


def test_cli_upload(stub: KfpApiStub) -> None:
    _load_plugins()
    runner = CliRunner()
    res = runner.invoke(app, ["upload", "--host", stub.url, "--image", "registry.example.com/u:1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert set(out) == {"unlearn_on_request", "compliance_batch", "compliance_retrain"}
    assert all(v["created"] for v in out.values())
    body = stub.calls("POST", "/pipelines/upload_version")[0].body
    assert b"image: registry.example.com/u:1" in body
    assert runner.invoke(app, ["upload", "--host", "localhost:1"]).exit_code == 2
