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
from .run_request import RunChannels
from .unlearn_on_request import add_unlearn_graph, exit_handler

PIPELINE_NAME = "compliance-batch"


def build(options: CompileOptions | None = None) -> Any:
    """The ``compliance_batch`` pipeline compiled with ``options``."""
    opts = options or CompileOptions()

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Unlearn every approved forget request up to the cutoff as one scope "
                              "(unlearnops, for recurring runs).")
    def compliance_batch(
        corpus_uri: str,
        cutoff: str = "",
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
        params = dict(locals())  # the parameters above: RunRequest's fields, and the cutoff
        with exit_handler(opts, run_root):
            pending = with_credentials(pending_requests_op(
                cutoff=cutoff, schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER), opts)
            pending.set_caching_options(False).set_display_name("pending-requests")
            with dsl.If(pending.outputs["count"] > 0, name="has-pending"):
                add_unlearn_graph(opts, RunChannels.of(params, request_ids=pending.outputs["request_ids"]))

    return compliance_batch


compliance_batch = build()
