"""The documents that cross pipeline steps (pydantic models; JSON on storage).

Each is read back through :mod:`unlearnops.documents`: ForgetRequest, DataScope, UnlearnSpec, UnlearnResult,
TrainingRecord (training.json), EvalReport, GateVerdict, ModelRef (the certificate lives in
:mod:`unlearnops.certificates`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)


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
    uk_gdpr = "uk-gdpr"
    ccpa = "ccpa"
    copyright = "copyright"
    safety = "safety"
    other = "other"


class RequestStatus(enum.StrEnum):
    """A request's lifecycle (after the DSAR platforms Fides, Transcend and OneTrust)."""

    received = "received"
    verified = "verified"
    approved = "approved"
    scheduled = "scheduled"
    running = "running"
    completed = "completed"
    denied = "denied"
    cancelled = "cancelled"
    failed = "failed"
    on_hold = "on-hold"


S_ = RequestStatus
#: Allowed status moves. ``failed`` is retried (back to approved/scheduled/running); ``on-hold``
#: returns to the status it was put on hold from (the ledger checks which). Final: completed,
#: denied, cancelled — the raw selectors are purged there.
STATUS_MOVES: dict[RequestStatus, set[RequestStatus]] = {
    S_.received: {S_.verified, S_.denied, S_.cancelled, S_.on_hold},
    S_.verified: {S_.approved, S_.denied, S_.cancelled, S_.on_hold},
    S_.approved: {S_.scheduled, S_.running, S_.cancelled, S_.on_hold},
    S_.scheduled: {S_.running, S_.approved, S_.cancelled, S_.on_hold},
    S_.running: {S_.completed, S_.failed},
    S_.failed: {S_.approved, S_.scheduled, S_.running, S_.denied, S_.cancelled},
    S_.on_hold: {S_.received, S_.verified, S_.approved, S_.scheduled, S_.denied, S_.cancelled},
    S_.completed: set(),
    S_.denied: set(),
    S_.cancelled: set(),
}
FINAL_STATUSES: frozenset[RequestStatus] = frozenset({S_.completed, S_.denied, S_.cancelled})
#: Reason codes a denial or a hold must carry.
DENY_CODES: tuple[str, ...] = ("identity-not-verified", "exemption", "manifestly-unfounded",
                               "duplicate", "no-data-found", "other")
HOLD_CODES: tuple[str, ...] = ("legal-hold", "needs-clarification", "internal-discussion")

#: Size limits of user text (characters): ids and names, free text, selector lists.
MAX_NAME, MAX_TEXT, MAX_ITEMS = 256, 4000, 10_000


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character; remove it")
    return value


Name = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_no_nul)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_no_nul)]


class Selectors(Doc):
    """What a request points at; which fields apply depends on the request kind."""

    subject_ids: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS,
                                    description="data-subject ids (kind subject)")
    names: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS,
                              description="name strings to find in free text")
    record_ids: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS,
                                   description="record ids (kind document)")
    content_sha256: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS,
                                       description="content hashes (kind document)")
    patterns: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS,
                                 description="regexes (kind pattern)")
    keywords: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS,
                                 description="literal keywords (kind pattern)")
    examples_uri: Text | None = Field(None, description="URI of forget examples (kind examples)")

    @field_validator("patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        """Every regex compiles with RE2 at filing (a bad one is refused with the regex error)."""
        from .patterns import compile_pattern

        for pattern in patterns:
            compile_pattern(pattern)  # PatternError is a ValueError: a validation error
        return patterns

    def is_empty(self) -> bool:
        return not any(self.model_dump().values())


class StatusChange(Doc):
    """One audit event of a request: a status move, a filing, an extension, a purge, an
    operator's override (e.g. of a gate verdict) or a claim upgrade (the status stays for both)."""

    at: datetime
    status: RequestStatus
    event: Literal["filed", "status", "extended", "purged", "scheduled", "override", "claim"] = "status"
    reason: str = ""
    code: str = Field("", description="reason code (denial, hold, or e.g. 'gates-failed')")
    actor: str = ""
    run_id: str = ""
    model_uri: str = Field("", description="models:/NAME/VERSION: the promoted (completed) or "
                                        "rejected (failed) candidate")
    gate_reasons: list[str] = Field(default_factory=list, description="failed gates of a gate failure")


def _aware(value: datetime | None) -> datetime | None:
    """UTC; a naive time is taken to be UTC (normalised at filing, so later reads never mix kinds)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ForgetRequest(Doc):
    """A request to make the model forget something (GDPR Art. 17, CCPA, copyright, safety).

    The ledger keeps ``selectors`` apart from the audit record and purges them at a final status;
    ``selector_hashes`` (keyed hashes) stay. ``due_at`` is the effective deadline the ledger
    computed from the regime (and ``deadline``, when an earlier one was asked for).
    """

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    kind: RequestKind
    selectors: Selectors
    legal_basis: LegalBasis
    legal_basis_detail: Text = ""
    requester: Name = Field(min_length=1)
    external_ref: Name = Field("", description="the upstream DSAR platform's reference")
    received_at: datetime = Field(default_factory=utcnow)
    deadline: datetime | None = None
    status: RequestStatus = RequestStatus.received
    history: list[StatusChange] = Field(default_factory=list)
    # set by the ledger
    filed_by: str = ""
    due_at: datetime | None = None
    extended: bool = False
    expected_at: datetime | None = Field(None, description="expected completion (the scheduled run)")
    duplicate_of: str = ""
    selector_hashes: list[str] = Field(default_factory=list)
    purged: bool = Field(False, description="raw selectors overwritten (final status reached)")

    @field_validator("received_at", "deadline", "due_at", "expected_at")
    @classmethod
    def _utc_times(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

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
        if not present and not self.purged:
            raise ValueError(f"a '{self.kind}' request needs {what}")
        if self.deadline and self.deadline < self.received_at:
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
    """manifest.json of a DataScope folder: what was resolved from what (no raw personal data).

    ``selector_hashes``: per request, the keyed hashes (HMAC-SHA256) of its selectors — the
    manifest is evidence and is logged with every registered version, so it never holds names.
    """

    request_ids: list[str]
    selector_hashes: dict[str, list[str]]
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


# ------------------------------------------------------------------ corpus and benchmark build
class CorpusManifest(Doc):
    """manifest.json of a corpus folder (``unlearnops data generate`` / ``data import``).

    ``counts`` holds at least ``train_records`` (records in the training shards); ``files`` maps
    each written file (relative path) to its record count and digest.
    """

    generator: str
    args: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int]
    files: dict[str, dict[str, Any]] = Field(default_factory=dict)
    requests: list[str] = Field(default_factory=list, description="request files (imported corpora)")


class BuildPart(Doc):
    """One model of a benchmark build: how well and how fast it was trained."""

    accuracy: float
    reached_target: bool
    steps: int
    extra_rounds: int
    records: int
    parameters: int
    seconds: float = Field(description="wall seconds of training this model")
    forget_accuracy: float | None = None


class BuildRecord(Doc):
    """build.json of ``unlearnops unlearn build-models``: the base and retain-only reference models.

    ``reference.seconds`` is a measured retraining without the forget set (the cost facet's
    gold-standard cost).
    """

    data_uri: str
    preset: str
    seed: int
    forget_share: float
    forget_subject_ids: list[str]
    recipe: dict[str, Any]
    tokenizer_vocab: int
    base: BuildPart
    reference: BuildPart
    seconds: float
    target_accuracy: float


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


class Stopping(Doc):
    """training.json ``stopping``: how the run stopped (an expert ``stop_when``, calibrated on the
    scope's holdout set by components/unlearn/calibrate.py, or the fixed steps) and which step's
    weights were kept and why (components/unlearn/runner.py ``kept_why``)."""

    mode: Literal["calibrated", "stop_when", "fixed steps"]
    stop_when: dict[str, Any] | None = None
    reason: str = ""
    holdout_level: float | None = None
    forget_level: float | None = None
    band: float | None = None
    kept_step: int | None = None
    last_step: int | None = None
    kept_why: str = ""


class TrainingRecord(Doc):
    """training.json of the unlearn step, beside the weights: what ran, what it cost, its curve and
    probes, how it stopped, and its lineage (base model, parent version, DataScope).

    Only ``method`` is required: fields a record does not hold are unknown (None/empty)."""

    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    world_size: int | None = None
    steps: int | None = None
    total_steps: int | None = None
    selected_step: int | None = None
    tokens: int | None = None
    worker_seconds: float | None = None
    wall_seconds: float | None = None
    compute_seconds: float | None = None
    peak_memory_mb: float | None = None
    curve: list[dict[str, Any]] = Field(default_factory=list, description="per step: loss, parts, lr, ...")
    probes: list[dict[str, Any]] = Field(default_factory=list, description="per probe: forget/retain prob")
    stopped_early: bool = False
    stop_when: dict[str, Any] | None = None
    stopping: Stopping | None = None
    device: str | None = None
    strategy: Literal["ddp", "fsdp"] | None = None
    backend: Literal["local", "ray"] | None = None
    train: dict[str, Any] = Field(default_factory=dict, description="the loop's TrainConfig")
    examples: dict[str, int] = Field(default_factory=dict, description="records per set and probe")
    run_name: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    parent: ModelRef | None = None
    base_model_uri: str | None = None
    resolved_base_uri: str | None = None
    scope_uri: str | None = None
    scope_sha256: str | None = None
    request_ids: list[str] = Field(default_factory=list)


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
    skipped: bool = False  # not checked (its condition unmet or the metric not run); never "pass"

    @property
    def status(self) -> str:
        """"pass", "FAIL" or "skipped" — what a table shows."""
        return "skipped" if self.skipped else ("pass" if self.passed else "FAIL")


class GateVerdict(Doc):
    passed: bool
    gates: list[GateResult]

    @property
    def reasons(self) -> list[str]:
        return [g.reason for g in self.gates if not g.passed]


UnlearnResult.model_rebuild()
TrainingRecord.model_rebuild()


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
