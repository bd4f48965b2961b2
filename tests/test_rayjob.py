"""The unlearn step as a KubeRay RayJob: rendering, CRD validation, polling, log streaming, cleanup.

The official kubernetes client talks to tests/stubs/k8s_api.py (a local API server stand-in that
validates created RayJobs against the vendored CRD and scripts their status).
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading

import pytest
from unlearnops.components.unlearn import rayjob

from tests.stubs.k8s_api import K8sApiStub
from unlearnops import crds, storage
from unlearnops.types import TrainingRecord

RUN_ID = "3f6c1f5e-8f0e-4d59-9c39-2b8bd0f5a7c1"


def _manifest(**kw: object) -> dict:
    res = rayjob.RayJobResources(workers=3, cpus_per_worker="4", memory_per_worker="16Gi", gpus_per_worker=1,
                                 tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                               "effect": "NoSchedule"}],
                                 node_selector={"pool": "gpu"})
    return rayjob.build_manifest(rayjob.dns_name(RUN_ID), "kubeflow", "img:1",
                                 rayjob.entrypoint({"out_uri": "s3://b/runs/x/model"}), res,
                                 env=[{"name": "UNLEARNOPS_STORAGE_ROOT", "value": "s3://b"}], **kw)


def test_dns_name_is_safe_and_unique() -> None:
    name = rayjob.dns_name(RUN_ID)
    assert len(name) <= rayjob.MAX_NAME and name.startswith("unlearn-3f6c1f5e")
    assert rayjob.dns_name("Run_ID With Spaces") == "unlearn-run-id-with-spaces"
    assert rayjob.dns_name(RUN_ID + "a") != rayjob.dns_name(RUN_ID + "b")


def test_manifest_renders_resources_and_validates() -> None:
    m = _manifest(active_deadline_s=1800, ttl_s=60)
    crds.validate(m)
    spec = m["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 60 and spec["activeDeadlineSeconds"] == 1800
    prefix = "python -m unlearnops.components.unlearn.rayjob --step unlearn --args-json "
    assert spec["entrypoint"].startswith(prefix)
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    pod = group["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"] == {"pool": "gpu"}
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]


def test_typo_in_manifest_is_caught() -> None:
    m = _manifest()
    m["spec"]["entrypont"] = m["spec"].pop("entrypoint")
    with pytest.raises(crds.ManifestError):
        crds.validate(m)


def test_secrets_are_referenced_never_copied() -> None:
    env = rayjob._container_env({
        "UNLEARNOPS_STORAGE_ROOT": "s3://bucket/root",
        "UNLEARNOPS_S3__SECRET_ACCESS_KEY": "do-not-copy",
        "UNLEARNOPS_RAYJOB_SECRETS": json.dumps([{
            "name": "unlearnops-s3", "env": {"secret_access_key": "UNLEARNOPS_S3__SECRET_ACCESS_KEY"}}]),
        "PATH": "/usr/bin",
    })
    by_name = {e["name"]: e for e in env}
    assert by_name["UNLEARNOPS_STORAGE_ROOT"]["value"] == "s3://bucket/root"
    assert by_name["UNLEARNOPS_S3__SECRET_ACCESS_KEY"] == {
        "name": "UNLEARNOPS_S3__SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "unlearnops-s3", "key": "secret_access_key",
                                       "optional": False}}}
    assert "do-not-copy" not in json.dumps(env) and "PATH" not in by_name
    assert by_name[rayjob.BACKEND_ENV]["value"] == "local"  # the driver runs Ray Train, not another RayJob


def test_running_on_kubernetes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert not rayjob.running_on_kubernetes()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert rayjob.running_on_kubernetes()
    monkeypatch.setenv(rayjob.BACKEND_ENV, "local")
    assert not rayjob.running_on_kubernetes()


def _runner(stub: K8sApiStub, out: io.StringIO) -> rayjob.RayJobRunner:
    return rayjob.RayJobRunner(stub.api_client(), namespace="kubeflow", poll_s=0.01, timeout_s=30, log=out)


def test_success_polls_job_status_streams_logs_and_deletes() -> None:
    statuses = [{}, {"jobDeploymentStatus": "Initializing"},
                {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"},
                {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}]
    logs = ["", "", "step 1 loss 2.0\n", "step 1 loss 2.0\nstep 2 loss 1.0\n"]
    out = io.StringIO()
    with K8sApiStub(statuses, logs) as stub:
        outcome = _runner(stub, out).run(_manifest())
        name = rayjob.dns_name(RUN_ID)
        assert outcome.job_status == "SUCCEEDED"
        assert len(stub.calls("POST", "/rayjobs")) == 1
        assert stub.state.gets == 4  # polled until the terminal jobStatus
        assert stub.state.deleted == [name] and not stub.state.rayjobs
        deletes = stub.calls("DELETE", f"/rayjobs/{name}")
        assert deletes[0].query["propagationPolicy"] == ["Background"]
    text = out.getvalue()
    assert text.count("step 1 loss 2.0") == 1 and "step 2 loss 1.0" in text  # each log line once
    assert "jobStatus=RUNNING" in text


def test_job_status_decides_not_the_submitter() -> None:
    # the deployment says Complete (submitter exited 0) but the Ray job itself FAILED
    statuses = [{"jobStatus": "FAILED", "jobDeploymentStatus": "Complete", "message": "driver raised"}]
    with K8sApiStub(statuses) as stub:
        with pytest.raises(rayjob.RayJobError, match="FAILED.*driver raised"):
            _runner(stub, io.StringIO()).run(_manifest())
        assert stub.state.deleted == [rayjob.dns_name(RUN_ID)]


def test_deadline_exceeded_fails_and_cleans_up() -> None:
    statuses = [{"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"},
                {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}]
    with K8sApiStub(statuses) as stub:
        with pytest.raises(rayjob.RayJobError, match="DeadlineExceeded"):
            _runner(stub, io.StringIO()).run(_manifest(active_deadline_s=60))
        assert not stub.state.rayjobs


def test_invalid_manifest_is_refused_by_the_api() -> None:
    m = _manifest()
    m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "three"
    with K8sApiStub() as stub:
        with pytest.raises(rayjob.RayJobError, match="422"):
            _runner(stub, io.StringIO()).run(m)


def test_sigterm_cancels_and_deletes() -> None:
    statuses = [{"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}]
    with K8sApiStub(statuses) as stub:
        runner = _runner(stub, io.StringIO())
        timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            with pytest.raises(rayjob.Cancelled):
                runner.run(_manifest())
        finally:
            timer.cancel()
        assert stub.state.deleted == [rayjob.dns_name(RUN_ID)] and not stub.state.rayjobs
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or callable(
        signal.getsignal(signal.SIGTERM))


def test_run_as_rayjob_end_to_end(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    out_uri = str(tmp_path / "runs" / RUN_ID / "model")
    storage.write_json(storage.join(out_uri, "training.json"), {"method": "npo", "steps": 3})
    monkeypatch.setenv("UNLEARNOPS_K8S_NAMESPACE", "team-a")
    monkeypatch.delenv(rayjob.RUN_ID_ENV, raising=False)
    monkeypatch.setenv("UNLEARNOPS_IMAGE", "registry.example/ml/unlearnops:7")
    monkeypatch.delenv("UNLEARNOPS_TRAINER_IMAGE", raising=False)
    with K8sApiStub() as stub:
        training = rayjob.run_as_rayjob(scope_uri="s3://b/scope", model_uri="models:/m/1", method="npo",
                                        params={"beta": 0.1}, out_uri=out_uri, workers=2, use_gpu=True,
                                        api_client=stub.api_client(), poll_s=0.01, log=io.StringIO())
        created = stub.calls("POST", "/namespaces/team-a/rayjobs")[0].body
    assert (training.method, training.steps) == ("npo", 3)  # the typed training.json
    assert created["metadata"]["name"] == rayjob.dns_name(RUN_ID)  # named after the run folder
    group = created["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 2
    assert group["template"]["spec"]["containers"][0]["image"] == "registry.example/ml/unlearnops-trainer:7"
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = json.loads(created["spec"]["entrypoint"].split("--args-json ", 1)[1].strip("'"))
    assert args["params"] == {"beta": 0.1} and args["out_uri"] == out_uri and args["workers"] == 2


def test_unlearn_component_runs_as_rayjob_inside_a_pod(monkeypatch):
    """In a pod (KUBERNETES_SERVICE_HOST set) the unlearn component hands the step to run_as_rayjob."""
    from unlearnops.components.unlearn import rayjob
    from unlearnops.components.unlearn.component import unlearn_op

    calls: list[dict] = []

    def fake_run_as_rayjob(**kwargs):
        calls.append(kwargs)
        return TrainingRecord(method="npo", parent={"name": "people-qa", "version": "3"})

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("UNLEARNOPS_UNLEARN_BACKEND", raising=False)
    monkeypatch.setattr(rayjob, "run_as_rayjob", fake_run_as_rayjob)
    out = unlearn_op.python_func(scope_uri="s3://b/run/scope", model_uri="models:/people-qa@champion",
                                 method="npo", params={"beta": 0.1}, out_uri="s3://b/run/model",
                                 workers=2, use_gpu=True, seed=7, stop_when={"forget_prob_max": 0.1})
    assert out.model_uri == "s3://b/run/model" and out.parent_version == "3"
    assert calls == [{"scope_uri": "s3://b/run/scope", "model_uri": "models:/people-qa@champion",
                      "method": "npo", "params": {"beta": 0.1}, "out_uri": "s3://b/run/model",
                      "workers": 2, "use_gpu": True, "seed": 7, "stop_when": {"forget_prob_max": 0.1}}]


def test_retrain_as_rayjob_end_to_end(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: the retrain step runs through the same launcher: a RayJob named retrain-<run>,
    validated against the CRD, whose driver is the retrain step with the recipe and covered requests;
    the result is read back from the lineage.json and training.json the job stored."""
    from unlearnops.components.register.lineage import LINEAGE_FILE, Lineage, Recipe
    from unlearnops.components.retrain.retrain import retrain_as_rayjob

    out_uri = str(tmp_path / "runs" / RUN_ID / "model")
    recipe = Recipe(params={"train": {"epochs": 2, "lr": 1e-3}}, seed=3)
    lineage = Lineage(foundation_uri="s3://b/foundation", recipe=recipe, covers_requests=["r1", "r2"])
    storage.write_json(storage.join(out_uri, "training.json"),
                       {"method": "finetune", "steps": 12, "tokens": 4096, "worker_seconds": 9.5})
    storage.write_text(storage.join(out_uri, LINEAGE_FILE), lineage.model_dump_json())
    monkeypatch.setenv("UNLEARNOPS_K8S_NAMESPACE", "team-a")
    monkeypatch.delenv(rayjob.RUN_ID_ENV, raising=False)
    with K8sApiStub() as stub:
        result = retrain_as_rayjob("s3://b/foundation", "s3://b/corpus", out_uri, recipe,
                                   request_ids=["r1", "r2"], replaces="models:/people-qa/4", workers=2,
                                   api_client=stub.api_client(), poll_s=0.01, log=io.StringIO())
        created = stub.calls("POST", "/namespaces/team-a/rayjobs")[0].body
        assert stub.state.deleted == [rayjob.dns_name(RUN_ID, "retrain")]
    assert (result.model_uri, result.steps, result.tokens) == (out_uri, 12, 4096)
    assert result.lineage.covers_requests == ["r1", "r2"] and not result.resumed
    assert created["metadata"]["name"] == rayjob.dns_name(RUN_ID, "retrain")
    assert created["metadata"]["labels"]["unlearnops.io/step"] == "retrain"
    group = created["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert (group["groupName"], group["replicas"]) == ("retrain-workers", 2)
    command = created["spec"]["entrypoint"]
    assert command.startswith("python -m unlearnops.components.unlearn.rayjob --step retrain --args-json ")
    args = json.loads(command.split("--args-json ", 1)[1].strip("'"))
    assert args == {"foundation_uri": "s3://b/foundation", "corpus_uri": "s3://b/corpus", "out_uri": out_uri,
                    "recipe": recipe.model_dump(mode="json"), "request_ids": ["r1", "r2"],
                    "replaces": "models:/people-qa/4", "workers": 2, "use_gpu": False}


def test_rayjob_driver_dispatches_on_the_step(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The RayJob entrypoint runs the named step's driver with the JSON arguments; an unknown step
    is a usage error, and entrypoint() refuses to render one."""
    from unlearnops.components.register.lineage import Lineage, Recipe
    from unlearnops.components.retrain import retrain as retrain_module
    from unlearnops.components.retrain.retrain import RetrainResult

    seen: list[dict] = []

    def fake_drive(args: dict) -> RetrainResult:
        seen.append(args)
        return RetrainResult(model_uri=args["out_uri"], lineage=Lineage(foundation_uri="f", recipe=Recipe()),
                             steps=1, tokens=2, worker_seconds=0.5, wall_seconds=1.0)

    monkeypatch.setattr(retrain_module, "drive_retrain", fake_drive)
    assert rayjob.main(["--step", "retrain", "--args-json", json.dumps({"out_uri": "s3://b/m"})]) == 0
    assert seen == [{"out_uri": "s3://b/m"}]
    assert json.loads(capsys.readouterr().out)["model_uri"] == "s3://b/m"
    with pytest.raises(SystemExit) as exit_info:
        rayjob.main(["--step", "evaluate", "--args-json", "{}"])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="no RayJob driver for step 'evaluate'"):
        rayjob.entrypoint({}, "evaluate")


def test_retrain_component_runs_as_rayjob_inside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pod the retrain component hands the step to retrain_as_rayjob, unless local is asked."""
    from unlearnops.components.retrain import retrain as retrain_module
    from unlearnops.components.retrain.component import retrain_op

    calls: list[tuple] = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return type("Result", (), {"model_uri": args[2]})()

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("UNLEARNOPS_UNLEARN_BACKEND", raising=False)
    monkeypatch.setattr(retrain_module, "retrain_as_rayjob", fake)
    monkeypatch.setattr(retrain_module, "retrain", lambda *a, **k: pytest.fail("ran in the pod"))
    recipe = json.dumps({"objective": "finetune", "params": {"train": {"epochs": 1}}, "seed": 1})
    out = retrain_op.python_func(foundation_uri="s3://b/f", corpus_uri="s3://b/c", recipe=recipe,
                                 out_uri="s3://b/run/model", request_ids=["r1"], replaces="models:/m/2",
                                 workers=2, use_gpu=True)
    assert out == "s3://b/run/model"
    (args, kwargs), = calls
    assert args[:3] == ("s3://b/f", "s3://b/c", "s3://b/run/model") and args[3].seed == 1
    assert kwargs == {"request_ids": ["r1"], "replaces": "models:/m/2", "workers": 2, "use_gpu": True}
