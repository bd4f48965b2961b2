"""The first step of both pipelines: what a person typed in the KFP UI → what the steps take.

The request ids come as one comma-separated string, the method parameters as JSON text and the
gate policy by name (``default``, ``strict``, ``lenient``), URI or YAML text
(:mod:`pipelines.run_request` parses them; a bad value fails this step with a one-line reason).
"""

from typing import NamedTuple

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def run_inputs_op(request_ids: str, method: str, method_params: str, policy: str) -> NamedTuple(  # noqa: UP014
        "RunInputs", [("request_ids", list), ("method_params", dict), ("policy_yaml", str)]):
    """Split ``request_ids``, parse ``method_params`` (laid over the default method's recipe when
    ``method`` is it; checked against ``method``) and read ``policy``."""
    from collections import namedtuple

    from unlearnops.components.unlearn.job import check_params
    from unlearnops.pipelines.run_request import parse_params, policy_text, split_ids, with_default_params

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    params = with_default_params(method, parse_params(method_params))
    check_params(method, params)
    outputs = namedtuple("RunInputs", ["request_ids", "method_params", "policy_yaml"])
    return outputs(split_ids(request_ids), params, policy_text(policy))
