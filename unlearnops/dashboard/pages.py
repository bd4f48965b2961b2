"""The HTML pages (Jinja2, htmx): sign-in, queue, request, filing, runs, models, certificates, schedule.

Each page calls the same functions as the API (:mod:`.actions`, :mod:`.queue`, :mod:`.runs`, and
the API's own route functions where those add a step such as the audit record) and renders
``templates/``. Forms post back with the CSRF token (``csrf_token``); htmx requests send it as
``X-CSRF-Token`` (set once on ``<body hx-headers>``). Filters live in the URL's query. What a role
may not do is hidden, and the dependencies (:mod:`.deps`) refuse it anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from ..ledger import LedgerError, StatusConflict
from ..settings import get_settings
from ..types import DENY_CODES, HOLD_CODES, LegalBasis, RequestKind, RequestStatus
from . import api, certs, registry, schedule
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
from .auth import SESSION_COOKIE, Action, AuthError, Principal, from_token
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
from .queue import queue_page
from .runs import get_run, list_runs, run_report, runnable_ids
from .timeline import timeline

router = APIRouter(include_in_schema=False)
SELECTOR_FIELDS = ("subject_ids", "names", "record_ids", "content_sha256", "patterns", "keywords")
MAX_UPLOAD = 200_000  # a certificate is a few KiB


def when(value: datetime | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM`` UTC ('' for none)."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


def day(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d")


def render(request: Request, template: str, who: Principal | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    """A page with the common context: who is signed in, their CSRF token, what they may do."""
    templates = request.app.state.templates
    templates.env.filters.update(when=when, day=day)
    return templates.TemplateResponse(request, template, {"who": who, "csrf": who.csrf_token if who else "",
                                                          "Action": Action, **context}, status_code=status)


def _safe_next(target: str) -> str:
    """Only a local path (never //host or a scheme): no open redirect after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _see(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", None, next=_safe_next(next), error="")


@router.post("/login")
def login(request: Request, store: StoreDep, token: Annotated[str, Form(max_length=256)],
          next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """Exchange an API token for an HttpOnly, SameSite=Strict session cookie."""
    try:
        from_token(store, token.strip())
    except AuthError:
        return render(request, "login.html", None, status=401, next=_safe_next(next),
                      error="That token is not valid (or was revoked). Ask an operator for one: "
                            "unlearnops dashboard token create --name YOU --role ROLE")
    response = _see(_safe_next(next))
    response.set_cookie(SESSION_COOKIE, token.strip(), httponly=True, samesite="strict",
                        secure=get_settings().dashboard.cookie_secure, path="/")
    return response


@router.post("/logout")
def logout(who: Viewer) -> Response:
    response = _see("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(who: Viewer) -> Response:
    return _see("/requests")


# ---------------------------------------------------------------- the queue
def _queue_context(request: Request, store: Any, who: Principal, status: list[RequestStatus] | None,
                   regime: list[LegalBasis] | None, kind: list[RequestKind] | None, overdue: bool, q: str,
                   unverified: bool, page: int) -> dict[str, Any]:
    filters = api._filters(status, regime, kind, overdue, q, unverified, page)
    result = queue_page(store.ledger, filters, who)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    return {"queue": result, "filters": filters, "query": urlencode(query),
            "statuses": list(RequestStatus), "regimes": list(LegalBasis), "kinds": list(RequestKind),
            "deny_codes": DENY_CODES, "hold_codes": HOLD_CODES}


@router.get("/requests", response_class=HTMLResponse)
def queue(request: Request, store: StoreDep, who: Viewer,
          status: Annotated[list[RequestStatus] | None, Query()] = None,
          regime: Annotated[list[LegalBasis] | None, Query()] = None,
          kind: Annotated[list[RequestKind] | None, Query()] = None,
          overdue: bool = False, q: Annotated[str, Query(max_length=128)] = "",
          unverified: bool = False, page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> HTMLResponse:
    """The queue: soonest deadline first, coloured by deadline, filters in the URL, bulk decisions."""
    return render(request, "queue.html", who, results=None,
                  **_queue_context(request, store, who, status, regime, kind, overdue, q, unverified, page))


@router.post("/requests/bulk", response_class=HTMLResponse)
def bulk_page(request: Request, store: StoreDep, who: Decider,
              action: Annotated[Decision, Form()], ids: Annotated[list[str] | None, Form()] = None,
              reason: Annotated[str, Form(max_length=4000)] = "",
              code: Annotated[str, Form(max_length=64)] = "", back: Annotated[str, Form(max_length=4000)] = ""
              ) -> HTMLResponse:
    """One decision on the ticked requests; the page lists what applied and why the rest did not."""
    if not ids:
        results: list[dict[str, Any]] = [{"id": "", "ok": False, "status": "",
                                          "error": "tick at least one request"}]
    else:
        results = bulk(store, BulkForm(ids=ids, action=action, reason=reason, code=code), who)
    return render(request, "bulk.html", who, results=results, action=action.value,
                  back=_safe_next("/requests" + ("?" + back if back else "")))


# ---------------------------------------------------------------- filing
def _file_fields(form: dict[str, str]) -> dict[str, Any]:
    """Form fields as FileForm input: one selector per line, an empty deadline left out."""
    data: dict[str, Any] = {k: v for k, v in form.items() if k not in SELECTOR_FIELDS and k != "csrf_token"}
    for key in SELECTOR_FIELDS:
        data[key] = [line.strip() for line in form.get(key, "").splitlines() if line.strip()]
    for key in ("deadline", "examples_uri"):
        if not data.get(key, "").strip():
            data.pop(key, None)
    return data


def _field_errors(err: ValidationError) -> dict[str, str]:
    """Each error under the form field it belongs to (a selector error under the kind's fields)."""
    out: dict[str, str] = {}
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ())]
        name = next((x for x in loc if x in SELECTOR_FIELDS), loc[0] if loc else "form")
        if name == "selectors":
            name = "subject_ids"
        message = str(e.get("msg", "")).removeprefix("Value error, ")
        out[name] = f"{out[name]}; {message}" if name in out else message
    return out


def _file_page(request: Request, who: Principal, values: dict[str, str], errors: dict[str, str],
               status: int = 200) -> HTMLResponse:
    return render(request, "file.html", who, status=status, values=values, errors=errors,
                  kinds=list(RequestKind), regimes=list(LegalBasis), selector_fields=SELECTOR_FIELDS)


@router.get("/requests/new", response_class=HTMLResponse)
def file_page(request: Request, who: Filer) -> HTMLResponse:
    return _file_page(request, who, {"requester": who.name}, {})


@router.post("/requests/new")
async def file_submit(request: Request, store: StoreDep, who: Filer) -> Response:
    """File the request; on a validation error re-render with the message next to the field."""
    raw = await request.form()
    values = {k: v for k, v in raw.items() if isinstance(v, str)}
    try:
        form = FileForm.model_validate(_file_fields(values))
        form.to_request()  # the request's own checks (selectors of its kind), before anything is stored
    except ValidationError as err:
        return _file_page(request, who, values, _field_errors(err), status=422)
    try:
        filed = file_request(store, form, who)
    except LedgerError as err:
        return _file_page(request, who, values, {"id": str(err)}, status=409)
    return _see(f"/requests/{filed.id}")


# ---------------------------------------------------------------- one request
def _request_page(request: Request, store: Any, who: Principal, request_id: str, error: str = "",
                  status: int = 200) -> HTMLResponse:
    req = visible(store.ledger, request_id, who)
    found = certs.list_certificates({req.id}) if certs.exists(req.id) else []
    return render(request, "request.html", who, status=status, req=request_view(req, who),
                  entries=timeline(store, req, who), certificates=found, error=error,
                  decisions=_decisions(req.status), deny_codes=DENY_CODES, hold_codes=HOLD_CODES)


def _decisions(status: RequestStatus) -> list[str]:
    """The decisions worth offering for a status (the ledger still decides what it allows)."""
    s = RequestStatus
    offered = {s.received: ["verify", "deny", "hold", "cancel", "extend"],
               s.verified: ["approve", "deny", "hold", "cancel", "extend"],
               s.approved: ["hold", "cancel", "extend"], s.scheduled: ["hold", "cancel", "extend"],
               s.on_hold: ["resume", "deny", "cancel", "extend"], s.failed: ["hold", "cancel", "extend"]}
    return offered.get(status, [])


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, store: StoreDep, who: Viewer,
                 request_id: Annotated[str, Path(max_length=128)]) -> HTMLResponse:
    """Details, the merged timeline, decisions, comments and the certificate(s)."""
    return _request_page(request, store, who, request_id)


@router.post("/requests/{request_id}/decide")
def decide_page(request: Request, store: StoreDep, who: Decider,
                request_id: Annotated[str, Path(max_length=128)], decision: Annotated[Decision, Form()],
                reason: Annotated[str, Form(max_length=4000)] = "",
                code: Annotated[str, Form(max_length=64)] = "") -> Response:
    try:
        decide(store, request_id, decision, DecisionForm(reason=reason, code=code), who)
    except (LedgerError, StatusConflict) as err:
        return _request_page(request, store, who, request_id, error=str(err), status=409)
    return _see(f"/requests/{request_id}")


@router.post("/requests/{request_id}/comments")
def comment_page(request: Request, store: StoreDep, who: Commenter,
                 request_id: Annotated[str, Path(max_length=128)],
                 text: Annotated[str, Form(max_length=4000)],
                 visibility: Annotated[str, Form(max_length=16)] = "internal") -> Response:
    try:
        form = api.CommentForm.model_validate({"text": text, "visibility": visibility})
        api.comment(store, who, request_id, form)
    except ValidationError as err:
        return _request_page(request, store, who, request_id, error=api_message(err), status=422)
    return _see(f"/requests/{request_id}#timeline")


def api_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())


# ---------------------------------------------------------------- runs
def _runs_context(store: Any) -> dict[str, Any]:
    runs = list_runs(store)
    return {"runs": runs, "live": any(not r.done for r in runs)}


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, store: StoreDep, who: Reader, defaults: DefaultsDep) -> HTMLResponse:
    """Trigger a run; every run with its per-step status, refreshed every 2 s while one is going."""
    return render(request, "runs.html", who, runnable=runnable_ids(store.ledger), defaults=defaults,
                  error="", **_runs_context(store))


@router.get("/runs/_list", response_class=HTMLResponse)
def runs_partial(request: Request, store: StoreDep, who: Reader) -> HTMLResponse:
    return render(request, "_runs_table.html", who, **_runs_context(store))


@router.post("/runs")
def trigger_page(request: Request, store: StoreDep, who: Runner, defaults: DefaultsDep,
                 request_ids: Annotated[list[str] | None, Form()] = None,
                 all_approved: Annotated[bool, Form()] = False,
                 method: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Queue a run (the API's route: same checks and audit record); to its page."""
    try:
        form = api.RunForm(request_ids=request_ids or [], all_approved=all_approved, method=method.strip())
        run = api.start_run(store, who, defaults, form)
    except (ValidationError, ValueError) as err:
        message = api_message(err) if isinstance(err, ValidationError) else str(err)
        return render(request, "runs.html", who, status=409 if not isinstance(err, ValidationError) else 422,
                      runnable=runnable_ids(store.ledger), defaults=defaults, error=message,
                      **_runs_context(store))
    return _see(f"/runs/{run['id']}")


def _run_context(store: Any, run_id: str) -> dict[str, Any]:
    run = get_run(store, run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r}")
    report = run_report(run) if run.run_root else None
    gates = report.verdict.gates if report is not None and report.verdict is not None else []
    plots = [p.removeprefix("plots/") for p in report.plots] if report is not None else []
    return {"run": run, "gates": gates, "plots": plots, "report": report}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, store: StoreDep, who: Reader,
             run_id: Annotated[str, Path(max_length=32)]) -> HTMLResponse:
    """Step timings, the gate table, the plots, the candidate version; live while running."""
    return render(request, "run.html", who, **_run_context(store, run_id))


@router.get("/runs/{run_id}/_body", response_class=HTMLResponse)
def run_partial(request: Request, store: StoreDep, who: Reader,
                run_id: Annotated[str, Path(max_length=32)]) -> HTMLResponse:
    return render(request, "_run_body.html", who, **_run_context(store, run_id))


# ---------------------------------------------------------------- models
def _models_page(request: Request, store: Any, who: Principal, name: str, message: str = "",
                 error: str = "", status: int = 200) -> HTMLResponse:
    return render(request, "models.html", who, status=status, name=name,
                  versions=registry.versions(store.ledger, name), message=message, error=error)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, store: StoreDep, who: Reader, defaults: DefaultsDep,
                name: Annotated[str, Query(max_length=256, pattern=r"^[A-Za-z0-9._-]*$")] = ""
                ) -> HTMLResponse:
    """The model's versions: aliases, gate, requests it satisfies, erased-data tag; promote / roll back."""
    return _models_page(request, store, who, name or defaults.model_name)


@router.post("/models/{name}/promote", response_class=HTMLResponse)
def promote_page(request: Request, store: StoreDep, who: Promoter, name: Annotated[str, Path(
                 max_length=256, pattern=r"^[A-Za-z0-9._-]+$")], version: Annotated[str, Form(max_length=16)],
                 override_reason: Annotated[str, Form(max_length=4000)] = "") -> HTMLResponse:
    try:
        form = api.PromoteForm(version=version, override_reason=override_reason)
        message = api.promote(store, who, name, form)["message"]
    except (ValidationError, registry.ModelActionError) as err:
        text = api_message(err) if isinstance(err, ValidationError) else str(err)
        return _models_page(request, store, who, name, error=text, status=getattr(err, "status", 422))
    return _models_page(request, store, who, name, message=message)


@router.post("/models/{name}/rollback", response_class=HTMLResponse)
def rollback_page(request: Request, store: StoreDep, who: Promoter, name: Annotated[str, Path(
                  max_length=256, pattern=r"^[A-Za-z0-9._-]+$")],
                  override_reason: Annotated[str, Form(max_length=4000)] = "") -> HTMLResponse:
    try:
        message = api.rollback(store, who, name, api.RollbackForm(override_reason=override_reason))["message"]
    except registry.ModelActionError as err:
        return _models_page(request, store, who, name, error=str(err), status=err.status)
    return _models_page(request, store, who, name, message=message)


# ---------------------------------------------------------------- certificates
def _certs_page(request: Request, store: Any, who: Principal, result: dict[str, Any] | None = None,
                status: int = 200) -> HTMLResponse:
    return render(request, "certificates.html", who, status=status,
                  certificates=api.list_certificates(store, who), result=result)


@router.get("/certificates", response_class=HTMLResponse)
def certificates_page(request: Request, store: StoreDep, who: Viewer,
                      verify: Annotated[str, Query(max_length=128, pattern=r"^[A-Za-z0-9._:-]*$")] = ""
                      ) -> HTMLResponse:
    """Issued certificates (a requester: its own); ``?verify=ID`` checks the stored one."""
    result = api.verify_stored(store, who, verify) if verify else None
    return _certs_page(request, store, who, result)


@router.post("/certificates/verify", response_class=HTMLResponse)
async def verify_page(request: Request, store: StoreDep, who: Viewer,
                      document: Annotated[str, Form(max_length=MAX_UPLOAD)] = "",
                      file: UploadFile | None = None) -> HTMLResponse:
    """Verify a pasted or uploaded certificate JSON (digest, Ed25519 signature, key)."""
    text = document.strip()
    if file is not None and file.filename:
        text = (await file.read(MAX_UPLOAD + 1)).decode("utf-8", errors="replace")
    if not text or len(text) > MAX_UPLOAD:
        missing = "paste or upload a certificate JSON (at most 200 kB)"
        return _certs_page(request, store, who, {"valid": False, "request_id": None, "message": missing},
                           status=400)
    checked = certs.check(text)
    rid = checked.certificate.certificate.request.request_id if checked.certificate else None
    result = {"valid": checked.ok, "message": checked.message, "request_id": rid}
    return _certs_page(request, store, who, result)


# ---------------------------------------------------------------- schedule
@router.get("/schedule", response_class=HTMLResponse)
def schedule_page(request: Request, store: StoreDep, who: Viewer) -> HTMLResponse:
    """The compliance batch's cron, its next run and how many requests it would take."""
    return render(request, "schedule.html", who, view=schedule.view(store), error="", value=None)


@router.post("/schedule", response_class=HTMLResponse)
def schedule_submit(request: Request, store: StoreDep, who: Scheduler, defaults: DefaultsDep,
                    cron: Annotated[str, Form(max_length=128)] = "") -> Response:
    try:
        api.write_schedule(store, who, defaults, api.ScheduleForm(cron=cron.strip()))
    except ValueError as err:
        return render(request, "schedule.html", who, status=400, view=schedule.view(store), error=str(err),
                      value=cron)
    return _see("/schedule")
