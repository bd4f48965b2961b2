"""The REST API (``/api/v1``): requests, decisions, comments, runs, models, certificates, schedule,
and the DSAR integration a platform such as Fides, Transcend or Ketch forwards to.

Every route needs a credential (401 without), each state change a role (403 otherwise, see
:mod:`.auth`); the ledger's guards answer 409. Bodies are bounded pydantic models (422 names the
field); nothing is stored when validation fails. OpenAPI: ``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from ..ledger import DuplicateRequest
from ..types import MAX_TEXT, LegalBasis, RequestKind, RequestStatus
from . import callbacks, certs, registry, schedule
from .actions import (
    BulkForm,
    Decision,
    DecisionForm,
    FileForm,
    bulk,
    decide,
    file_request,
    request_view,
    visible,
)
from .auth import Action
from .deps import (
    Commenter,
    Decider,
    DefaultsDep,
    Filer,
    Promoter,
    Reader,
    Runner,
    Scheduler,
    StoreDep,
    Viewer,
)
from .queue import QueueFilter, queue_csv, queue_page
from .runs import get_run, list_runs, run_report, runnable_ids, trigger
from .timeline import add_comment, timeline

router = APIRouter(prefix="/api/v1")
MODEL_NAME = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")]
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


def _filters(status: list[RequestStatus] | None, regime: list[LegalBasis] | None,
             kind: list[RequestKind] | None, overdue: bool, q: str, unverified: bool,
             page: int) -> QueueFilter:
    return QueueFilter(status=status or [], regime=regime or [], kind=kind or [], overdue=overdue, q=q,
                       unverified=unverified, page=page)


@router.get("/me", tags=["auth"])
def me(who: Viewer) -> dict[str, Any]:
    """Who the credential is, its role and what it may do."""
    return {"name": who.name, "role": who.role.value, "via": who.via,
            "may": sorted(a.value for a in Action if who.can(a))}


# ---------------------------------------------------------------- requests
@router.get("/requests", tags=["requests"])
def list_requests(store: StoreDep, who: Viewer,
                  status: Annotated[list[RequestStatus] | None, Query()] = None,
                  regime: Annotated[list[LegalBasis] | None, Query()] = None,
                  kind: Annotated[list[RequestKind] | None, Query()] = None,
                  overdue: bool = False, q: Annotated[str, Query(max_length=128)] = "",
                  unverified: bool = False,
                  page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> dict[str, Any]:
    """The queue: soonest deadline first; unverified requests only with ``unverified=true``."""
    result = queue_page(store.ledger, _filters(status, regime, kind, overdue, q, unverified, page), who)
    return {"total": result.total, "page": result.page, "pages": result.pages,
            "items": [vars(r) for r in result.rows]}


@router.get("/requests.csv", tags=["requests"], response_class=StreamingResponse)
def export_requests(store: StoreDep, who: Viewer,
                    status: Annotated[list[RequestStatus] | None, Query()] = None,
                    regime: Annotated[list[LegalBasis] | None, Query()] = None,
                    kind: Annotated[list[RequestKind] | None, Query()] = None,
                    overdue: bool = False, q: Annotated[str, Query(max_length=128)] = "",
                    unverified: bool = False) -> StreamingResponse:
    """Every request matching the filters as CSV."""
    filters = _filters(status, regime, kind, overdue, q, unverified, 1)
    return StreamingResponse(queue_csv(store.ledger, filters, who), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="requests.csv"'})


@router.post("/requests", tags=["requests"], status_code=201)
def create_request(store: StoreDep, who: Filer, form: FileForm) -> dict[str, Any]:
    """File a request (status received); 422 names the wrong field and nothing is stored."""
    return request_view(file_request(store, form, who), who)


@router.get("/requests/{request_id}", tags=["requests"])
def read_request(store: StoreDep, who: Viewer, request_id: RequestId) -> dict[str, Any]:
    req = visible(store.ledger, request_id, who)
    return {**request_view(req, who), "certificate": certs.exists(req.id)}


@router.get("/requests/{request_id}/timeline", tags=["requests"])
def read_timeline(store: StoreDep, who: Viewer, request_id: RequestId) -> list[dict[str, Any]]:
    """Status changes, approvals, runs and comments, oldest first (requester: its visible parts)."""
    return [vars(e) for e in timeline(store, visible(store.ledger, request_id, who), who)]


@router.post("/requests/{request_id}/actions/{decision}", tags=["requests"])
def decide_request(store: StoreDep, who: Decider, request_id: RequestId, decision: Decision,
                   form: Annotated[DecisionForm, Body()] = DecisionForm()) -> dict[str, Any]:
    """verify, approve, deny (code + reason), hold (code), resume, cancel (reason), extend (reason)."""
    return request_view(decide(store, request_id, decision, form, who), who)


@router.post("/bulk", tags=["requests"])
def bulk_decide(store: StoreDep, who: Decider, form: BulkForm) -> dict[str, Any]:
    """One decision on many requests; each result says whether it applied and, if not, why."""
    results = bulk(store, form, who)
    return {"applied": sum(r["ok"] for r in results), "results": results}


class CommentForm(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    visibility: Literal["internal", "requester"] = "internal"


@router.post("/requests/{request_id}/comments", tags=["requests"], status_code=201)
def comment(store: StoreDep, who: Commenter, request_id: RequestId, form: CommentForm) -> dict[str, str]:
    """Comment on a request; a requester's comments are always visible to the requester."""
    visible(store.ledger, request_id, who)
    visibility = form.visibility if who.sees_all else "requester"
    add_comment(store, request_id, who.name, form.text, visibility)
    return {"request_id": request_id, "visibility": visibility}


# ---------------------------------------------------------------- runs
class RunForm(BaseModel):
    request_ids: list[RequestId] = Field(default_factory=list, max_length=1000)
    all_approved: bool = Field(False, description="run every approved request (ignores request_ids)")
    method: str = Field("", max_length=64, pattern=r"^[a-z0-9_]*$")
    params: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=50)


def _run_view(run: Any, with_report: bool = False) -> dict[str, Any]:
    out = {**vars(run), "steps": [vars(s) for s in run.steps], "failed_step": run.failed_step}
    if with_report:
        report = run_report(run)
        out["gates"] = [g.model_dump() | {"status": g.status} for g in report.verdict.gates] \
            if report is not None and report.verdict is not None else []
        out["plots"] = list(report.plots) if report is not None else []
    return out


@router.get("/runs", tags=["runs"])
def runs(store: StoreDep, who: Reader) -> list[dict[str, Any]]:
    return [_run_view(r) for r in list_runs(store)]


@router.post("/runs", tags=["runs"], status_code=202)
def start_run(store: StoreDep, who: Runner, defaults: DefaultsDep, form: RunForm) -> dict[str, Any]:
    """Queue a run of the selected (or all approved) requests; the worker starts it."""
    ids = runnable_ids(store.ledger) if form.all_approved else list(dict.fromkeys(form.request_ids))
    run = trigger(store, who.name, ids, defaults, method=form.method, params=form.params or None)
    store.record_action(who.name, "run", run.id, ",".join(ids))
    return _run_view(run)


@router.get("/runs/{run_id}", tags=["runs"])
def read_run(store: StoreDep, who: Reader, run_id: Annotated[str, Field(max_length=32)]) -> dict[str, Any]:
    run = get_run(store, run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r}")
    return _run_view(run, with_report=run.done)


@router.get("/runs/{run_id}/plots/{plot}", tags=["runs"], response_class=Response)
def run_plot(store: StoreDep, who: Reader, run_id: Annotated[str, Field(max_length=32)],
             plot: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+\.png$")]) -> Response:
    """A plot of the run's evaluation report (PNG)."""
    from .runs import report_plot

    run = get_run(store, run_id)
    data = report_plot(run, plot) if run is not None else None
    if data is None:
        raise LookupError(f"no plot {plot!r} for run {run_id!r}")
    return Response(data, media_type="image/png")


# ---------------------------------------------------------------- models
class PromoteForm(BaseModel):
    version: str = Field(min_length=1, max_length=16, pattern=r"^[0-9]+$")
    override_reason: str = Field("", max_length=MAX_TEXT)


class RollbackForm(BaseModel):
    override_reason: str = Field("", max_length=MAX_TEXT)


@router.get("/models/{name}", tags=["models"])
def model_versions(store: StoreDep, who: Reader, name: MODEL_NAME) -> list[dict[str, Any]]:
    """Versions newest first: aliases, gate verdict, requests completed, erased-data tag."""
    return [vars(v) for v in registry.versions(store.ledger, name)]


def _with_actor(reason: str, who: Any) -> str:
    return f"{reason.strip()} (by {who.name} via the dashboard)" if reason.strip() else ""


@router.post("/models/{name}/promote", tags=["models"])
def promote(store: StoreDep, who: Promoter, name: MODEL_NAME, form: PromoteForm) -> dict[str, str]:
    """Make a version champion: the promote step's guards (gate, parent, erased data)."""
    message = registry.promote_version(name, form.version, _with_actor(form.override_reason, who))
    store.record_action(who.name, "promote", f"{name}/{form.version}", form.override_reason)
    return {"message": message}


@router.post("/models/{name}/rollback", tags=["models"])
def rollback(store: StoreDep, who: Promoter, name: MODEL_NAME,
             form: Annotated[RollbackForm, Body()] = RollbackForm()) -> dict[str, str]:
    message = registry.rollback_model(name, _with_actor(form.override_reason, who))
    store.record_action(who.name, "rollback", name, form.override_reason)
    return {"message": message}


# ---------------------------------------------------------------- certificates
@router.get("/certificates", tags=["certificates"])
def list_certificates(store: StoreDep, who: Viewer) -> list[dict[str, Any]]:
    """Issued certificates, newest first (a requester: those of its own requests)."""
    own = None if who.sees_all else {r.id for r in store.ledger.page(filed_by=who.name, limit=10_000)[0]}
    return [vars(c) for c in certs.list_certificates(own)]


@router.get("/certificates/{request_id}", tags=["certificates"])
def download_certificate(store: StoreDep, who: Viewer, request_id: RequestId,
                         format: Literal["json", "html"] = "json",
                         edition: Literal["operator", "requester"] = "operator") -> Response:
    """The signed certificate (JSON) or its printable page (HTML); a requester gets its copy."""
    visible(store.ledger, request_id, who)
    edition = edition if who.sees_all else "requester"
    text = certs.read(request_id, edition, format)
    name = f"{request_id}-{edition}.{format}"
    if format == "html":
        return HTMLResponse(text, headers={"Content-Disposition": f'inline; filename="{name}"'})
    return Response(text, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/certificates/verify", tags=["certificates"])
def verify_certificate(who: Viewer, body: Annotated[dict[str, Any], Body(max_length=200)]) -> dict[str, Any]:
    """Verify a certificate document (the JSON as downloaded): digest, Ed25519 signature, key."""
    import json

    result = certs.check(json.dumps(body))
    return {"valid": result.ok, "message": result.message,
            "request_id": result.certificate.certificate.request.request_id if result.certificate else None}


@router.get("/certificates/{request_id}/verify", tags=["certificates"])
def verify_stored(store: StoreDep, who: Viewer, request_id: RequestId) -> dict[str, Any]:
    visible(store.ledger, request_id, who)
    result = certs.check(certs.read(request_id, "operator" if who.sees_all else "requester"), request_id)
    return {"valid": result.ok, "message": result.message, "request_id": request_id}


# ---------------------------------------------------------------- schedule
class ScheduleForm(BaseModel):
    cron: str = Field("", max_length=128, description="6-field cron (seconds first, UTC); '' turns it off")


@router.get("/schedule", tags=["schedule"])
def read_schedule(store: StoreDep, who: Viewer) -> dict[str, Any]:
    return vars(schedule.view(store))


@router.put("/schedule", tags=["schedule"])
def write_schedule(store: StoreDep, who: Scheduler, defaults: DefaultsDep,
                   form: ScheduleForm) -> dict[str, Any]:
    """Set the compliance batch's schedule (every pending request's expected completion follows;
    on a cluster, KFP's recurring run is replaced with it)."""
    result = schedule.set_schedule(store, form.cron, who.name, defaults)
    store.record_action(who.name, "schedule", "compliance-batch", form.cron)
    return vars(result)


# ---------------------------------------------------------------- DSAR integration
class DsarForm(FileForm):
    external_ref: str = Field(min_length=1, max_length=256,
                              description="the platform's reference (idempotency key)")
    callback_url: str | None = Field(None, max_length=callbacks.MAX_URL,
                                     description="where status changes are POSTed, signed (HMAC-SHA256)")


def _dsar_view(req: Any) -> dict[str, Any]:
    return {"request_id": req.id, "external_ref": req.external_ref, "status": req.status.value,
            "due_at": req.due_at, "expected_completion": req.expected_at,
            "certificate_available": certs.exists(req.id)}


@router.post("/dsar/requests", tags=["dsar"], status_code=201)
def dsar_create(store: StoreDep, who: Filer, form: DsarForm, response: Response) -> dict[str, Any]:
    """Create a request for an upstream DSAR; the same ``external_ref`` again returns the first (200)."""
    existing = store.ledger.by_external_ref(form.external_ref.strip())
    if existing is not None:
        if not who.sees_all and existing.filed_by != who.name:
            raise DuplicateRequest("this external_ref is already used by another filer's request")
        response.status_code = 200
        return _dsar_view(existing)
    req = FileForm.model_validate(form.model_dump(exclude={"callback_url"})).to_request()
    if form.callback_url:
        callbacks.register(store, req.id, form.callback_url)  # before filing: the first event is sent
    return _dsar_view(store.ledger.file(req, actor=who.name))


@router.get("/dsar/requests/{external_ref}", tags=["dsar"])
def dsar_status(store: StoreDep, who: Viewer,
                external_ref: Annotated[str, Field(min_length=1, max_length=256)]) -> dict[str, Any]:
    """Status and expected completion of the request filed for ``external_ref``."""
    req = store.ledger.by_external_ref(external_ref)
    if req is None or (not who.sees_all and req.filed_by != who.name):
        raise LookupError(f"no request for external_ref {external_ref!r}")
    return _dsar_view(req)


def error_body(message: str, status: int) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)
