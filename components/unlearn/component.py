"""KFP component of the unlearning step (a lightweight component importing the installed package)."""

from typing import NamedTuple

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def unlearn_op(scope_uri: str, model_uri: str, method: str, params: dict, out_uri: str, workers: int = 1,
               use_gpu: bool = False, seed: int = 0, stop_when: dict = {},  # noqa: B006 - KFP default
               ) -> NamedTuple("Outputs", [("model_uri", str), ("parent_version", str)]):  # noqa: F821
    """Unlearn the scope's forget set from ``model_uri`` on Ray Train; returns the model URI and the
    parent's registered version ("" when the base model is not a registry URI).

    Inside a Kubernetes pod the training runs as a KubeRay ``RayJob`` (components/unlearn/rayjob.py);
    elsewhere on the local Ray (``UNLEARNOPS_UNLEARN_BACKEND=local`` forces that in a pod too)."""
    from collections import namedtuple

    from unlearnops.components.unlearn.rayjob import run_as_rayjob, running_on_kubernetes
    from unlearnops.components.unlearn.runner import run_unlearning

    from unlearnops.settings import apply_runtime_env
    from unlearnops.types import UnlearnSpec

    apply_runtime_env()
    outputs = namedtuple("Outputs", ["model_uri", "parent_version"])
    if running_on_kubernetes():
        training = run_as_rayjob(scope_uri=scope_uri, model_uri=model_uri, method=method,
                                 params=dict(params or {}), out_uri=out_uri, workers=workers,
                                 use_gpu=use_gpu, seed=seed, stop_when=dict(stop_when or {}))
        return outputs(out_uri, training.parent.version or "" if training.parent else "")
    spec = UnlearnSpec(method=method, params=dict(params or {}), seed=seed,
                       compute={"workers": workers, "use_gpu": use_gpu})
    result = run_unlearning(spec, scope_uri, model_uri, out_uri, stop_when=dict(stop_when or {}))
    version = result.parent.version if result.parent and result.parent.version else ""
    return outputs(result.model_uri, version)
