"""Who is asking: API tokens with roles, an optional trusted proxy header, and CSRF protection.

Roles (:data:`GRANTS`): a *viewer* reads everything (staff, read only); a *requester* (a person
or a DSAR platform's integration) files requests and sees only the requests it filed, in their
requester-visible form; an *approver* also verifies, approves, denies, holds, extends and
comments; an *operator* also triggers runs, promotes, rolls back and edits the schedule. The
ledger's own guards still apply to everyone (the approver is never the filer).

A token is 32 random bytes (URL-safe base64), shown once by ``unlearnops dashboard token
create``; only its SHA-256 is stored. Requests carry it as ``Authorization: Bearer TOKEN``; the
browser pages keep it in an HttpOnly, SameSite=Strict session cookie. A form or htmx request made
with the cookie must carry the CSRF token (``csrf_token`` field or ``X-CSRF-Token`` header):
HMAC-SHA256 of the session under the installation's secret, so no server-side session exists.
With ``dashboard.proxy_user_header`` set, an authenticating proxy in front (OIDC) names the user
and ``dashboard.proxy_role_header`` the role; off by default, since anyone could send the header.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from ..keyed_hash import installation_secret
from ..settings import get_settings
from .store import Store, now_naive, tokens_table

SESSION_COOKIE = "unlearnops_session"
CSRF_FIELD, CSRF_HEADER = "csrf_token", "X-CSRF-Token"


class Role(enum.StrEnum):
    viewer = "viewer"
    requester = "requester"
    approver = "approver"
    operator = "operator"


class Action(enum.StrEnum):
    read = "read"  # every request, run, model and certificate
    read_own = "read-own"  # the requests one filed, requester-visible parts only
    file = "file"
    comment = "comment"
    decide = "decide"  # verify, approve, deny, hold, resume, extend
    run = "run"
    promote = "promote"
    schedule = "schedule"


_STAFF = {Action.read, Action.read_own, Action.file, Action.comment}
GRANTS: dict[Role, frozenset[Action]] = {
    Role.viewer: frozenset({Action.read, Action.read_own}),
    Role.requester: frozenset({Action.read_own, Action.file, Action.comment}),
    Role.approver: frozenset(_STAFF | {Action.decide}),
    Role.operator: frozenset(_STAFF | {Action.decide, Action.run, Action.promote, Action.schedule}),
}


class AuthError(Exception):
    """401: no or an unknown credential."""


class Forbidden(Exception):
    """403: the credential's role does not allow the action, or the CSRF token is missing."""


@dataclass(frozen=True)
class Principal:
    """An authenticated user: the actor name recorded in the audit trail, and a role."""

    name: str
    role: Role
    via: str  # token | proxy
    session: str  # the session secret's digest (token) or the proxy user: what CSRF tokens bind to

    def can(self, action: Action) -> bool:
        return action in GRANTS[self.role]

    @property
    def sees_all(self) -> bool:
        """False for a requester: only its own requests, requester-visible parts."""
        return self.can(Action.read)

    @property
    def csrf_token(self) -> str:
        key = hashlib.sha256(b"unlearnops-dashboard-csrf" + installation_secret()).digest()
        return hmac.new(key, self.session.encode(), hashlib.sha256).hexdigest()[:40]


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    created_at: str
    created_by: str
    revoked: bool


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except KeyError:
        raise ValueError(f"unknown role {value!r}; use one of {', '.join(r.value for r in Role)}") from None


def create_token(store: Store, name: str, role: Role, created_by: str) -> tuple[str, TokenInfo]:
    """A new token for ``name`` (the actor its actions are recorded as); the token is returned once."""
    name = name.strip()
    if not name or len(name) > 256 or any(c in name for c in "\x00\r\n"):
        raise ValueError("a token needs a name of 1-256 characters on one line (recorded as the actor)")
    token = secrets.token_urlsafe(32)
    token_id = uuid.uuid4().hex[:12]
    at = now_naive()
    store.execute(insert(tokens_table).values(id=token_id, name=name, role=role.value,
                                              token_sha256=_digest(token), created_at=at,
                                              created_by=created_by, revoked_at=None))
    return token, TokenInfo(token_id, name, role, at.isoformat(), created_by, False)



def list_tokens(store: Store) -> list[TokenInfo]:
    rows = store.rows(select(tokens_table).order_by(tokens_table.c.created_at))
    return [TokenInfo(r.id, r.name, Role(r.role), r.created_at.isoformat(), r.created_by,
                      r.revoked_at is not None) for r in rows]


def revoke_token(store: Store, token_id: str) -> bool:
    """Revoke a token by its public id; False when there is no such live token."""
    found = store.one(select(tokens_table.c.id).where(tokens_table.c.id == token_id,
                                                      tokens_table.c.revoked_at.is_(None)))
    if found is None:
        return False
    store.execute(update(tokens_table).where(tokens_table.c.id == token_id).values(revoked_at=now_naive()))
    return True


def from_token(store: Store, token: str) -> Principal:
    """The principal of a bearer or session token; :class:`AuthError` when unknown or revoked."""
    if not token or len(token) > 256:
        raise AuthError("invalid token")
    digest = _digest(token)
    row = store.one(select(tokens_table).where(tokens_table.c.token_sha256 == digest))
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or revoked token")
    return Principal(row.name, Role(row.role), "token", digest)


def from_proxy(headers: dict[str, str]) -> Principal | None:
    """The principal named by the trusted proxy headers, when that mode is on and they are present."""
    config = get_settings().dashboard
    if not config.proxy_user_header:
        return None
    user = headers.get(config.proxy_user_header.lower(), "").strip()
    if not user or len(user) > 256:
        return None
    role = Role.viewer
    if config.proxy_role_header:
        try:
            role = parse_role(headers.get(config.proxy_role_header.lower(), "viewer") or "viewer")
        except ValueError:
            role = Role.viewer
    return Principal(user, role, "proxy", f"proxy:{user}")


def check_csrf(principal: Principal, supplied: str | None) -> None:
    """Raise :class:`Forbidden` unless ``supplied`` is the principal's CSRF token."""
    if not supplied or not hmac.compare_digest(supplied, principal.csrf_token):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")
