"""The scheduled compliance pipeline: every approved request up to a cutoff, unlearned as one scope.

The cutoff defaults to the run's schedule time (``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``
on a recurring run), else now; requests come earliest effective deadline first (the meaning of
``Ledger.pending_until``). With nothing approved the run does nothing. The unlearning graph is the
same as ``unlearn_on_request``'s; one certificate is issued per request it completes.
"""

from typing import Any

from kfp import dsl
from unlearnops.components.ledger.component import pending_requests_op

from .options import CompileOptions, with_credentials
from .run_request import DEFAULT_METHOD, RunChannels
from .unlearn_on_request import add_unlearn_graph, exit_handler, typed_inputs

PIPELINE_NAME = "compliance-batch"


def build(options: CompileOptions | None = None) -> Any:
    """The ``compliance_batch`` pipeline compiled with ``options``."""
    opts = options or CompileOptions()

    @dsl.pipeline(name=PIPELINE_NAME)
    def compliance_batch(
        corpus_uri: str,
        model_name: str,
        cutoff: str = "",
        method: str = DEFAULT_METHOD,
        method_params: str = "{}",
        policy: str = "default",
        workers: int = 1,
        use_gpu: bool = False,
        reference_uri: str = "",
        run_root: str = "",
        promote_target: str = "kserve",
    ) -> None:
        """Unlearn every approved forget request up to the cutoff as one scope (recurring runs).

        Args:
            corpus_uri: Training corpus the requests are resolved against (e.g. s3://bucket/corpus).
            model_name: Registered MLflow model whose champion is unlearned: set it to your model's name.
            cutoff: Take requests approved up to this ISO time (empty: the schedule time, else now).
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
        params = dict(locals())  # the parameters above: RunRequest's fields, and the cutoff
        with exit_handler(opts, run_root):
            pending = with_credentials(pending_requests_op(
                cutoff=cutoff, schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER), opts)
            pending.set_caching_options(False).set_display_name("pending-requests")
            with dsl.If(pending.outputs["count"] > 0, name="has-pending"):
                run = typed_inputs(opts, RunChannels.of(params), request_ids=pending.outputs["request_ids"])
                add_unlearn_graph(opts, run)

    return compliance_batch


compliance_batch = build()
