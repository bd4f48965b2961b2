"""What the API and the pages do to requests: file, read, decide (one or in bulk), comment.

Every change goes through the ledger as the authenticated actor, so the ledger's guards apply
(only approved requests run, the approver is never the filer, a denial or hold carries a reason
code, one extension with a reason) and every change is an audit event. A request is shown without
its raw selectors: counts and keyed-hash prefixes only, so no personal data leaves the ledger.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from ..keyed_hash import short
from ..ledger import GuardRefused, Ledger, RequestNotFound
from ..types import (
    DENY_CODES,
    HOLD_CODES,
    MAX_NAME,
    MAX_TEXT,
    ForgetRequest,
    LegalBasis,
    RequestKind,
    RequestStatus,
)
from .auth import Principal
from .queue import row_of
from .store import Store

S = RequestStatus
MAX_BULK = 500


class Decision(enum.StrEnum):
    verify = "verify"
    approve = "approve"
    deny = "deny"
    hold = "hold"
    resume = "resume"
    cancel = "cancel"
    extend = "extend"


class FileForm(BaseModel):
    """A new request as the form and the API take it (selectors as lists of strings)."""

    id: str = Field("", max_length=128, description="empty: one is generated")
    kind: RequestKind
    legal_basis: LegalBasis
    requester: str = Field(min_length=1, max_length=MAX_NAME)
    external_ref: str = Field("", max_length=MAX_NAME)
    legal_basis_detail: str = Field("", max_length=MAX_TEXT)
    deadline: datetime | None = None
    subject_ids: list[str] = Field(default_factory=list, max_length=1000)
    names: list[str] = Field(default_factory=list, max_length=1000)
    record_ids: list[str] = Field(default_factory=list, max_length=1000)
    content_sha256: list[str] = Field(default_factory=list, max_length=1000)
    patterns: list[str] = Field(default_factory=list, max_length=100)
    keywords: list[str] = Field(default_factory=list, max_length=1000)
    examples_uri: str | None = Field(None, max_length=2000)

    def to_request(self) -> ForgetRequest:
        """The ForgetRequest (pydantic ValidationError naming the field when something is wrong)."""
        selectors: dict[str, Any] = {k: [v.strip() for v in getattr(self, k) if v.strip()]
                                     for k in ("subject_ids", "names", "record_ids", "content_sha256",
                                               "patterns", "keywords")}
        if self.examples_uri:
            selectors["examples_uri"] = self.examples_uri.strip()
        data: dict[str, Any] = {
            "id": self.id.strip() or f"req-{uuid.uuid4().hex[:12]}", "kind": self.kind,
            "legal_basis": self.legal_basis, "requester": self.requester.strip(),
            "external_ref": self.external_ref.strip(), "legal_basis_detail": self.legal_basis_detail,
            "selectors": selectors}
        if self.deadline is not None:
            data["deadline"] = self.deadline
        return ForgetRequest.model_validate(data)


class DecisionForm(BaseModel):
    reason: str = Field("", max_length=MAX_TEXT)
    code: str = Field("", max_length=64)


class BulkForm(DecisionForm):
    ids: list[str] = Field(min_length=1, max_length=MAX_BULK)
    action: Decision


def visible(ledger: Ledger, request_id: str, who: Principal) -> ForgetRequest:
    """The request if ``who`` may see it; a requester sees only what it filed (else: not found)."""
    req = ledger.get(request_id)
    if not who.sees_all and req.filed_by != who.name:
        raise RequestNotFound(f"no request {request_id!r} visible to you")
    return req


def file_request(store: Store, form: FileForm, who: Principal) -> ForgetRequest:
    return store.ledger.file(form.to_request(), actor=who.name)


def decide(store: Store, request_id: str, decision: Decision, form: DecisionForm,
           who: Principal) -> ForgetRequest:
    """Apply one decision as ``who``; the ledger's guards refuse what is not allowed."""
    ledger, reason, code, actor = store.ledger, form.reason.strip(), form.code.strip(), who.name
    ledger.get(request_id)  # RequestNotFound first
    if decision == Decision.extend:
        return ledger.extend(request_id, reason, actor=actor)
    if decision == Decision.resume:
        return ledger.resume(request_id, reason, actor=actor)
    if decision == Decision.deny and code not in DENY_CODES:
        raise GuardRefused(f"a denial needs a reason code: one of {', '.join(DENY_CODES)}")
    if decision == Decision.hold and code not in HOLD_CODES:
        raise GuardRefused(f"a hold needs a reason code: one of {', '.join(HOLD_CODES)}")
    if decision == Decision.cancel and not reason:
        raise GuardRefused("a cancellation needs a reason")
    if decision == Decision.deny and not reason:
        raise GuardRefused("a denial needs a reason (it is told to the requester)")
    status = {Decision.verify: S.verified, Decision.approve: S.approved, Decision.deny: S.denied,
              Decision.hold: S.on_hold, Decision.cancel: S.cancelled}[decision]
    default = {Decision.verify: "identity verified", Decision.approve: "approved"}.get(decision, "")
    decided = ledger.set_status(request_id, status, reason or default, actor, code=code)
    if decision == Decision.approve:
        for hook in store.approval_hooks:
            hook()
    return decided


def bulk(store: Store, form: BulkForm, who: Principal) -> list[dict[str, Any]]:
    """Apply one decision to each request; each result says whether it was applied and why not."""
    from ..ledger import LedgerError, StatusConflict

    results: list[dict[str, Any]] = []
    for request_id in dict.fromkeys(form.ids):
        try:
            req = decide(store, request_id, form.action, form, who)
            results.append({"id": request_id, "ok": True, "status": req.status.value, "error": ""})
        except (LedgerError, StatusConflict, KeyError) as err:
            results.append({"id": request_id, "ok": False, "status": "", "error": str(err)})
    return results


def request_view(req: ForgetRequest, who: Principal) -> dict[str, Any]:
    """The request as the API shows it: no raw selectors (counts and hash prefixes); a requester
    gets its requester-visible fields only."""
    from ..types import utcnow

    row = row_of(req, utcnow())
    counts = {k: len(v) for k, v in req.selectors.model_dump().items() if isinstance(v, list) and v}
    view: dict[str, Any] = {
        "id": req.id, "kind": req.kind.value, "legal_basis": req.legal_basis.value,
        "status": req.status.value,
        "external_ref": req.external_ref, "received_at": req.received_at, "deadline": req.deadline,
        "due_at": req.due_at, "internal_due_at": row.internal_due_at, "days_left": row.days_left,
        "flag": row.flag, "extended": req.extended, "expected_completion": req.expected_at,
        "purged": req.purged}
    if who.sees_all:
        view.update({"requester": req.requester, "filed_by": req.filed_by, "duplicate_of": req.duplicate_of,
                     "legal_basis_detail": req.legal_basis_detail, "selector_counts": counts,
                     "selector_hashes": [short(h) for h in req.selector_hashes]})
    return view
