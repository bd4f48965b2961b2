"""CLI commands of this part: ``unlearnops unlearn`` and ``unlearnops benchmark build-models``."""

from __future__ import annotations

import json
import os
from typing import Any

import typer
from typer.core import TyperCommand

from unlearnops.cli import EXIT_BAD_INPUT, EXIT_ERROR, app, benchmark_app, fail
from unlearnops.cli.params import absolute_uri, parse_assignments


class _MethodsHelp(TyperCommand):
    """Fills ``{methods}`` in the help from the method registry, imported only when help is shown."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from .methods import METHODS

        for param in self.params:
            text = getattr(param, "help", None)
            if text and "{methods}" in text:
                param.help = text.format(methods=", ".join(METHODS))  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


@app.command("unlearn", cls=_MethodsHelp)
def unlearn_cmd(
    scope: str = typer.Option(..., "--scope", help="DataScope folder URI (from `unlearnops scope resolve`)"),
    model: str = typer.Option(..., "--model", help="base model: path, file://, s3:// or models:/NAME@alias"),
    method: str = typer.Option(..., "--method", help="objective: {methods}"),
    out: str = typer.Option(..., "--out", help="URI of the unlearned model folder to write"),
    param: list[str] = typer.Option(None, "--param", help="KEY=VALUE hyper-parameter; train.* for the "
                                                          "optimiser (e.g. train.steps=50); repeatable"),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray Train workers"),
    gpu: bool = typer.Option(False, "--gpu", help="one GPU per worker (NCCL)"),
    strategy: str = typer.Option("ddp", "--strategy", help="ddp or fsdp"),
    cpus_per_worker: int = typer.Option(1, "--cpus-per-worker", min=1),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads per worker"),
    trainable: list[str] = typer.Option(None, "--trainable", help="parameter-name regex; repeatable"),
    lora: bool = typer.Option(False, "--lora", help="train LoRA adapters (merged into the saved model)"),
    stop_when: list[str] = typer.Option(None, "--stop-when", help="KEY=VALUE early-stop condition, e.g. "
                                                                  "forget_prob_max=0.05; repeatable "
                                                                  "(replaces calibrated stopping)"),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate",
                                   help="stop at the holdout level (default) or run the configured steps"),
    seed: int = typer.Option(0, "--seed"),
    local: bool | None = typer.Option(None, "--local/--ray",
                                      help="train in this process (world size 1) or on Ray Train; "
                                           "default: in process for one worker unless a Ray address "
                                           "is set"),
    verbose: bool = typer.Option(False, "--verbose", help="show Ray's own logs and worker output "
                                                          "(default: kept in Ray's log files)"),
) -> None:
    """Unlearn a DataScope's forget set from a model (Ray Train); prints the UnlearnResult as JSON."""
    from pydantic import ValidationError

    from unlearnops.modelio import ModelError
    from unlearnops.storage import StorageError
    from unlearnops.types import UnlearnSpec

    from .data import DataError
    from .methods import METHODS, MethodError
    from .runner import UnlearnError, run_unlearning

    try:
        params = parse_assignments(param)
        conditions = parse_assignments(stop_when, "--stop-when")
        spec = UnlearnSpec(method=method, params=params, trainable=list(trainable or []),
                           lora={} if lora else None, seed=seed,
                           compute={"workers": workers, "use_gpu": gpu, "strategy": strategy,
                                    "cpus_per_worker": cpus_per_worker, "torch_threads": threads})
    except (ValueError, ValidationError) as err:
        raise fail(f"{err}") from None
    if method not in METHODS:
        raise fail(f"unknown method {method!r}; valid methods: {', '.join(sorted(METHODS))}")
    if verbose:
        os.environ["UNLEARNOPS_VERBOSE"] = "1"
    try:
        result = run_unlearning(spec, absolute_uri(scope), absolute_uri(model), absolute_uri(out),
                                stop_when=conditions, local=local,
                                calibrate=calibrate)
    except (MethodError, UnlearnError, DataError, ModelError, StorageError) as err:
        raise fail(str(err), EXIT_BAD_INPUT) from None
    except Exception as err:  # noqa: BLE001 - reported with exit code 1
        raise fail(f"unlearning failed: {type(err).__name__}: {err}", EXIT_ERROR) from None
    typer.echo(result.model_dump_json(indent=2))


@benchmark_app.command("build-models")
def build_models_cmd(
    data: str = typer.Option(..., "--data", help="benchmark corpus URI (`unlearnops benchmark generate`)"),
    out: str = typer.Option(..., "--out", help="where to write base/, reference/, forget-request.json"),
    preset: str = typer.Option("tiny", "--preset", help="tiny (tests, demo) or small (speed benchmarks)"),
    forget_share: float = typer.Option(0.1, "--forget-share", help="share of training people to forget"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads"),
) -> None:
    """Train the tokenizer, the base model and the retain-only reference model; prints build.json."""
    from .benchmark_models import PRESETS, build_models

    if preset not in PRESETS:
        raise fail(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    if not 0 < forget_share < 1:
        raise fail(f"--forget-share must be between 0 and 1, got {forget_share}")
    try:
        build = build_models(data, out, preset=preset, forget_share=forget_share, seed=seed, threads=threads)
    except ValueError as err:
        raise fail(str(err)) from None
    except Exception as err:  # noqa: BLE001 - reported with exit code 1
        raise fail(f"build failed: {type(err).__name__}: {err}", EXIT_ERROR) from None
    typer.echo(json.dumps(build, indent=2, default=str))
