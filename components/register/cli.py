"""``unlearnops register``: log and register a model version with its lineage."""

from __future__ import annotations

import typer

from unlearnops.cli import EXIT_ERROR, app, fail


@app.command("register")
def register_cmd(
    model: str = typer.Option(..., "--model", help="model folder URI (path, file://, s3://, models:/...)"),
    name: str = typer.Option(..., "--name", help="registered model name"),
    report: str | None = typer.Option(None, "--report", help="the evaluate step's output folder"),
    scope: str | None = typer.Option(None, "--scope", help="the DataScope folder"),
    parent: str | None = typer.Option(None, "--parent", help="parent version (default: training.json's)"),
    request: list[str] = typer.Option([], "--request", help="forget request id this version satisfies"),
    gate: str | None = typer.Option(None, "--gate", help="passed|failed (default: the report's verdict)"),
) -> None:
    """Register MODEL as a new version of NAME (idempotent: the same candidate returns its version)."""
    from unlearnops import storage
    from unlearnops.modelio import ModelError

    from .register import RegistrationError, register_model

    try:
        ref = register_model(model, name, report_uri=report, scope_uri=scope, parent_version=parent,
                             request_ids=request, gate=gate)
    except (RegistrationError, ModelError) as err:
        raise fail(str(err)) from err
    except storage.StorageError as err:
        raise fail(str(err), EXIT_ERROR) from err
    typer.echo(f"registered {ref.name} version {ref.version} (models:/{ref.name}/{ref.version})")
