"""The dashboard's FastAPI application: routes, security headers, errors, background workers.

Errors are answered, never raised to the server: an unknown credential is 401, a role that may
not act 403, an unknown request 404, a guard of the ledger (self-approval, a move the lifecycle
does not allow, a second extension) 409, a malformed body 422 naming the field; bodies over
1 MiB are refused (413). Every page and answer carries a strict Content-Security-Policy (only
this origin's scripts and styles; no inline script), ``nosniff``, ``no-referrer`` and frame denial.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from ..ledger import (
    DuplicateRequest,
    GuardRefused,
    InvalidStatusMove,
    Ledger,
    RequestNotFound,
    StatusConflict,
)
from ..masking import mask_secrets
from ..settings import apply_runtime_env, get_settings
from .auth import AuthError, Forbidden
from .callbacks import CallbackRefused, Dispatcher
from .certs import CertificateMissing
from .registry import ModelActionError
from .runs import RunDefaults, RunRefused, RunWorker
from .schedule import Scheduler
from .store import Store

HERE = Path(__file__).parent
MAX_BODY = 1 << 20
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
log = logging.getLogger("unlearnops.dashboard")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (declared or streamed) with 413."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await PlainTextResponse("request body too large (limit 1 MiB)", 413)(scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await PlainTextResponse("request body too large (limit 1 MiB)", 413)(scope, receive, send)


class _TooLarge(Exception):
    pass


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _problem(request: Request, status: int, message: str) -> Response:
    """The error as JSON for the API, as a page for the browser (401 on a page: to the sign-in)."""
    message = mask_secrets(message)
    if _is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    if status == 401:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    templates: Jinja2Templates = request.app.state.templates
    try:
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": message},
                                          status_code=status)
    except Exception:  # noqa: BLE001 - no template yet: plain text
        return PlainTextResponse(f"{status}: {message}", status_code=status)


def _validation_message(err: RequestValidationError | ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{where or 'input'}: {str(e.get('msg', '')).removeprefix('Value error, ')}")
    return "; ".join(parts[:20])


ERRORS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthError, 401), (Forbidden, 403), (PermissionError, 403),
    (RequestNotFound, 404), (CertificateMissing, 404), (LookupError, 404),
    (GuardRefused, 409), (InvalidStatusMove, 409), (StatusConflict, 409), (DuplicateRequest, 409),
    (RunRefused, 409), (CallbackRefused, 422), (ValueError, 400),
)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        return _problem(request, 422, _validation_message(err))

    @app.exception_handler(ValidationError)
    async def _invalid_model(request: Request, err: ValidationError) -> Response:
        return _problem(request, 422, _validation_message(err))

    @app.exception_handler(ModelActionError)
    async def _model(request: Request, err: ModelActionError) -> Response:
        return _problem(request, err.status, str(err))

    for kind, status in ERRORS:
        def handler(request: Request, err: Exception, status: int = status) -> Response:
            return _problem(request, status, str(err))
        app.add_exception_handler(kind, handler)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> Response:
        log.error("unexpected error on %s: %s", request.url.path, mask_secrets(repr(err)))
        return _problem(request, 500, "internal error (logged); nothing was changed unless it says so")


def create_app(defaults: RunDefaults | None = None, *, ledger_url: str | None = None,
               workers: bool = True) -> FastAPI:
    """The dashboard app over the configured ledger. ``workers``: start the run worker, the
    in-process scheduler (embedded stack) and the callback dispatcher with the app."""
    apply_runtime_env()
    ledger = Ledger(ledger_url)
    store = Store(ledger)
    defaults = defaults or RunDefaults()
    background: list[Any] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if workers:
            background.append(RunWorker(store, defaults))
            if not get_settings().kfp_host:
                background.append(Scheduler(store, defaults))
            background.append(Dispatcher(store))
            for worker in background:
                worker.start()
        try:
            yield
        finally:
            for worker in background:
                worker.stop()
            ledger.close()

    app = FastAPI(title="unlearnops dashboard", version="1", lifespan=lifespan,
                  openapi_url="/api/openapi.json", docs_url=None, redoc_url=None,
                  description="File, approve, run, watch and prove machine-unlearning requests.")
    app.state.store, app.state.defaults, app.state.background = store, defaults, background
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    from .api import router as api_router
    from .pages import router as pages_router

    app.include_router(api_router)
    app.include_router(pages_router)
    _install_errors(app)

    @app.middleware("http")
    async def security_headers(request: Request,
                               call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.add_middleware(BodyLimit)  # type: ignore[arg-type]
    return app
