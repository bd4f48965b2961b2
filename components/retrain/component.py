"""KFP component of the retrain step (a lightweight component importing the installed package)."""

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def retrain_op(foundation_uri: str, corpus_uri: str, recipe: dict, out_uri: str,
               request_ids: list = [], workers: int = 1, use_gpu: bool = False,  # noqa: B006 - KFP default
               local: bool = False) -> str:
    """Fine-tune ``foundation_uri`` with ``recipe`` on ``corpus_uri`` minus the suppression list (Ray
    Train; ``local`` runs the loop in the task's process); returns the retrained model's URI."""
    from unlearnops.components.register.lineage import check_recipe
    from unlearnops.components.retrain.retrain import retrain

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    result = retrain(foundation_uri, corpus_uri, out_uri, check_recipe(dict(recipe or {})),
                     request_ids=[str(r) for r in request_ids], local=local, workers=workers, use_gpu=use_gpu)
    return result.model_uri
