"""The compiled pipelines: golden files, the gate visible in the DAG, and the platform spec.

If a golden comparison fails after a deliberate change to a component or pipeline, regenerate
with ``unlearnops compile`` (writes pipelines/compiled/*.yaml) and review the diff.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from unlearnops.pipelines.compile import COMPILED_DIR, PIPELINES, compile_text
from unlearnops.pipelines.options import CompileOptions, SecretEnv, Toleration

SIDE_EFFECT_EXECUTORS = ("exec-mark-running-op", "exec-unlearn-op", "exec-register-op", "exec-promote-op",
                         "exec-mark-done-op", "exec-mark-failed-op", "exec-exit-mark-failed-op")


def _docs(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every DAG (root and sub-DAGs), keyed by name."""
    out: dict[str, dict[str, Any]] = {}
    for comp in [spec["root"], *spec["components"].values()]:
        out.update((comp.get("dag") or {}).get("tasks", {}))
    return out


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    return {name: compile_text(name) for name in PIPELINES}


@pytest.mark.parametrize("name", PIPELINES)
def test_golden(compiled: dict[str, str], name: str) -> None:
    golden = COMPILED_DIR / f"{name}.yaml"
    assert golden.is_file(), f"{golden} missing: run `unlearnops compile`"
    assert compiled[name] == golden.read_text(), (
        f"{golden.name} is out of date: run `unlearnops compile` and review the diff")


@pytest.mark.parametrize("name", PIPELINES)
def test_gate_and_exit_handler_in_dag(compiled: dict[str, str], name: str) -> None:
    spec, _ = _docs(compiled[name])
    tasks = _tasks(spec)
    conditions = {t: task["triggerPolicy"]["condition"] for t, task in tasks.items()
                  if task.get("triggerPolicy", {}).get("condition")}
    assert any("passed" in c and "true" in c for c in conditions.values()), conditions
    assert any("already_unlearned" in c for c in conditions.values()), conditions
    exit_task = tasks["exit-mark-failed-op"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert "status" in exit_task["inputs"]["parameters"]
    names = {task["componentRef"]["name"] for task in tasks.values()}
    assert {"comp-register-op", "comp-promote-op", "comp-mark-failed-op", "comp-mark-done-op"} <= names


@pytest.mark.parametrize("name", PIPELINES)
def test_side_effects_not_cached(compiled: dict[str, str], name: str) -> None:
    spec, _ = _docs(compiled[name])
    for task_name, task in _tasks(spec).items():
        if "componentRef" in task and task["componentRef"]["name"].startswith("comp-condition"):
            continue
        if task["componentRef"]["name"].replace("comp-", "exec-") in SIDE_EFFECT_EXECUTORS:
            assert not task.get("cachingOptions", {}).get("enableCache"), task_name


def test_platform_spec_gpu_tolerations_secrets(compiled: dict[str, str]) -> None:
    spec, platform = _docs(compiled["unlearn_on_request"])
    unlearn = spec["deploymentSpec"]["executors"]["exec-unlearn-op"]["container"]
    # the task only launches a RayJob: no accelerator, no GPU-pool toleration on its pod ...
    assert "accelerator" not in unlearn["resources"] and unlearn["resources"]["cpuLimit"] == 1.0
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    k8s = executors["exec-unlearn-op"]
    assert "tolerations" not in k8s and "nodeSelector" not in k8s
    # ... its Ray workers get them
    env = {e["name"]: e["value"] for e in unlearn["env"]}
    assert env["UNLEARNOPS_RAYJOB_GPUS_PER_WORKER"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in json.loads(
        env["UNLEARNOPS_RAYJOB_TOLERATIONS"])
    assert {f["name"] for f in k8s["fieldPathAsEnv"]} >= {"UNLEARNOPS_KFP_RUN_ID", "UNLEARNOPS_K8S_NAMESPACE"}
    for exe in spec["deploymentSpec"]["executors"]:  # every task gets the credentials as secret env
        secrets = {s["secretName"] for s in executors[exe]["secretAsEnv"]}
        assert secrets == {"unlearnops-s3", "unlearnops-mlflow", "unlearnops-ledger"}, exe
    envs = {e["envVar"] for s in k8s["secretAsEnv"] for e in s["keyToEnv"]}
    assert "UNLEARNOPS_S3__SECRET_ACCESS_KEY" in envs
    assert "tolerations" not in executors["exec-promote-op"]  # only the unlearn task asks for GPUs
    for exe in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(exe["container"].get("command", []))  # no runtime installs


def test_compile_options_change_the_spec() -> None:
    opts = CompileOptions(image="registry.example/unlearnops:9", gpu=False, node_selector={"pool": "cpu"},
                          tolerations=[Toleration(key="dedicated", operator="Equal", value="ml",
                                                  effect="NoSchedule")],
                          secrets=[SecretEnv(name="my-s3", env={"key": "UNLEARNOPS_S3__ACCESS_KEY_ID"})])
    spec, platform = _docs(compile_text("unlearn_on_request", opts))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/unlearnops:9"}
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-unlearn-op"]["container"].get(
        "resources", {})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-unlearn-op"]
    container = spec["deploymentSpec"]["executors"]["exec-unlearn-op"]["container"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert json.loads(env["UNLEARNOPS_RAYJOB_NODE_SELECTOR"]) == {"pool": "cpu"}  # for the Ray pods
    assert json.loads(env["UNLEARNOPS_RAYJOB_TOLERATIONS"]) == [{"key": "dedicated", "operator": "Equal",
                                                                  "value": "ml", "effect": "NoSchedule"}]
    assert env["UNLEARNOPS_RAYJOB_GPUS_PER_WORKER"] == "0"
    assert [s["secretName"] for s in k8s["secretAsEnv"]] == ["my-s3"]


def test_local_options_have_no_platform_spec() -> None:
    _, platform = _docs(compile_text("unlearn_on_request", CompileOptions.local()))
    assert not platform


def test_compliance_batch_uses_schedule_time(compiled: dict[str, str]) -> None:
    spec, _ = _docs(compiled["compliance_batch"])
    pending = _tasks(spec)["pending-requests-op"]
    value = pending["inputs"]["parameters"]["schedule_time"]["runtimeValue"]["constant"]
    assert value == "{{$.pipeline_job_schedule_time_utc}}"
    assert spec["root"]["inputDefinitions"]["parameters"]["cutoff"]["defaultValue"] == ""


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_parameters_are_the_run_request(compiled: dict[str, str], name: str) -> None:
    from unlearnops.pipelines.run_request import RunRequest

    spec, _ = _docs(compiled[name])
    params = set(spec["root"]["inputDefinitions"]["parameters"])
    fields = set(RunRequest.model_fields)
    expected = fields if name == "unlearn_on_request" else fields - {"request_ids"} | {"cutoff"}
    assert params == expected


def test_run_request_refuses_bad_runs_before_launch() -> None:
    from pydantic import ValidationError
    from unlearnops.pipelines.run_request import DEFAULT_METHOD, DEFAULT_METHOD_PARAMS, RunRequest

    ok = RunRequest(request_ids="r1, r2", corpus_uri="s3://b/c", model_name="m",
                    method_params='{"beta": 0.1, "train": {"steps": 3}}', policy="strict")
    # the default method (AltPO): its calibrated recipe fills what the request does not set
    assert ok.method == DEFAULT_METHOD and ok.request_ids == ["r1", "r2"]
    assert ok.method_params == {**DEFAULT_METHOD_PARAMS, "beta": 0.1,
                                "train": {**DEFAULT_METHOD_PARAMS["train"], "steps": 3}}
    npo = RunRequest(corpus_uri="c", model_name="m", method="npo", method_params={"beta": 0.2})
    assert npo.method_params == {"beta": 0.2}  # another method keeps its own defaults
    args = ok.arguments()  # what the KFP UI shows: typed text, not a LIST or a STRUCT
    assert args["request_ids"] == "r1,r2" and json.loads(args["method_params"]) == ok.method_params
    assert args["policy"] == "strict" and args["promote_target"] == "kserve"
    assert "request_ids" not in ok.arguments(batch=True)
    bad = [("method_params", {"train": {"stepz": 3}}, "stepz"), ("method_params", "{beta: 1", "not JSON"),
           ("method", "nope", "unknown method"), ("promote_target", "moon", "local"),
           ("policy", "gates: [{metric: forget.no_such_metric, max: 1}]", "unknown metric"),
           ("policy", "paranoid", "unknown gate policy")]
    for key, value, why in bad:
        with pytest.raises(ValidationError) as err:
            RunRequest(corpus_uri="c", model_name="m", **{key: value})
        assert why in str(err.value)


# what the KFP UI shows of each task (its display name) and whether KFP may reuse a cached result
UI_TASKS = {"run-inputs": False, "check-already-unlearned": False, "mark-running": False,
            "resolve-scope": True, "unlearn": False, "evaluate": True, "register": False, "promote": False,
            "mark-unlearned": False, "register-rejected": False, "mark-failed": False,
            "record-failure": False}


@pytest.mark.parametrize("name", PIPELINES)
def test_compiled_pipeline_reads_well_in_the_kfp_ui(name: str) -> None:
    """Issue 14 (KFP UI): descriptions, typeable inputs, cluster defaults, no idle GPU on the
    launcher, caching only on deterministic steps, plain task names — read from the golden YAML."""
    spec, platform = _docs((COMPILED_DIR / f"{name}.yaml").read_text())
    assert spec["pipelineInfo"]["description"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert all(p.get("description") for p in params.values()), [k for k, p in params.items()
                                                               if not p.get("description")]
    # typed in the UI: text, numbers and booleans only (no LIST / STRUCT), the policy by name
    assert {p["parameterType"] for p in params.values()} <= {"STRING", "NUMBER_INTEGER", "BOOLEAN"}
    assert params["policy"]["defaultValue"] == "default" and "policy_yaml" not in params
    assert json.loads(params["method_params"]["defaultValue"]) == {}
    if name == "unlearn_on_request":
        assert "comma-separated" in params["request_ids"]["description"]
    # cluster-sensible defaults: serve on KServe; the model is named by the user
    assert params["promote_target"]["defaultValue"] == "kserve"
    assert "defaultValue" not in params["model_name"] and not params["model_name"].get("isOptional")
    # the unlearn launcher's pod asks for no accelerator (its RayJob's workers get the GPUs)
    unlearn = spec["deploymentSpec"]["executors"]["exec-unlearn-op"]["container"]
    assert "accelerator" not in unlearn.get("resources", {})
    assert "tolerations" not in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-unlearn-op"]
    # display names: plain (no "-op"), and caching exactly where it is safe
    shown = {task["taskInfo"]["name"]: task.get("cachingOptions", {}).get("enableCache", False)
             for task in _tasks(spec).values()
             if not task["componentRef"]["name"].startswith(("comp-condition", "comp-exit-handler"))}
    assert not [n for n in shown if n.endswith("-op")], shown
    expected = {**UI_TASKS, **({"pending-requests": False} if name == "compliance_batch" else {})}
    assert shown == expected


def test_run_cli_refuses_bad_parameters_before_the_first_step(tmp_path) -> None:
    from typer.testing import CliRunner

    from unlearnops.cli import _load_plugins, app

    _load_plugins()
    args = ["run", "-r", "r1", "--corpus", str(tmp_path / "none"), "-p", "train.steps=x"]
    got = CliRunner().invoke(app, args)
    assert got.exit_code == 2, got.output
    assert "train.steps" in got.output and "no corpus" not in got.output


def test_run_options_default_to_the_calibrated_altpo_recipe() -> None:
    """``unlearnops run`` without ``--method``: AltPO with the demo's recipe; ``-p`` changes one value
    of it and keeps the rest; ``--method npo`` gets NPO's own defaults, not AltPO's (issue 10)."""
    from unlearnops.pipelines.cli import run_request
    from unlearnops.pipelines.run_request import DEFAULT_METHOD, DEFAULT_METHOD_PARAMS

    def options(method: str, param: list[str]) -> dict[str, object]:
        run = run_request(["r1"], "/tmp/corpus", "m", method, param, None, 1, False, "", "", "local")
        assert run.method == method
        return run.method_params

    assert options(DEFAULT_METHOD, []) == DEFAULT_METHOD_PARAMS
    assert options(DEFAULT_METHOD, ["train.steps=60"]) == {
        **DEFAULT_METHOD_PARAMS, "train": {**DEFAULT_METHOD_PARAMS["train"], "steps": 60}}
    assert options("npo", ["beta=0.2"]) == {"beta": 0.2}


@pytest.mark.parametrize("name", ["unlearn_on_request", "compliance_batch"])
def test_kfp_ui_defaults_are_the_default_recipe(compiled: dict[str, str], name: str) -> None:
    """A run started from the KFP UI with the pipeline's defaults gets what ``unlearnops run`` gets:
    the default method, its recipe under the typed-in values (the run-inputs step merges them)."""
    from unlearnops.pipelines.run_inputs import run_inputs_op
    from unlearnops.pipelines.run_request import DEFAULT_METHOD, DEFAULT_METHOD_PARAMS

    spec, _ = _docs(compiled[name])
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["method"]["defaultValue"] == DEFAULT_METHOD
    assert params["method_params"]["defaultValue"] == "{}"
    out = run_inputs_op.python_func(request_ids="a, b", method=DEFAULT_METHOD, method_params="{}",
                                    policy="default")
    assert out.request_ids == ["a", "b"] and out.method_params == DEFAULT_METHOD_PARAMS
    steps = run_inputs_op.python_func(request_ids="a", method=DEFAULT_METHOD,
                                      method_params='{"train": {"steps": 60}}', policy="default")
    assert steps.method_params["train"] == {**DEFAULT_METHOD_PARAMS["train"], "steps": 60}
    npo = run_inputs_op.python_func(request_ids="a", method="npo", method_params='{"beta": 0.2}',
                                    policy="default")
    assert npo.method_params == {"beta": 0.2}
