"""KFP component of the unlearning step (a lightweight component importing the installed package)."""

from typing import NamedTuple

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def unlearn_op(scope_uri: str, model_uri: str, method: str, params: dict, out_uri: str, workers: int = 1,
               use_gpu: bool = False, seed: int = 0, stop_when: dict = {},  # noqa: B006 - KFP default
               ) -> NamedTuple("Outputs", [("model_uri", str), ("parent_version", str)]):  # noqa: F821
    """Unlearn the scope's forget set from ``model_uri`` on Ray Train; returns the model URI and the
    parent's registered version ("" when the base model is not a registry URI)."""
    from collections import namedtuple

    from unlearnops.components.unlearn.runner import run_unlearning

    from unlearnops.settings import apply_runtime_env
    from unlearnops.types import UnlearnSpec

    apply_runtime_env()
    spec = UnlearnSpec(method=method, params=dict(params or {}), seed=seed,
                       compute={"workers": workers, "use_gpu": use_gpu})
    result = run_unlearning(spec, scope_uri, model_uri, out_uri, stop_when=dict(stop_when or {}))
    outputs = namedtuple("Outputs", ["model_uri", "parent_version"])
    version = result.parent.version if result.parent and result.parent.version else ""
    return outputs(result.model_uri, version)
