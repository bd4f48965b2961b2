"""Certificates of unlearning: list, download (JSON, printable HTML), verify.

They are the files :func:`unlearnops.certificates.issue` stored under
``STORAGE_ROOT/certificates/REQUEST/``: the operator copy (``certificate``) and the requester copy
(``requester-copy``, no internal URIs). A requester only ever gets the requester copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import storage
from ..certificates import CertificateError, SignedCertificate, certificates_root, verify

EDITIONS = {"operator": "certificate", "requester": "requester-copy"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class CertificateMissing(LookupError):
    pass


@dataclass
class CertSummary:
    request_id: str
    id: str
    issued_at: datetime
    outcome: str
    claim_level: str
    verified: bool
    problem: str
    superseded: bool = False  # an earlier certificate that a later one (e.g. "retrained") replaced


@dataclass
class Verification:
    ok: bool
    message: str
    certificate: SignedCertificate | None


def _uri(request_id: str, edition: str, ext: str) -> str:
    if not _REQUEST_ID.match(request_id) or request_id in (".", ".."):
        raise CertificateMissing(f"no certificate for {request_id!r}")
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {', '.join(EDITIONS)}")
    return storage.join(certificates_root(), request_id, f"{EDITIONS[edition]}.{ext}")


def claim_level(cert: SignedCertificate) -> str:
    return str(getattr(cert.certificate, "claim_level", "") or "unlearned")


def check(text: str | bytes, source: str = "certificate") -> Verification:
    """Verify a certificate's digest and signature; a failure is a result, not an exception."""
    try:
        cert = verify(text, source)
    except CertificateError as err:
        return Verification(False, str(err), None)
    return Verification(True, f"valid: digest and Ed25519 signature verify (key {cert.signature.key_id})",
                        cert)


def read(request_id: str, edition: str = "operator", ext: str = "json") -> str:
    """The stored certificate file; :class:`CertificateMissing` when it was not issued."""
    uri = _uri(request_id, edition, ext)
    try:
        return storage.read_text(uri)
    except (FileNotFoundError, storage.StorageError) as err:
        raise CertificateMissing(f"no certificate issued for request {request_id}") from err


def exists(request_id: str) -> bool:
    try:
        return storage.exists(_uri(request_id, "operator", "json"))
    except CertificateMissing:
        return False


def list_certificates(request_ids: set[str] | None = None) -> list[CertSummary]:
    """Every issued certificate (operator copies: current ones, and earlier ones kept under
    ``REQUEST/superseded/ID/``), newest first; only those of ``request_ids`` when given."""
    root = certificates_root().rstrip("/")
    out = []
    found = ([f for rid in sorted(request_ids) if _REQUEST_ID.match(rid) and rid not in (".", "..")
              for f in storage.list_files(storage.join(root, rid), suffixes=("certificate.json",))]
             if request_ids is not None and len(request_ids) <= 50 else
             storage.list_files(root, suffixes=("certificate.json",)))  # a few requests: their folders only
    for info in found:
        parts = info.uri[len(root):].strip("/").split("/")
        current = len(parts) == 2 and parts[1] == "certificate.json"
        earlier = len(parts) == 4 and parts[1] == "superseded" and parts[3] == "certificate.json"
        if not (current or earlier) or (request_ids is not None and parts[0] not in request_ids):
            continue
        result = check(storage.read_text(info.uri), parts[0])
        if result.certificate is not None:
            c = result.certificate.certificate
            out.append(CertSummary(parts[0], c.id, c.issued_at, c.request.outcome,
                                   claim_level(result.certificate), True, "", earlier))
        else:
            out.append(CertSummary(parts[0], "", datetime.min.replace(tzinfo=UTC), "", "", False,
                                   result.message, earlier))
    return sorted(out, key=lambda s: s.issued_at, reverse=True)
