"""KFP component of the evaluate step: ``passed`` is a plain boolean for ``dsl.If``."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from .. import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_op(
    model_uri: str,
    base_uri: str,
    scope_uri: str,
    out_uri: str,
    metrics: Output[Metrics],
    reference_uri: str = "",
    policy_yaml: str = "",
    robustness: bool = True,
) -> NamedTuple("Outputs", [("passed", bool), ("report_uri", str), ("reasons", str)]):  # noqa: UP014
    """Evaluate the candidate, gate it (``policy_yaml``: YAML text, or empty for the default policy),
    write the report under ``out_uri``; outputs the verdict and logs key numbers as Metrics."""
    from collections import namedtuple

    from unlearnops.components.evaluate.evaluate import evaluate_model
    from unlearnops.components.evaluate.gates import GatePolicy
    from unlearnops.components.evaluate.metrics import EvalOptions

    from unlearnops.settings import apply_runtime_env
    from unlearnops.storage import join

    apply_runtime_env()
    policy = GatePolicy.from_yaml(policy_yaml, "policy_yaml") if policy_yaml.strip() else GatePolicy.default()
    report = evaluate_model(model_uri, base_uri, scope_uri, out_uri, reference_uri=reference_uri or None,
                            policy=policy, options=EvalOptions(robustness=robustness), show_progress=False)
    for name in ("forget.prob", "forget.rouge_l", "utility.model_utility", "privacy.mia_auc",
                 "robustness.relearn_recovery", "forget.forget_quality"):
        value = report.candidate.get(name)
        if value is not None:
            metrics.log_metric(name, float(value))
    verdict = report.verdict
    assert verdict is not None
    outputs = namedtuple("Outputs", ["passed", "report_uri", "reasons"])
    return outputs(verdict.passed, join(out_uri, "report.json"), "; ".join(verdict.reasons))
