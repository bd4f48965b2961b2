"""KFP component of the scope step (a lightweight component importing the installed package)."""

from typing import Optional

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def resolve_scope_op(request_ids: list, corpus_uri: str, out_uri: str, allow_large_scope: bool = False,
                     retain_multiple: Optional[float] = None, seed: int = 0) -> str:  # noqa: UP045 - kfp reads Optional
    """Resolve the ledger's requests ``request_ids`` against ``corpus_uri``; returns the scope URI
    (``retain_multiple`` None: the ``scope_retain_multiple`` setting).

    Runs with ``parallel="auto"``: local worker processes (spawned, so safe in a task process that
    has imported torch) from 64 MiB of shards, Ray from 2 GiB."""
    from unlearnops.components.scope.resolve import resolve_scope

    from unlearnops.ledger import Ledger
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    ledger = Ledger()
    requests = [ledger.get(str(rid)) for rid in request_ids]
    resolve_scope(requests, corpus_uri, out_uri, retain_multiple=retain_multiple,
                  allow_large_scope=allow_large_scope, seed=seed)
    return out_uri
