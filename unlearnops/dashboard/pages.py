"""The HTML pages (Jinja2, htmx): sign-in, queue, request, filing, runs, models, certificates, schedule.

Each page calls the same functions as the API (:mod:`.actions`, :mod:`.queue`, :mod:`.runs`, ...)
and renders ``templates/``. Forms post back with the CSRF token (``csrf_token``); htmx requests
send it as ``X-CSRF-Token`` (set once on ``<body hx-headers>``). Filters live in the URL's query.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..settings import get_settings
from .auth import SESSION_COOKIE, AuthError, Principal, from_token
from .deps import StoreDep, Viewer

router = APIRouter(include_in_schema=False)


def render(request: Request, template: str, who: Principal | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    """A page with the common context: who is signed in, their CSRF token, what they may do."""
    templates = request.app.state.templates
    return templates.TemplateResponse(request, template, {"who": who, "csrf": who.csrf_token if who else "",
                                                          **context}, status_code=status)


def _safe_next(target: str) -> str:
    """Only a local path (never //host or a scheme): no open redirect after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


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
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token.strip(), httponly=True, samesite="strict",
                        secure=get_settings().dashboard.cookie_secure, path="/")
    return response


@router.post("/logout")
def logout(who: Viewer) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(who: Viewer) -> Response:
    return RedirectResponse("/requests", status_code=303)
