"""FastAPI dependencies shared by the API and the pages: the store, who is asking, what they may do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Action,
    AuthError,
    Forbidden,
    Principal,
    check_csrf,
    from_proxy,
    from_token,
)
from .runs import RunDefaults
from .store import Store

bearer = HTTPBearer(auto_error=False, description="an API token from `unlearnops dashboard token create`")
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_defaults(request: Request) -> RunDefaults:
    defaults: RunDefaults = request.app.state.defaults
    return defaults


async def current_principal(request: Request,
                            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                            store: Annotated[Store, Depends(get_store)]) -> Principal:
    """The caller: bearer token, else the trusted proxy header (when on), else the session cookie.

    A state-changing request authenticated by the cookie must carry the CSRF token."""
    if credentials is not None:
        return from_token(store, credentials.credentials)
    proxied = from_proxy({k.lower(): v for k, v in request.headers.items()})
    cookie = request.cookies.get(SESSION_COOKIE)
    who = proxied or (from_token(store, cookie) if cookie else None)
    if who is None:
        raise AuthError("sign in: send 'Authorization: Bearer TOKEN' (unlearnops dashboard token create)")
    if request.method in UNSAFE:
        supplied = request.headers.get(CSRF_HEADER)
        if supplied is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            supplied = value if isinstance(value, str) else None
        check_csrf(who, supplied)
    return who


def need(action: Action) -> Callable[..., Any]:
    """A dependency that lets only principals allowed ``action`` through (403 otherwise)."""
    def dependency(who: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not who.can(action):
            raise Forbidden(f"the {who.role.value} role may not {action.value}; ask an operator for a token "
                            "with the right role")
        return who

    return dependency


StoreDep = Annotated[Store, Depends(get_store)]
DefaultsDep = Annotated[RunDefaults, Depends(get_defaults)]
Viewer = Annotated[Principal, Depends(current_principal)]
Filer = Annotated[Principal, Depends(need(Action.file))]
Commenter = Annotated[Principal, Depends(need(Action.comment))]
Decider = Annotated[Principal, Depends(need(Action.decide))]
Runner = Annotated[Principal, Depends(need(Action.run))]
Promoter = Annotated[Principal, Depends(need(Action.promote))]
Scheduler = Annotated[Principal, Depends(need(Action.schedule))]
Reader = Annotated[Principal, Depends(need(Action.read))]
