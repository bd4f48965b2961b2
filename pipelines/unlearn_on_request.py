"""The on-request pipeline: run inputs → check → mark running → resolve scope → unlearn → evaluate → gate.

Its parameters are what a person types in the KFP UI (comma-separated request ids, method
parameters as JSON, a gate policy by name or URI); the ``run-inputs`` step parses them. Every task
shows a plain display name; the deterministic steps (resolve-scope, evaluate) are cached, the ones
that change the ledger, the registry or serving are not.

``dsl.If(passed)`` registers the candidate (gate=passed), promotes it and marks the requests
unlearned; ``dsl.Else`` registers it as rejected (gate=failed) and marks the requests failed with
the gate reasons. Everything runs inside a ``dsl.ExitHandler`` whose exit task marks any request
still ``running`` as failed, naming the failing step. A request already unlearned by a version
makes the run a no-op (idempotent). The gate is a plain bool (what kfp.local supports).
"""

from dataclasses import replace
from typing import Any

from kfp import dsl
from unlearnops.components.evaluate.component import evaluate_op
from unlearnops.components.ledger.component import (
    check_already_unlearned_op,
    exit_mark_failed_op,
    mark_done_op,
    mark_failed_op,
    mark_running_op,
)
from unlearnops.components.promote.component import promote_op
from unlearnops.components.register.component import register_op
from unlearnops.components.scope.component import resolve_scope_op
from unlearnops.components.unlearn.component import unlearn_op

from .options import CompileOptions, configure_unlearn, side_effect, with_credentials
from .run_inputs import run_inputs_op
from .run_request import DEFAULT_METHOD, RunChannels

PIPELINE_NAME = "unlearn-on-request"
RUN_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER


def add_unlearn_graph(options: CompileOptions, run: RunChannels) -> None:
    """Add the unlearning graph for ``run.request_ids`` to the pipeline being defined (in its exit
    handler)."""
    request_ids, model_name = run.request_ids, run.model_name
    plan = side_effect(check_already_unlearned_op(
        request_ids=request_ids, model_name=model_name, run_root=run.run_root, run_id=RUN_ID), options)
    plan.set_display_name("check-already-unlearned")
    with dsl.If(plan.outputs["already_unlearned"] == False, name="not-yet-unlearned"):  # noqa: E712
        running = side_effect(mark_running_op(request_ids=request_ids, run_id=RUN_ID), options)
        running.set_display_name("mark-running")
        # deterministic given its inputs (out_uri is the run's own folder): cached, e.g. on a retry
        scope = with_credentials(resolve_scope_op(
            request_ids=request_ids, corpus_uri=run.corpus_uri, out_uri=plan.outputs["scope_uri"]), options)
        scope.set_caching_options(True).set_display_name("resolve-scope").after(running)
        unlearn = configure_unlearn(unlearn_op(
            scope_uri=scope.output, model_uri=plan.outputs["base_uri"], method=run.method,
            params=run.method_params, out_uri=plan.outputs["model_uri"], workers=run.workers,
            use_gpu=run.use_gpu), options)
        evaluate = with_credentials(evaluate_op(
            model_uri=unlearn.outputs["model_uri"], base_uri=plan.outputs["base_uri"],
            scope_uri=scope.output, out_uri=plan.outputs["eval_uri"], reference_uri=run.reference_uri,
            policy_yaml=run.policy), options)
        evaluate.set_caching_options(True).set_display_name("evaluate")  # a pure function of its inputs
        # register_model reads EVAL_DIR/report.json: it takes the evaluate step's output folder
        _gate(options, evaluate, unlearn, scope, plan.outputs["eval_uri"], request_ids, model_name,
              run.promote_target)


def typed_inputs(options: CompileOptions, run: RunChannels, request_ids: Any = None) -> RunChannels:
    """``run`` with its typed-in inputs parsed by the ``run-inputs`` step (not cached: the policy may
    be a URI whose file changes); ``request_ids`` (a list channel) replaces the typed ids."""
    inputs = with_credentials(run_inputs_op(request_ids="" if request_ids is not None else run.request_ids,
                                            method=run.method, method_params=run.method_params,
                                            policy=run.policy), options)
    inputs.set_caching_options(False).set_display_name("run-inputs")
    ids = inputs.outputs["request_ids"] if request_ids is None else request_ids
    return replace(run, request_ids=ids, method_params=inputs.outputs["method_params"],
                   policy=inputs.outputs["policy_yaml"])


def exit_handler(options: CompileOptions, run_root: Any) -> dsl.ExitHandler:
    """The ExitHandler whose exit task marks the requests this run left ``running`` as failed."""
    exit_task = with_credentials(exit_mark_failed_op(run_root=run_root, run_id=RUN_ID), options)
    exit_task.set_caching_options(False).set_display_name("record-failure")
    return dsl.ExitHandler(exit_task, name="unlearn-requests")


def _gate(options: CompileOptions, evaluate: dsl.PipelineTask, unlearn: dsl.PipelineTask,
          scope: dsl.PipelineTask, eval_dir: Any, request_ids: Any, model_name: Any,
          promote_target: Any) -> None:
    """The promotion gate, visible in the DAG: register+promote+done, or register rejected+failed."""
    with dsl.If(evaluate.outputs["passed"] == True, name="gates-passed"):  # noqa: E712
        reg = side_effect(register_op(
            model_uri=unlearn.outputs["model_uri"], name=model_name,
            report_uri=eval_dir, scope_uri=scope.output, gate="passed",
            request_ids=request_ids, kfp_run_id=RUN_ID), options)
        reg.set_display_name("register")
        promote = side_effect(promote_op(name=model_name, version=reg.output, target=promote_target),
                              options)
        promote.set_display_name("promote")
        done = side_effect(mark_done_op(request_ids=request_ids, model_name=model_name,
                                        version=reg.output, run_id=RUN_ID), options)
        done.after(promote).set_display_name("mark-unlearned")
    with dsl.Else(name="gates-failed"):
        rejected = side_effect(register_op(
            model_uri=unlearn.outputs["model_uri"], name=model_name,
            report_uri=eval_dir, scope_uri=scope.output, gate="failed",
            request_ids=request_ids, kfp_run_id=RUN_ID), options)
        rejected.set_display_name("register-rejected")
        failed = side_effect(mark_failed_op(
            request_ids=request_ids, reasons=evaluate.outputs["reasons"], run_id=RUN_ID,
            model_name=model_name, version=rejected.output), options)
        failed.set_display_name("mark-failed")


def build(options: CompileOptions | None = None) -> Any:
    """The ``unlearn_on_request`` pipeline compiled with ``options``."""
    opts = options or CompileOptions()

    @dsl.pipeline(name=PIPELINE_NAME)
    def unlearn_on_request(
        request_ids: str,
        corpus_uri: str,
        model_name: str,
        method: str = DEFAULT_METHOD,
        method_params: str = "{}",
        policy: str = "default",
        workers: int = 1,
        use_gpu: bool = False,
        reference_uri: str = "",
        run_root: str = "",
        promote_target: str = "kserve",
    ) -> None:
        """Unlearn forget requests from a registered model's champion; gate, register, promote.

        Args:
            request_ids: Forget request ids from the ledger, comma-separated (e.g. erase-1,erase-2).
            corpus_uri: Training corpus the requests are resolved against (e.g. s3://bucket/corpus).
            model_name: Registered MLflow model whose champion is unlearned: set it to your model's name.
            method: Unlearning method: altpo (the default recipe), npo, simnpo, grad_diff, rmu, wga, ...
            method_params: Method parameters as JSON, train.* nested: {"beta": 0.1, "train": {"steps": 50}};
                with altpo, laid over its default recipe.
            policy: Gate policy: default, strict, lenient, or a policy YAML URI (s3://...).
            workers: Ray Train workers of the unlearning RayJob.
            use_gpu: Train on GPUs (each Ray worker gets the compiled accelerator limit).
            reference_uri: Retain-only reference model URI, for forget quality (empty: skip those gates).
            run_root: URI under which the run writes (empty: the cluster's storage root).
            promote_target: Where a passing candidate is served: kserve, or local (a folder).
        """
        with exit_handler(opts, run_root):
            add_unlearn_graph(opts, typed_inputs(opts, RunChannels.of(locals())))

    return unlearn_on_request


unlearn_on_request = build()
