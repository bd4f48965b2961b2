"""The on-request pipeline: check → mark running → resolve scope → unlearn → evaluate → gate.

``dsl.If(passed)`` registers the candidate (gate=passed), promotes it and marks the requests
unlearned; ``dsl.Else`` registers it as rejected (gate=failed) and marks the requests failed with
the gate reasons. Everything runs inside a ``dsl.ExitHandler`` whose exit task marks any request
still ``running`` as failed, naming the failing step. A request already unlearned by a version
makes the run a no-op (idempotent). The gate is a plain bool (what kfp.local supports).
"""

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
from .run_request import RunChannels

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
        scope = with_credentials(resolve_scope_op(
            request_ids=request_ids, corpus_uri=run.corpus_uri, out_uri=plan.outputs["scope_uri"]), options)
        scope.set_caching_options(False).after(running)
        unlearn = configure_unlearn(unlearn_op(
            scope_uri=scope.output, model_uri=plan.outputs["base_uri"], method=run.method,
            params=run.method_params, out_uri=plan.outputs["model_uri"], workers=run.workers,
            use_gpu=run.use_gpu), options)
        evaluate = with_credentials(evaluate_op(
            model_uri=unlearn.outputs["model_uri"], base_uri=plan.outputs["base_uri"],
            scope_uri=scope.output, out_uri=plan.outputs["eval_uri"], reference_uri=run.reference_uri,
            policy_yaml=run.policy_yaml), options)
        evaluate.set_caching_options(False)
        # register_model reads EVAL_DIR/report.json: it takes the evaluate step's output folder
        _gate(options, evaluate, unlearn, scope, plan.outputs["eval_uri"], request_ids, model_name,
              run.promote_target)


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

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Unlearn the data of forget requests from the champion model, gate, "
                              "register and promote (unlearnops).")
    def unlearn_on_request(
        request_ids: list,
        corpus_uri: str,
        model_name: str = "unlearnops-model",
        method: str = "npo",
        method_params: dict = {},  # noqa: B006 - KFP pipeline default, never mutated
        policy_yaml: str = "",
        workers: int = 1,
        use_gpu: bool = False,
        reference_uri: str = "",
        run_root: str = "",
        promote_target: str = "local",
    ) -> None:
        run = RunChannels.of(locals())  # the parameters above: RunRequest's fields
        with exit_handler(opts, run_root):
            add_unlearn_graph(opts, run)

    return unlearn_on_request


unlearn_on_request = build()
