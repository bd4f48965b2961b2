"""The documents that cross pipeline steps (pydantic models; JSON on storage).

Names follow ../shared/DESIGN.md: ForgetRequest, DataScope, UnlearnSpec, UnlearnResult,
EvalReport, GateVerdict, ModelRef, Certificate.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


class Doc(BaseModel):
    """Base for every cross-step document: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ requests
class RequestKind(enum.StrEnum):
    subject = "subject"
    document = "document"
    pattern = "pattern"
    examples = "examples"


class LegalBasis(enum.StrEnum):
    gdpr_art17 = "gdpr-art17"
    ccpa = "ccpa"
    copyright = "copyright"
    safety = "safety"
    other = "other"


class RequestStatus(enum.StrEnum):
    pending = "pending"
    scheduled = "scheduled"
    running = "running"
    unlearned = "unlearned"
    rejected = "rejected"
    failed = "failed"


#: Allowed status moves (pending → scheduled → running → unlearned | rejected | failed).
STATUS_MOVES: dict[RequestStatus, set[RequestStatus]] = {
    RequestStatus.pending: {RequestStatus.scheduled, RequestStatus.running, RequestStatus.rejected},
    RequestStatus.scheduled: {RequestStatus.running, RequestStatus.pending, RequestStatus.rejected},
    RequestStatus.running: {RequestStatus.unlearned, RequestStatus.rejected, RequestStatus.failed},
    RequestStatus.failed: {RequestStatus.pending, RequestStatus.scheduled, RequestStatus.running},
    RequestStatus.rejected: {RequestStatus.pending},
    RequestStatus.unlearned: set(),
}


class Selectors(Doc):
    """What a request points at; which fields apply depends on the request kind."""

    subject_ids: list[str] = Field(default_factory=list, description="data-subject ids (kind subject)")
    names: list[str] = Field(default_factory=list, description="name strings to find in free text")
    record_ids: list[str] = Field(default_factory=list, description="record ids (kind document)")
    content_sha256: list[str] = Field(default_factory=list, description="content hashes (kind document)")
    patterns: list[str] = Field(default_factory=list, description="regexes (kind pattern)")
    keywords: list[str] = Field(default_factory=list, description="literal keywords (kind pattern)")
    examples_uri: str | None = Field(None, description="URI of forget examples (kind examples)")


class StatusChange(Doc):
    at: datetime
    status: RequestStatus
    reason: str = ""
    actor: str = ""


class ForgetRequest(Doc):
    """A request to make the model forget something (GDPR Art. 17, CCPA, copyright, safety)."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    kind: RequestKind
    selectors: Selectors
    legal_basis: LegalBasis
    legal_basis_detail: str = ""
    requester: str = Field(min_length=1)
    received_at: datetime = Field(default_factory=utcnow)
    deadline: datetime | None = None
    status: RequestStatus = RequestStatus.pending
    history: list[StatusChange] = Field(default_factory=list)

    @model_validator(mode="after")
    def _selectors_match_kind(self) -> ForgetRequest:
        s = self.selectors
        needed = {
            RequestKind.subject: (s.subject_ids or s.names, "selectors.subject_ids or selectors.names"),
            RequestKind.document: (s.record_ids or s.content_sha256,
                                   "selectors.record_ids or selectors.content_sha256"),
            RequestKind.pattern: (s.patterns or s.keywords, "selectors.patterns or selectors.keywords"),
            RequestKind.examples: (s.examples_uri, "selectors.examples_uri"),
        }
        present, what = needed[self.kind]
        if not present:
            raise ValueError(f"a '{self.kind}' request needs {what}")
        if self.deadline and self.deadline.tzinfo and self.received_at.tzinfo \
                and self.deadline < self.received_at:
            raise ValueError("deadline is before received_at")
        return self


# ------------------------------------------------------------------ data scope
SCOPE_SETS: tuple[str, ...] = ("forget", "retain", "neighbor", "holdout", "paraphrase")


class SetInfo(Doc):
    file: str
    count: int
    sha256: str


class SourceShard(Doc):
    uri: str
    size: int
    etag: str


class ScopeManifest(Doc):
    """manifest.json of a DataScope folder: what was resolved from what."""

    request_ids: list[str]
    selectors: dict[str, Selectors]
    sets: dict[str, SetInfo]
    source: list[SourceShard]
    corpus_uri: str
    seed: int
    created_at: datetime = Field(default_factory=utcnow)
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """One digest for the whole scope: SHA-256 over the per-set digests in set order."""
        import hashlib

        joined = "".join(f"{name}:{self.sets[name].sha256};" for name in sorted(self.sets))
        return hashlib.sha256(joined.encode()).hexdigest()


# ------------------------------------------------------------------ unlearning
class ComputeSpec(Doc):
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    strategy: Literal["ddp", "fsdp"] = "ddp"
    cpus_per_worker: int = Field(1, ge=1)
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per worker")


class LoraSpec(Doc):
    r: int = Field(8, ge=1)
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    merge: bool = True


class UnlearnSpec(Doc):
    """What to run: method + hyper-parameters, which weights move, compute, seed."""

    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    trainable: list[str] = Field(default_factory=list, description="module-name regexes; empty = all")
    lora: LoraSpec | None = None
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    seed: int = 0


class UnlearnResult(Doc):
    model_uri: str
    training_uri: str
    method: str
    steps: int
    stopped_early: bool = False
    worker_seconds: float
    tokens: int
    wall_seconds: float
    parent: ModelRef | None = None


# ------------------------------------------------------------------ registry
class ModelRef(Doc):
    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


# ------------------------------------------------------------------ evaluation and gates
class GateResult(Doc):
    gate: str
    metric: str
    value: float | None
    threshold: str
    passed: bool
    reason: str


class GateVerdict(Doc):
    passed: bool
    gates: list[GateResult]

    @property
    def reasons(self) -> list[str]:
        return [g.reason for g in self.gates if not g.passed]


class Certificate(Doc):
    """Evidence that a registered model version no longer holds a request's data (no raw PII)."""

    request_id: str
    subject_hashes: list[str] = Field(default_factory=list)
    model: ModelRef
    scope_sha256: str
    verdict: GateVerdict
    evidence: dict[str, float] = Field(default_factory=dict)
    issued_at: datetime = Field(default_factory=utcnow)

    @field_validator("subject_hashes")
    @classmethod
    def _hashed(cls, values: list[str]) -> list[str]:
        for v in values:
            if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
                raise ValueError("subject_hashes must be SHA-256 hex digests, never raw ids")
        return values


UnlearnResult.model_rebuild()


# ------------------------------------------------------------------ evaluation report (evaluate step)
class EvalReport(Doc):
    """report.json of the evaluate step: flat dotted metrics per model, set sizes, the verdict.

    ``candidate``/``base``/``reference`` map metric names such as ``forget.rouge_l`` or
    ``privacy.mia_auc.min_k`` to values (None where a metric does not apply to that model).
    """

    model_uri: str
    base_uri: str
    reference_uri: str | None = None
    scope_uri: str
    scope_sha256: str
    candidate: dict[str, float | None]
    base: dict[str, float | None]
    reference: dict[str, float | None] | None = None
    counts: dict[str, int] = Field(default_factory=dict, description="examples per scored set")
    notes: list[str] = Field(default_factory=list)
    verdict: GateVerdict | None = None
    plots: list[str] = Field(default_factory=list, description="plot files relative to the report folder")
    seconds: dict[str, float] = Field(default_factory=dict)
    device: str = "cpu"
    created_at: datetime = Field(default_factory=utcnow)

    def value(self, metric: str, model: str = "candidate") -> float | None:
        values = getattr(self, model) or {}
        return values.get(metric)
