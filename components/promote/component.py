"""KFP component of the promote step (a lightweight component importing the installed package)."""

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote_op(name: str, version: str, target: str = "local") -> str:
    """Make ``version`` the champion of ``name`` (compare-and-set on its parent); returns the alias URI."""
    from unlearnops.components.promote.promote import promote

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    return promote(name, version, target=target).uri
