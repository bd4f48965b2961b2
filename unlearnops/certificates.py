"""Signed certificates of unlearning, one per request (after the NIST SP 800-88 certificate of sanitization).

A certificate says what was sanitised (the request, as keyed hashes and counts), the method and
tool (objective, hyper-parameter digest, code version, seed, run, hardware, duration), how it was
verified (every gate: metric, value, threshold, pass), what working data was disposed of, its
limitations, and who performed and approved it. It never claims that the data no longer exists in
the model: approximate unlearning is shown by the tests listed, not proven from the weights.

Claim levels: ``unlearned`` (approximate unlearning, the default) and ``retrained`` (the model was
retrained from its foundation without the erased data: exact unlearning, components/retrain/). A
retrained certificate references the earlier one it upgrades (``supersedes``: its id and digest);
the earlier one is kept under ``REQUEST/superseded/ID/``. The default claim level and an empty
reference are left out of the signed bytes, so certificates issued before claim levels existed
still verify.

The body is canonical JSON (sorted keys, no spaces); ``digest`` is its SHA-256 and ``signature``
an Ed25519 signature (RFC 8032, ``cryptography``) over the digest. The installation's key pair
lives under ``HOME/keys/`` (private key 0600); :func:`verify` checks the digest, the signature,
and whether the signing key is this installation's. Each certificate also has a printable HTML
rendering and a requester copy without internal URIs.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import platform
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from . import __version__, storage
from .settings import get_settings
from .types import Doc, GateResult, utcnow

SCHEMA_VERSION = "1"
KEY_FILE = Path("keys") / "certificate-ed25519.pem"
LIMITATIONS = (
    "Approximate unlearning: the model's behaviour on the request's data is shown by the tests "
    "listed under verification, not proven from the weights; it does not certify that the data "
    "no longer exists in the model.",
    "The tokenizer vocabulary is unchanged: name fragments may remain as tokens.",
    "General knowledge that is also in other data (retained, or public) may persist.",
    "The data layer (corpus redaction, suppression list) and older model versions are covered by "
    "their own records (disposition, erased_by tags), not by this model's tests.",
)

RETRAINED_LIMITATIONS = (
    "Exact unlearning by retraining: the model was fine-tuned again from its foundation checkpoint "
    "on the corpus without the erased records (suppression list); the records were not in its "
    "training data. The foundation checkpoint itself was not trained by this installation: "
    "anything it learned elsewhere (public data) is not covered.",
    "The tokenizer vocabulary is unchanged: name fragments may remain as tokens.",
    "The data layer (corpus redaction, suppression list) and older model versions are covered by "
    "their own records (disposition, erased_by and superseded tags), not by this model's tests.",
)
ClaimLevel = Literal["unlearned", "retrained"]
DEFAULT_CLAIM: ClaimLevel = "unlearned"


class CertificateError(ValueError):
    """A certificate file is unreadable, altered, or its signature does not verify."""


class CertRequest(Doc):
    request_id: str
    external_ref: str = ""
    regime: str
    received_at: datetime
    due_at: datetime | None
    completed_at: datetime | None
    subject_hashes: list[str] = Field(description="keyed hashes (HMAC-SHA256) of the selectors")
    outcome: str


class CertScope(Doc):
    manifest_sha256: str
    counts: dict[str, int]


class CertTarget(Doc):
    model: str
    version_before: str
    version_after: str
    weights_sha256_after: str = ""
    uri_after: str = ""


class CertMethod(Doc):
    objective: str
    params_sha256: str
    seed: int | None = None
    code_version: str
    run_id: str
    hardware: dict[str, Any] = Field(default_factory=dict)
    duration_seconds: float | None = None
    steps: int | None = None


class CertDisposal(Doc):
    what: str
    action: str
    at: datetime
    files: int
    digest: str
    uri: str = ""


class CertReference(Doc):
    """The earlier certificate a new one upgrades: its id, digest, claim level and issue time."""

    id: str
    digest: str
    claim_level: ClaimLevel
    issued_at: datetime


class CertificateBody(Doc):
    """What a certificate states (signed as canonical JSON)."""

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: str = SCHEMA_VERSION
    issued_at: datetime = Field(default_factory=utcnow)
    issuer: str = Field(default_factory=lambda: f"unlearnops {__version__} on {platform.node() or 'host'}")
    unlearnops_version: str = __version__
    edition: str = Field("operator", description="operator (full) or requester (no internal URIs)")
    request: CertRequest
    scope: CertScope | None = None
    targets: list[CertTarget] = Field(default_factory=list)
    method: CertMethod | None = None
    verification: list[GateResult] = Field(default_factory=list)
    disposition: list[CertDisposal] = Field(default_factory=list)
    limitations: list[str] = Field(default_factory=lambda: list(LIMITATIONS))
    performer: str
    approver: str
    claim_level: ClaimLevel = Field(DEFAULT_CLAIM, description="unlearned (approximate) or retrained (exact)")
    supersedes: CertReference | None = Field(None, description="the earlier certificate this one upgrades")


class Signature(Doc):
    algorithm: str = "Ed25519"
    key_id: str
    public_key: str = Field(description="raw public key, base64")
    value: str = Field(description="signature over the digest, base64")


class SignedCertificate(Doc):
    certificate: CertificateBody
    digest: str = Field(description="SHA-256 of the certificate's canonical JSON")
    signature: Signature


# ------------------------------------------------------------------ keys
def canonical(body: CertificateBody | dict[str, Any]) -> bytes:
    """The signed bytes: sorted-key compact JSON, without the default claim level and an empty
    ``supersedes`` (so a certificate from before claim levels has the same bytes as then)."""
    data = body.model_dump(mode="json") if isinstance(body, CertificateBody) else dict(body)
    if data.get("claim_level") == DEFAULT_CLAIM:
        del data["claim_level"]
    if "supersedes" in data and data["supersedes"] is None:
        del data["supersedes"]
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _key_path() -> Path:
    return get_settings().home.absolute() / KEY_FILE


def signing_key() -> Any:
    """The installation's Ed25519 private key (made once under HOME/keys, mode 0600)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = _key_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)  # first maker wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def installation_key_id() -> str | None:
    """This installation's signing key id (None if it has not signed anything yet)."""
    return key_id(_raw_public(signing_key().public_key())) if _key_path().is_file() else None


# ------------------------------------------------------------------ sign, verify
def sign(body: CertificateBody) -> SignedCertificate:
    key = signing_key()
    digest = hashlib.sha256(canonical(body)).hexdigest()
    public = _raw_public(key.public_key())
    return SignedCertificate(certificate=body, digest=digest, signature=Signature(
        key_id=key_id(public), public_key=base64.b64encode(public).decode(),
        value=base64.b64encode(key.sign(bytes.fromhex(digest))).decode()))


def parse(text: str | bytes, source: str = "certificate") -> SignedCertificate:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CertificateError(f"{source}: not a certificate (invalid JSON: {err})") from None
    try:
        return SignedCertificate.model_validate(raw)
    except Exception as err:  # pydantic ValidationError: a field changed or missing
        raise CertificateError(f"{source}: not a valid certificate document ({err})") from None


def verify(text: str | bytes, source: str = "certificate") -> SignedCertificate:
    """Check the digest and the Ed25519 signature; :class:`CertificateError` says what failed."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    cert = parse(text, source)
    raw = json.loads(text)["certificate"]  # the bytes as stored, not as re-serialised by the model
    digest = hashlib.sha256(canonical(raw)).hexdigest()
    if digest != cert.digest:
        raise CertificateError(f"{source}: the certificate's content does not match its digest "
                               "(it was altered after signing)")
    try:
        public = base64.b64decode(cert.signature.public_key, validate=True)
        if key_id(public) != cert.signature.key_id:
            raise CertificateError(f"{source}: the key id does not match the embedded public key")
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(cert.signature.value, validate=True), bytes.fromhex(cert.digest))
    except (InvalidSignature, ValueError) as err:
        raise CertificateError(f"{source}: the Ed25519 signature does not verify "
                               f"({type(err).__name__})") from None
    return cert


# ------------------------------------------------------------------ copies and renderings
def requester_copy(body: CertificateBody) -> CertificateBody:
    """The copy for the requester: no internal URIs, run ids or storage locations."""
    return body.model_copy(update={
        "id": f"{body.id}-requester", "edition": "requester",
        "targets": [t.model_copy(update={"uri_after": ""}) for t in body.targets],
        "method": body.method.model_copy(update={"run_id": "", "hardware": {}}) if body.method else None,
        "disposition": [d.model_copy(update={"uri": ""}) for d in body.disposition],
        "performer": body.performer.split(":", 1)[0],  # "pipeline", without the internal run id
    })


def render_html(cert: SignedCertificate) -> str:
    """A printable, self-contained HTML page (every value escaped)."""
    c = cert.certificate
    e = html.escape

    def rows(pairs: list[tuple[str, Any]]) -> str:
        return "".join(f"<tr><th>{e(k)}</th><td>{e('' if v is None else str(v))}</td></tr>" for k, v in pairs)

    def table(head: list[str], body: list[list[Any]]) -> str:
        cells = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in r) + "</tr>" for r in body)
        return f"<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{cells}</table>"

    r = c.request
    upgrade = (f"<p>Claim level {e(c.claim_level)}; supersedes certificate {e(c.supersedes.id)} "
               f"({e(c.supersedes.claim_level)}, issued {e(str(c.supersedes.issued_at))}, SHA-256 "
               f"<code>{e(c.supersedes.digest)}</code>)</p>") if c.supersedes else ""
    parts = [
        f"<h1>Certificate of unlearning</h1><p>{e(c.edition)} copy · id {e(c.id)} · claim level "
        f"{e(c.claim_level)}</p>{upgrade}",
        "<h2>Request</h2><table>" + rows([
            ("reference", r.request_id), ("external reference", r.external_ref), ("regime", r.regime),
            ("received", r.received_at), ("due", r.due_at), ("completed", r.completed_at),
            ("outcome", r.outcome),
            ("subject (keyed hashes)", ", ".join(h[:16] for h in r.subject_hashes))]) + "</table>",
    ]
    if c.scope:
        parts.append("<h2>Scope</h2><table>" + rows([("manifest digest", c.scope.manifest_sha256),
                                                     *c.scope.counts.items()]) + "</table>")
    if c.targets:
        parts.append("<h2>Targets</h2>" + table(["model", "before", "after", "weights digest"], [
            [t.model, t.version_before, t.version_after, t.weights_sha256_after] for t in c.targets]))
    if c.method:
        m = c.method
        parts.append("<h2>Method and tool</h2><table>" + rows([
            ("objective", m.objective), ("hyper-parameter digest", m.params_sha256), ("seed", m.seed),
            ("code version", m.code_version), ("run", m.run_id), ("duration (s)", m.duration_seconds),
            ("steps", m.steps), ("hardware", json.dumps(m.hardware, sort_keys=True))]) + "</table>")
    parts.append("<h2>Verification</h2>" + table(["gate", "metric", "value", "threshold", "result"], [
        [g.gate, g.metric, "-" if g.value is None else f"{g.value:.4g}", g.threshold,
         "skipped" if getattr(g, "skipped", False) else ("pass" if g.passed else "FAIL")]
        for g in c.verification]))
    parts.append("<h2>Disposition</h2>" + table(["what", "action", "when", "files", "digest"], [
        [d.what, d.action, d.at, d.files, d.digest[:16]] for d in c.disposition]))
    parts.append("<h2>Limitations</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in c.limitations) + "</ul>")
    people = [("performer", c.performer), ("approver", c.approver), ("issued", c.issued_at),
              ("issuer", c.issuer)]
    parts.append("<h2>People</h2><table>" + rows(people) + "</table>")
    parts.append(f"<h2>Signature</h2><p>Ed25519, key {e(cert.signature.key_id)}; SHA-256 of the canonical "
                 f"JSON: <code>{e(cert.digest)}</code>. Check it with <code>unlearnops certificate verify "
                 "FILE.json</code>.</p>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin-bottom:1em}td,th{border:1px solid #999;padding:.2em .5em;text-align:left}"
             "@media print{h2{page-break-after:avoid}}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Certificate {e(r.request_id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def certificates_root() -> str:
    return storage.join(get_settings().storage_root_uri, "certificates")


def read_issued(request_id: str) -> SignedCertificate | None:
    """The request's current operator certificate, verified (None when it has none)."""
    uri = storage.join(certificates_root(), request_id, "certificate.json")
    return verify(storage.read_bytes(uri), uri) if storage.exists(uri) else None


def retrained_body(earlier: SignedCertificate, *, targets: list[CertTarget], method: CertMethod,
                   verification: list[GateResult], performer: str, approver: str,
                   scope: CertScope | None = None) -> CertificateBody:
    """The ``retrained`` certificate of the earlier certificate's request, referencing it.

    Request, subject hashes and disposition are the earlier certificate's (the same erasure);
    targets, method and verification are the retrained model's."""
    old = earlier.certificate
    return CertificateBody(
        request=old.request, scope=scope or old.scope, targets=targets, method=method,
        verification=verification, disposition=old.disposition, limitations=list(RETRAINED_LIMITATIONS),
        performer=performer, approver=approver, claim_level="retrained",
        supersedes=CertReference(id=old.id, digest=earlier.digest, claim_level=old.claim_level,
                                 issued_at=old.issued_at))


def _keep_superseded(folder: str, body: CertificateBody) -> None:
    """Copy the current certificate files to ``superseded/<earlier id>/`` before they are replaced."""
    if body.supersedes is None:
        return
    for name in ("certificate", "requester-copy"):
        for ext in ("json", "html"):
            uri = storage.join(folder, f"{name}.{ext}")
            if storage.exists(uri):
                storage.write_bytes(storage.join(folder, "superseded", body.supersedes.id, f"{name}.{ext}"),
                                    storage.read_bytes(uri))


def issue(body: CertificateBody) -> dict[str, str]:
    """Sign and store the operator and requester copies (JSON + HTML); their URIs by name.

    A certificate that supersedes another keeps the earlier files under ``superseded/ID/``."""
    folder = storage.join(certificates_root(), body.request.request_id)
    _keep_superseded(folder, body)
    out: dict[str, str] = {}
    for name, doc in (("certificate", body), ("requester-copy", requester_copy(body))):
        signed = sign(doc)
        out[name] = storage.join(folder, f"{name}.json")
        storage.write_text(out[name], signed.model_dump_json(indent=2) + "\n")
        storage.write_text(storage.join(folder, f"{name}.html"), render_html(signed))
    return out
