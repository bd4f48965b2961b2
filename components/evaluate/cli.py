"""``unlearnops evaluate``: report + gate verdict for a candidate model (exit 3 when gates fail)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from unlearnops.cli import EXIT_ERROR, EXIT_GATE_FAILED, app, fail
from unlearnops.types import GateVerdict


def gate_table(verdict: GateVerdict) -> Table:
    """The verdict as a rich table (one row per gate)."""
    from .report import fmt

    table = Table(title=f"gates: {'PASSED' if verdict.passed else 'FAILED'}")
    for column in ("gate", "metric", "value", "threshold", "result"):
        table.add_column(column)
    for g in verdict.gates:
        result = {"pass": "[green]pass[/]", "skipped": "[yellow]skipped[/]"}.get(g.status,
                                                                               "[bold red]FAIL[/]")
        table.add_row(g.gate, g.metric, fmt(g.value), g.threshold, result)
    return table


@app.command("evaluate")
def evaluate_command(
    model: str = typer.Option(..., "--model", help="candidate model URI (path, file://, s3://, models:/)"),
    base: str = typer.Option(..., "--base", help="base model URI the candidate was unlearned from"),
    scope: str = typer.Option(..., "--scope", help="DataScope folder URI (forget/retain/... .jsonl)"),
    out: str = typer.Option(..., "--out", help="report folder URI (report.json, report.md, plots/)"),
    reference: str | None = typer.Option(None, "--reference", help="retain-only reference model URI"),
    policy: str | None = typer.Option(None, "--policy",
                                      help="gate policy YAML (path/URI, or default|lenient|strict)"),
    no_robustness: bool = typer.Option(False, "--no-robustness", help="skip the robustness re-runs"),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="examples per forward pass"),
) -> None:
    """Evaluate a candidate against its base on a scope, gate it, write the report."""
    from unlearnops.modelio import ModelError
    from unlearnops.storage import StorageError

    from .evaluate import EvalInputError, evaluate_model
    from .gates import GatePolicy, PolicyError
    from .metrics import EvalOptions

    try:
        gate_policy = GatePolicy.load(policy) if policy else GatePolicy.default()
    except PolicyError as err:
        raise fail(str(err)) from None
    options = EvalOptions(batch_size=batch_size, robustness=not no_robustness)
    try:
        report = evaluate_model(model, base, scope, out, reference_uri=reference, policy=gate_policy,
                                options=options, device=device)
    except (EvalInputError, ModelError) as err:
        raise fail(str(err)) from None
    except StorageError as err:
        raise fail(str(err), EXIT_ERROR) from None
    console = Console()
    assert report.verdict is not None
    console.print(gate_table(report.verdict))
    for reason in report.verdict.reasons:
        console.print(f"[red]-[/] {reason}", highlight=False)
    console.print(f"report: {out}/report.md", highlight=False)
    if not report.verdict.passed:
        raise typer.Exit(EXIT_GATE_FAILED)
