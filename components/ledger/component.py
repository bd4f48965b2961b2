"""KFP components that read and update the request ledger (status moves, idempotency, batches).

Each is a lightweight component on the project image (``install_kfp_package=False``); the logic
lives in :mod:`unlearnops.components.ledger.updates`. Side-effecting tasks turn caching off in
the pipelines. Settings (ledger URL, storage root, tracking URI) come from the environment.
"""

from typing import NamedTuple

from kfp import dsl
from unlearnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def check_already_unlearned_op(request_ids: list, model_name: str, run_root: str, run_id: str) -> NamedTuple(
    "Plan", already_unlearned=bool, unlearned_by=str, base_uri=str, scope_uri=str, model_uri=str,
    eval_uri=str,
):
    """Idempotency check + run plan: are all requests already completed (and by which version)?

    Otherwise: the champion to unlearn from (pinned as ``models:/NAME/VERSION``) and the run's
    output URIs under ``run_root/run_id``.
    """
    from collections import namedtuple

    from unlearnops.components.ledger import updates

    done, versions = updates.check_already_unlearned(list(request_ids))
    plan = updates.run_plan(run_root, run_id)
    base = "" if done else updates.resolve_champion(model_name)
    if done:
        print(f"requests {', '.join(request_ids)} already unlearned by {versions}; nothing to do")
    out = namedtuple("Plan", "already_unlearned unlearned_by base_uri scope_uri model_uri eval_uri")
    return out(done, versions, base, plan.scope_uri, plan.model_uri, plan.eval_uri)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def mark_running_op(request_ids: list, run_id: str) -> str:
    """approved/scheduled/failed → running for each request (completed ones are left alone).

    A request that is not approved makes this step fail: nothing runs unapproved.
    """
    from unlearnops.components.ledger import updates

    return ",".join(updates.mark_running(list(request_ids), run_id))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def mark_done_op(request_ids: list, model_name: str, version: str, run_id: str) -> str:
    """running → completed, recording ``models:/NAME/VERSION`` as the version that forgot them."""
    from unlearnops.components.ledger import updates

    return ",".join(updates.mark_done(list(request_ids), model_name, version, run_id))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def mark_failed_op(request_ids: list, reasons: str, run_id: str, model_name: str = "",
                   version: str = "") -> str:
    """running → failed with the gate reasons (and the rejected version registered for the record)."""
    from unlearnops.components.ledger import updates

    gate_reasons = [r for r in reasons.split("; ") if r]
    rejected = f"models:/{model_name}/{version}" if version else ""
    return ",".join(updates.mark_failed(list(request_ids), "the gates refused the candidate", run_id,
                                        code=updates.GATES_FAILED, gate_reasons=gate_reasons,
                                        model_uri=rejected))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def exit_mark_failed_op(run_root: str, run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Exit handler: requests this run left ``running`` are marked failed with the failing step and
    error; then, whatever the outcome, the run's working data is disposed of and the requests it
    completed are certified (:mod:`unlearnops.components.ledger.finish`).

    It depends on no other task (a KFP rule for exit tasks), so it finds the requests in the ledger:
    those still running whose last status change was made by this run.
    """
    from unlearnops.components.ledger import updates
    from unlearnops.components.ledger.finish import finish_run

    info = status if isinstance(status, dict) else vars(status)
    state = str(info.get("state") or "FAILED")
    error = info.get("error_message") or (info.get("error") or {}).get("message") or ""
    plan = updates.run_plan(run_root, run_id)
    moved: list[str] = []
    if state != "SUCCEEDED":
        reason = updates.exit_reason(state, plan, str(error))
        moved = updates.mark_failed(updates.running_by(run_id), reason, run_id)
        if moved:
            print(f"marked failed: {', '.join(moved)} ({reason})")
    done = finish_run(plan, run_id)  # every outcome: dispose of the working data, then certify
    for entry in done["disposition"].entries:
        if entry.action != "absent":
            print(f"disposition: {entry.what} {entry.action} ({entry.files} file(s))")
    for rid in done["certificates"]:
        print(f"certificate issued for {rid}")
    return ",".join(moved)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def pending_requests_op(cutoff: str = "", schedule_time: str = "") -> NamedTuple(
    "Pending", request_ids=list, count=int,
):
    """Approved requests up to the cutoff (default: the schedule time, else now), earliest deadline first."""
    from collections import namedtuple

    from unlearnops.components.ledger import updates

    ids = updates.pending_ids(cutoff, schedule_time)
    print(f"{len(ids)} approved request(s) to run: {', '.join(ids) or '-'}")
    return namedtuple("Pending", "request_ids count")(ids, len(ids))
