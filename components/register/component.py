"""KFP component of the register step (a lightweight component importing the installed package)."""

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_op(model_uri: str, name: str, report_uri: str = "", scope_uri: str = "", gate: str = "",
                request_ids: list = [], kfp_run_id: str = "") -> str:  # noqa: B006 - KFP default
    """Register ``model_uri`` as a version of ``name`` with its lineage; returns the version number."""
    from unlearnops.components.register.register import register_model

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    ref = register_model(model_uri, name, report_uri=report_uri or None, scope_uri=scope_uri or None,
                         request_ids=[str(r) for r in request_ids], gate=gate or None,
                         kfp_run_id=kfp_run_id or None)
    return str(ref.version)
