"""KFP component of the retrain step (a lightweight component importing the installed package)."""

from typing import NamedTuple

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def retrain_op(foundation_uri: str, corpus_uri: str, recipe: str, out_uri: str,
               request_ids: list = [], replaces: str = "", workers: int = 1,  # noqa: B006 - KFP default
               use_gpu: bool = False, local: bool = False) -> str:
    """Fine-tune ``foundation_uri`` with ``recipe`` (JSON/YAML text: objective, params, seed) on
    ``corpus_uri`` minus the suppression list (Ray Train; ``local`` runs the loop in the task's
    process); ``replaces`` is the champion it is to replace (``models:/NAME/VERSION``, recorded as its
    parent); returns the retrained model's URI.

    Inside a Kubernetes pod (and not ``local``) the training runs as a KubeRay ``RayJob``, like the
    unlearn step's (``UNLEARNOPS_UNLEARN_BACKEND=local`` keeps it in the pod's own Ray)."""
    import yaml
    from unlearnops.components.register.lineage import check_recipe
    from unlearnops.components.retrain.retrain import retrain, retrain_as_rayjob
    from unlearnops.components.unlearn.rayjob import running_on_kubernetes

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    raw = yaml.safe_load(recipe) if recipe.strip() else {}
    if not isinstance(raw, dict):
        raise ValueError("recipe: a JSON object with objective, params, seed")
    found, ids = check_recipe(raw, "recipe"), [str(r) for r in request_ids]
    if running_on_kubernetes() and not local:
        return retrain_as_rayjob(foundation_uri, corpus_uri, out_uri, found, request_ids=ids,
                                 replaces=replaces, workers=workers, use_gpu=use_gpu).model_uri
    result = retrain(foundation_uri, corpus_uri, out_uri, found, request_ids=ids, replaces=replaces,
                     local=local, workers=workers, use_gpu=use_gpu)
    return result.model_uri


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def retrain_plan_op(model_name: str, corpus_uri: str, run_root: str, run_id: str) -> NamedTuple(  # noqa: UP014
        "RetrainPlan", [("request_ids", list), ("count", int), ("champion_uri", str), ("scope_uri", str),
                        ("model_uri", str), ("eval_uri", str)]):
    """The requests the retraining covers (completed by a version of ``model_name``), the champion it
    is to replace, and the evaluation scope (forget = every erased record), written before redaction."""
    from collections import namedtuple

    from unlearnops.components.ledger.updates import resolve_champion, run_plan
    from unlearnops.components.retrain.plan import covered_requests, evaluation_scope

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    plan = run_plan(run_root, run_id)
    ids = covered_requests(model_name)
    forget = evaluation_scope(corpus_uri, plan.scope_uri, run_id) if ids else 0
    print(f"{len(ids)} completed request(s) covered: {', '.join(ids) or '-'}; {forget} erased record(s)")
    outputs = namedtuple("RetrainPlan", "request_ids count champion_uri scope_uri model_uri eval_uri")
    return outputs(ids, len(ids) if forget else 0, resolve_champion(model_name), plan.scope_uri,
                   plan.model_uri, plan.eval_uri)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def redact_op(corpus_uri: str, enabled: bool = True) -> int:
    """``corpus redact``: write the corpus shards again without the suppressed records; records removed."""
    from unlearnops.redact import redact_corpus
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    if not enabled:
        print("corpus redaction off: the suppression list alone keeps erased records out of training")
        return 0
    result = redact_corpus(corpus_uri)
    print(f"corpus redact: {result.records_removed} record(s) removed from {result.shards_changed} shard(s)")
    return result.records_removed


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compare_op(approximate_uri: str, exact_uri: str, scope_uri: str, out_uri: str, model_name: str,
               request_ids: list) -> str:
    """Approximate champion vs retrained model (forget quality against the true retrain, utility
    difference, answer agreement, cost); returns the URI of approx-vs-exact.json."""
    from unlearnops.components.retrain.compare import JSON_FILE, compare
    from unlearnops.components.retrain.plan import approximate_trainings

    from unlearnops.settings import apply_runtime_env
    from unlearnops.storage import join

    apply_runtime_env()
    doc = compare(approximate_uri, exact_uri, scope_uri, out_uri,
                  approximate_trainings(model_name, [str(r) for r in request_ids]))
    print(f"approximate vs exact: forget quality {doc.forget_quality}, agreement {doc.agreement}")
    return join(out_uri, JSON_FILE)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finish_retrain_op(model_name: str, version: str, request_ids: list, run_id: str,
                      previous_uri: str = "", eval_uri: str = "") -> str:
    """Tag every older version superseded; issue each covered request's ``retrained`` certificate."""
    from unlearnops.components.retrain.plan import finish_retrain

    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    previous = previous_uri.rsplit("/", 1)[-1] if previous_uri else ""
    done = finish_retrain(model_name, version, [str(r) for r in request_ids], run_id, previous, eval_uri)
    print(f"superseded: {', '.join(done['superseded']) or '-'}; retrained certificates: "
          f"{', '.join(done['certificates']) or '-'}")
    return ",".join(done["certificates"])
