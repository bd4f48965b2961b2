"""``unlearnops register``: log and register a model version with its lineage."""

from __future__ import annotations

import typer

from unlearnops.cli import EXIT_ERROR, app, fail
from unlearnops.cli.params import absolute_uri


@app.command("register")
def register_cmd(
    model: str = typer.Option(..., "--model", help="model folder URI (path, file://, s3://, models:/...)"),
    name: str = typer.Option(..., "--name", help="registered model name"),
    report: str | None = typer.Option(None, "--report", help="the evaluate step's output folder"),
    scope: str | None = typer.Option(None, "--scope", help="the DataScope folder"),
    parent: str | None = typer.Option(None, "--parent", help="parent version (default: training.json's)"),
    request: list[str] = typer.Option([], "--request", help="forget request id this version satisfies"),
    gate: str | None = typer.Option(None, "--gate", help="failed, or the report's own verdict "
                                                         "(default: the report's verdict)"),
    override_gate: str | None = typer.Option(None, "--override-gate",
                                             help="replace the --report's verdict (passed|failed); "
                                                  "needs --operator and --reason; recorded"),
    operator: str | None = typer.Option(None, "--operator", help="who overrides the verdict"),
    reason: str | None = typer.Option(None, "--reason", help="why the verdict is overridden"),
    foundation: str | None = typer.Option(None, "--foundation", help="foundation checkpoint the model "
                                                                    "was fine-tuned from (with --recipe)"),
    recipe: str | None = typer.Option(None, "--recipe", help="training recipe file (YAML/JSON: objective, "
                                                            "params, seed)"),
    corpus: str | None = typer.Option(None, "--corpus", help="fine-tuning corpus (its snapshot digest is "
                                                            "recorded; with --foundation)"),
) -> None:
    """Register MODEL as a new version of NAME (idempotent: the same candidate returns its version).

    A gate passes only from an evaluate report: `--gate passed` without `--report` is refused, and
    a report's verdict changes only with --override-gate by a named --operator with a --reason.
    """
    from unlearnops import storage
    from unlearnops.modelio import ModelError

    from .register import GateOverride, RegistrationError, register_model

    if gate == "passed" and not report:
        raise fail("--gate passed needs the evaluate report it comes from (--report DIR); "
                   "a failed verdict is overridden only with --override-gate, --operator and --reason")
    if override_gate is None and (operator or reason):
        raise fail("--operator and --reason go with --override-gate")
    override = GateOverride(override_gate, operator or "", reason or "") if override_gate else None
    if bool(foundation) != bool(recipe) or (corpus and not foundation):
        raise fail("--foundation and --recipe go together (--corpus with them)")
    from .lineage import LineageError, lineage_of, read_recipe

    try:
        found = None
        if foundation and recipe:
            corpus_uri = absolute_uri(corpus) if corpus else ""
            found = lineage_of(absolute_uri(foundation), read_recipe(recipe), corpus_uri)
        ref = register_model(model, name, report_uri=report, scope_uri=scope, parent_version=parent,
                             request_ids=request, gate=gate, gate_override=override, lineage=found)
    except (RegistrationError, ModelError, LineageError) as err:
        raise fail(str(err)) from err
    except storage.StorageError as err:
        raise fail(str(err), EXIT_ERROR) from err
    typer.echo(f"registered {ref.name} version {ref.version} (models:/{ref.name}/{ref.version})")
