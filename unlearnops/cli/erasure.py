"""Erasure commands: ``certificate show|verify FILE``, ``corpus redact URI`` and ``dispose``.

``certificate verify`` checks the SHA-256 digest of the certificate's canonical JSON and its
Ed25519 signature, and says whether the signing key is this installation's; exit 0 valid, 1 not.
``dispose`` deletes the working data whose retention (``UNLEARNOPS_RETENTION_DAYS``) has ended.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import certificates, disposition, redact, storage
from . import EXIT_BAD_INPUT, EXIT_ERROR, app, fail

console = Console()
certificate_app = typer.Typer(no_args_is_help=True, help="Signed certificates of unlearning.")
corpus_app = typer.Typer(no_args_is_help=True, help="The training corpus: redact erased records.")
app.add_typer(certificate_app, name="certificate")
app.add_typer(corpus_app, name="corpus")

FileArg = Annotated[str, typer.Argument(metavar="FILE", help="certificate JSON (path, file:// or s3://)")]


def _read(path: str) -> bytes:
    try:
        return storage.read_bytes(path)
    except storage.StorageError as err:
        raise fail(str(err), EXIT_BAD_INPUT) from None


def _verified(path: str) -> certificates.SignedCertificate:
    try:
        return certificates.verify(_read(path), path)
    except certificates.CertificateError as err:
        raise fail(f"{err}; do not rely on this certificate", EXIT_ERROR) from None


@certificate_app.command("verify")
def verify_cmd(path: FileArg) -> None:
    """Check a certificate's digest and Ed25519 signature (exit 1 if either fails)."""
    cert = _verified(path)
    own = certificates.installation_key_id()
    whose = ("this installation's key" if own == cert.signature.key_id
             else "a key that is not this installation's (check it against the issuer's published key)")
    console.print(Text(f"valid: digest {cert.digest[:16]}… and Ed25519 signature by key "
                       f"{cert.signature.key_id} ({whose})"))


def _day(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


@certificate_app.command("show")
def show_cmd(path: FileArg) -> None:
    """Print a certificate (after verifying it)."""
    cert = _verified(path)
    c = cert.certificate
    table = Table(title=f"certificate {c.id} ({c.edition} copy)", show_header=False)
    r = c.request
    rows = [("request", r.request_id), ("external ref", r.external_ref or "-"), ("regime", r.regime),
            ("received / due / completed", " / ".join(_day(d) for d in (r.received_at, r.due_at,
                                                                         r.completed_at))),
            ("outcome", r.outcome), ("subject hashes", ", ".join(h[:12] for h in r.subject_hashes))]
    if c.scope:
        rows.append(("scope", f"{c.scope.manifest_sha256[:16]}… " + ", ".join(
            f"{k}={v}" for k, v in sorted(c.scope.counts.items()))))
    rows += [("model", f"{t.model}: v{t.version_before} → v{t.version_after}") for t in c.targets]
    if c.method:
        rows.append(("method", f"{c.method.objective} (params {c.method.params_sha256[:12]}, seed "
                               f"{c.method.seed}, {c.method.code_version})"))
    rows += [(f"gate {g.gate}", f"{g.metric} {g.value} {g.threshold}: {'pass' if g.passed else 'FAIL'}")
             for g in c.verification]
    rows += [(f"disposed {d.what}", f"{d.action} {_day(d.at)} ({d.files} files)") for d in c.disposition]
    rows += [("performer", c.performer), ("approver", c.approver), ("issued", _day(c.issued_at))]
    for key, value in rows:
        table.add_row(key, Text(str(value)))
    console.print(table)
    for limit in c.limitations:
        console.print(Text(f"limitation: {limit}"))


@app.command("dispose")
def dispose_cmd() -> None:
    """Delete retained working data (scope sets, checkpoints, model copies) whose retention has ended."""
    done = disposition.dispose_due()
    for entry in done:
        console.print(Text(f"deleted {entry.what}: {entry.uri} ({entry.files} files)"))
    console.print(f"{len(done)} location(s) disposed of")


@corpus_app.command("redact")
def redact_cmd(corpus: Annotated[str, typer.Argument(metavar="URI",
                                                     help="corpus folder (path or s3://)")]) -> None:
    """Write the corpus shards again without the records on the suppression list (atomic per shard)."""
    try:
        result = redact.redact_corpus(corpus)
    except (redact.RedactError, storage.StorageError) as err:
        raise fail(str(err), EXIT_BAD_INPUT) from None
    console.print(Text(f"{result.records_removed} erased record(s) removed from {result.shards_changed} of "
                       f"{result.shards_checked} shard(s)"))
    if result.record is not None:
        console.print(Text(f"old content: {', '.join(sorted({e.action for e in result.record.entries}))} "
                           f"(disposition record {result.record.run_id})"))
