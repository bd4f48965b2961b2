"""The scheduled compliance retraining: the gold standard on a schedule (issue 16).

Approximate unlearning answers each request within days (``unlearn_on_request``,
``compliance_batch``); this pipeline, run every period (e.g. monthly), replaces the approximately
unlearned champion with the foundation checkpoint fine-tuned again on the redacted corpus, and
upgrades every covered request's claim from ``unlearned`` to ``retrained``:

    retrain-plan → redact → retrain → evaluate (the same gates) → compare → register → promote → finish

- **retrain-plan** (components/retrain/plan.py): the requests completed by a version of the model
  (all covered: the corpus no longer holds their data) and the evaluation scope — its forget set
  is every record on the suppression list, so the gates check that the forget set of every
  covered request sits at the holdout level; written before the corpus is redacted.
- **redact**: ``corpus redact`` (off with ``redact=false``: the suppression list alone keeps the
  erased records out, every reader consults it).
- **retrain**: the foundation fine-tuned with the recipe on the corpus minus the suppression list
  (Ray Train; components/retrain/retrain.py), recorded as the champion's successor.
- **evaluate** with the gate policy, against the champion as base; **compare**: the approximate
  champion against the retrained model (components/retrain/compare.py).
- ``dsl.If(passed)``: **register** (gate passed, covering the requests) → **promote** (older
  versions tagged ``erased_by``) → **finish** (older versions tagged ``superseded_by``; each
  request's ``retrained`` certificate, referencing its ``unlearned`` one). ``dsl.Else``: the
  candidate is registered as rejected; the champion and the requests' claims stay.

The exit handler disposes of the run's working data (scope sets, model copy, checkpoints) whatever
the outcome. With no covered request the run does nothing.
"""

from typing import Any

from kfp import dsl
from unlearnops.components.evaluate.component import evaluate_op
from unlearnops.components.promote.component import promote_op
from unlearnops.components.register.component import register_op
from unlearnops.components.retrain.component import (
    compare_op,
    finish_retrain_op,
    redact_op,
    retrain_op,
    retrain_plan_op,
)

from .options import CompileOptions, side_effect, with_credentials
from .run_inputs import run_inputs_op
from .unlearn_on_request import RUN_ID, exit_handler

PIPELINE_NAME = "compliance-retrain"


def _retrain_graph(opts: CompileOptions, model_name: Any, corpus_uri: Any, foundation_uri: Any, recipe: Any,
                   policy: Any, workers: Any, use_gpu: Any, run_root: Any, promote_target: Any,
                   redact: Any, local_training: Any) -> None:
    plan = side_effect(retrain_plan_op(model_name=model_name, corpus_uri=corpus_uri, run_root=run_root,
                                       run_id=RUN_ID), opts)
    plan.set_display_name("retrain-plan")
    with dsl.If(plan.outputs["count"] > 0, name="has-covered-requests"):
        inputs = with_credentials(run_inputs_op(request_ids="", method="finetune", method_params="{}",
                                                policy=policy), opts)
        inputs.set_caching_options(False).set_display_name("run-inputs")
        redacted = side_effect(redact_op(corpus_uri=corpus_uri, enabled=redact), opts)
        redacted.set_display_name("redact").after(plan)
        retrain = side_effect(retrain_op(
            foundation_uri=foundation_uri, corpus_uri=corpus_uri, recipe=recipe,
            out_uri=plan.outputs["model_uri"], request_ids=plan.outputs["request_ids"],
            replaces=plan.outputs["champion_uri"], workers=workers, use_gpu=use_gpu, local=local_training),
            opts)
        retrain.set_display_name("retrain").after(redacted)
        evaluate = with_credentials(evaluate_op(
            model_uri=retrain.output, base_uri=plan.outputs["champion_uri"],
            scope_uri=plan.outputs["scope_uri"], out_uri=plan.outputs["eval_uri"],
            policy_yaml=inputs.outputs["policy_yaml"]), opts)
        evaluate.set_caching_options(True).set_display_name("evaluate")
        compare = with_credentials(compare_op(
            approximate_uri=plan.outputs["champion_uri"], exact_uri=retrain.output,
            scope_uri=plan.outputs["scope_uri"], out_uri=plan.outputs["eval_uri"], model_name=model_name,
            request_ids=plan.outputs["request_ids"]), opts)
        compare.set_caching_options(False).set_display_name("approx-vs-exact").after(evaluate)
        with dsl.If(evaluate.outputs["passed"] == True, name="gates-passed"):  # noqa: E712
            reg = side_effect(register_op(
                model_uri=retrain.output, name=model_name, report_uri=plan.outputs["eval_uri"],
                scope_uri=plan.outputs["scope_uri"], gate="passed", request_ids=plan.outputs["request_ids"],
                kfp_run_id=RUN_ID), opts)
            reg.set_display_name("register").after(compare)
            promote = side_effect(promote_op(name=model_name, version=reg.output, target=promote_target),
                                  opts)
            promote.set_display_name("promote")
            finish = side_effect(finish_retrain_op(
                model_name=model_name, version=reg.output, request_ids=plan.outputs["request_ids"],
                run_id=RUN_ID, previous_uri=plan.outputs["champion_uri"], eval_uri=plan.outputs["eval_uri"]),
                opts)
            finish.set_display_name("certify-retrained").after(promote)
        with dsl.Else(name="gates-failed"):
            rejected = side_effect(register_op(
                model_uri=retrain.output, name=model_name, report_uri=plan.outputs["eval_uri"],
                scope_uri=plan.outputs["scope_uri"], gate="failed", request_ids=[], kfp_run_id=RUN_ID), opts)
            rejected.set_display_name("register-rejected").after(compare)


def build(options: CompileOptions | None = None) -> Any:
    """The ``compliance_retrain`` pipeline compiled with ``options``."""
    opts = options or CompileOptions()

    @dsl.pipeline(name=PIPELINE_NAME)
    def compliance_retrain(
        model_name: str,
        corpus_uri: str,
        foundation_uri: str,
        recipe: str,
        policy: str = "default",
        workers: int = 1,
        use_gpu: bool = False,
        run_root: str = "",
        promote_target: str = "kserve",
        redact: bool = True,
        local_training: bool = False,
    ) -> None:
        """Retrain the model from its foundation without the erased data; replace the approximately
        unlearned champion and upgrade every covered request's claim to "retrained".

        Args:
            model_name: Registered MLflow model whose champion is replaced: set it to your model's name.
            corpus_uri: Fine-tuning corpus (suppressed records are skipped; redacted unless redact=false).
            foundation_uri: Foundation checkpoint the model was fine-tuned from (path, s3:// or models:/).
            recipe: Training recipe as JSON: {"params": {"train": {"epochs": 3, "lr": 1e-5}}, "seed": 0}.
            policy: Gate policy: default, strict, lenient, or a policy YAML URI (s3://...).
            workers: Ray Train workers of the retraining.
            use_gpu: Train on GPUs (one per Ray worker).
            run_root: URI under which the run writes (empty: the cluster's storage root).
            promote_target: Where a passing retrained model is served: kserve, or local (a folder).
            redact: Rewrite the corpus shards without the erased records before retraining.
            local_training: Train in the task's own process instead of on Ray (small models, tests).
        """
        with exit_handler(opts, run_root):
            _retrain_graph(opts, model_name, corpus_uri, foundation_uri, recipe, policy, workers, use_gpu,
                           run_root, promote_target, redact, local_training)

    return compliance_retrain


compliance_retrain = build()
