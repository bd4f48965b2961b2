"""``unlearnops promote | rollback | models | serve``: move aliases, inspect versions, serve the champion."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from unlearnops.cli import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_GATE_FAILED, app, fail


@app.command("promote")
def promote_cmd(
    name: str = typer.Argument(..., help="registered model name"),
    version: str = typer.Argument(..., help="version to make champion"),
    target: str = typer.Option("local", "--target", help="local (the embedded server) or kserve"),
    out: str | None = typer.Option(None, "--out", help="kserve: where to write the InferenceService YAML"),
    canary: int | None = typer.Option(None, "--canary", help="kserve: canaryTrafficPercent"),
    no_parent_check: bool = typer.Option(False, "--no-parent-check",
                                         help="skip the compare-and-set on the parent version"),
    override_reason: str | None = typer.Option(
        None, "--override-reason", help="promote a version trained on erased data anyway (recorded)"),
    namespace: str | None = typer.Option(None, "--namespace",
                                         help="kserve: namespace of the InferenceService"),
    manifest_only: bool = typer.Option(False, "--manifest-only",
                                       help="kserve: only write the manifest; do not apply it or wait"),
    timeout: float = typer.Option(600.0, "--timeout", help="kserve: seconds to wait for Ready"),
) -> None:
    """Make VERSION the champion of NAME if the champion is still the version it was unlearned from.

    --target kserve: create or patch the InferenceService, wait until Ready, then move the alias.
    Exit 3 if VERSION failed its gates.
    """
    from .promote import PromotionConflict, PromotionError, PromotionGateFailed, PromotionRefused, promote

    try:
        ref = promote(name, version, target=target, out=out, canary_traffic_percent=canary,
                      expect_parent=not no_parent_check, override_reason=override_reason,
                      namespace=namespace, apply=not manifest_only, timeout_s=timeout)
    except PromotionGateFailed as err:
        raise fail(str(err), EXIT_GATE_FAILED) from err
    except PromotionRefused as err:
        raise fail(str(err), EXIT_BAD_INPUT) from err
    except PromotionConflict as err:
        raise fail(str(err), EXIT_ERROR) from err
    except PromotionError as err:
        raise fail(str(err), EXIT_ERROR) from err
    typer.echo(f"{ref.name}: champion is version {ref.version}")
    if target == "kserve":
        where = out or "the registry folder (tag unlearnops.kserve_manifest)"
        typer.echo(f"InferenceService written to {where}")


@app.command("rollback")
def rollback_cmd(
    name: str = typer.Argument(..., help="registered model name"),
    override_reason: str | None = typer.Option(
        None, "--override-reason", help="roll back to a version trained on erased data anyway (recorded)"),
    target: str = typer.Option("local", "--target", help="local or kserve (patch back the InferenceService)"),
    namespace: str | None = typer.Option(None, "--namespace",
                                         help="kserve: namespace of the InferenceService"),
    timeout: float = typer.Option(600.0, "--timeout", help="kserve: seconds to wait for Ready"),
) -> None:
    """Move champion back to the previous version (refused if it holds data erased since)."""
    from .promote import PromotionError, PromotionRefused, rollback

    try:
        ref = rollback(name, override_reason, target=target, namespace=namespace, timeout_s=timeout)
    except PromotionRefused as err:
        raise fail(str(err), EXIT_BAD_INPUT) from err
    except PromotionError as err:
        raise fail(str(err), EXIT_ERROR) from err
    typer.echo(f"{ref.name}: champion rolled back to version {ref.version}")


@app.command("models")
def models_cmd(
    name: str = typer.Argument(..., help="registered model name (or `dispose NAME`)"),
    dispose_name: str | None = typer.Argument(None, metavar="[NAME]", show_default=False),
) -> None:
    """List the versions of NAME; `models dispose NAME` deletes erased versions' artifacts.

    Dispose: the exported copy and MLflow artifacts of every version tagged ``erased_by`` whose
    retention window (UNLEARNOPS_RETENTION_DAYS) has passed, never a version behind an alias.
    """
    if name == "dispose" and dispose_name:
        return _dispose(dispose_name)
    from .promote import PromotionError, describe

    try:
        rows = describe(name)
    except PromotionError as err:
        raise fail(str(err), EXIT_ERROR) from err
    table = Table(title=f"models:/{name}")
    for col in ("version", "aliases", "gate", "parent", "method", "requests", "erased by"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["version"], ", ".join(row["aliases"]), row["gate"], row["parent"], row["method"],
                      ", ".join(row["requests"]), row.get("erased_by", ""))
    Console().print(table)


def _dispose(name: str) -> None:
    from .erasure import dispose_versions

    try:
        record = dispose_versions(name)
    except Exception as err:  # noqa: BLE001 - an unknown model or an unreachable registry
        raise fail(f"cannot dispose of {name}'s versions: {err}", EXIT_ERROR) from err
    done = sorted({e.uri for e in record.entries if e.action == "deleted"})
    typer.echo(f"{name}: deleted {len(done)} artifact location(s) of erased versions"
               + (f" (disposition record {record.run_id})" if done else ""))


@app.command("serve")
def serve_cmd(
    name: str = typer.Argument(..., help="registered model name"),
    alias: str = typer.Option("champion", "--alias"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    poll_seconds: float = typer.Option(2.0, "--poll-seconds", help="how often to re-read the alias"),
    webhook_secret: str | None = typer.Option(None, "--webhook-secret", envvar="UNLEARNOPS_WEBHOOK_SECRET",
                                              help="accept MLflow alias webhooks signed with this secret"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (default: torch's)"),
    max_batch: int = typer.Option(16, "--max-batch", help="most prompts joined into one generate batch "
                                                        "(1: batching off)"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="larger bodies get 413"),
    max_prompts: int = typer.Option(64, "--max-prompts", help="most prompts in one request"),
    max_queued_tokens: int = typer.Option(65536, "--max-queued-tokens",
                                          help="most tokens waiting; more get 429"),
    deadline: float = typer.Option(60.0, "--deadline", help="seconds a generation may run"),
    api_token: str | None = typer.Option(None, "--api-token", envvar="UNLEARNOPS_SERVE_TOKEN",
                                         help="require 'Authorization: Bearer TOKEN' on the completion "
                                              "endpoints"),
    docs: bool = typer.Option(False, "--docs", help="serve /openapi.json and a script-free /docs page"),
) -> None:
    """Serve models:/NAME@ALIAS over HTTP and follow the alias (polling, and MLflow webhooks)."""
    from unlearnops.serving import Limits, run_server

    if poll_seconds <= 0 or max_batch < 1:
        raise fail("--poll-seconds must be > 0 and --max-batch >= 1")
    if min(max_body_bytes, max_prompts, max_queued_tokens) < 1 or deadline <= 0:
        raise fail("--max-body-bytes, --max-prompts, --max-queued-tokens and --deadline must be > 0")
    limits = Limits(max_body_bytes=max_body_bytes, max_prompts=max_prompts,
                    max_queued_tokens=max_queued_tokens, deadline_s=deadline)
    run_server(name, alias, host=host, port=port, poll_seconds=poll_seconds, webhook_secret=webhook_secret,
               threads=threads, max_batch=max_batch, limits=limits, api_token=api_token, docs=docs)

