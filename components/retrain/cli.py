"""CLI command of this part: ``unlearnops retrain`` (exact unlearning by re-fine-tuning)."""

from __future__ import annotations

import typer

from unlearnops.cli import EXIT_BAD_INPUT, EXIT_ERROR, app, fail
from unlearnops.cli.params import absolute_uri


@app.command("retrain")
def retrain_cmd(
    foundation: str = typer.Option(..., "--foundation", help="foundation checkpoint: path, file://, s3:// "
                                                             "or models:/NAME@alias"),
    corpus: str = typer.Option(..., "--corpus", help="fine-tuning corpus URI (suppressed "
                                                     "records are skipped)"),
    recipe: str = typer.Option(..., "--recipe", help="recipe file (YAML/JSON: objective, params, seed)"),
    out: str = typer.Option(..., "--out", help="URI of the retrained model folder to write"),
    request: list[str] = typer.Option([], "--request", help="request id this retraining covers; repeatable"),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray Train workers"),
    gpu: bool = typer.Option(False, "--gpu", help="one GPU per worker (NCCL)"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads per worker"),
    local: bool = typer.Option(False, "--local", help="run in this process (world size 1, no Ray)"),
) -> None:
    """Fine-tune the foundation on the corpus minus the suppression list; prints the result as JSON."""
    from unlearnops.components.register.lineage import LineageError, read_recipe

    from unlearnops.modelio import ModelError
    from unlearnops.storage import StorageError

    from .retrain import RetrainError, retrain

    try:
        found = read_recipe(absolute_uri(recipe))
        result = retrain(absolute_uri(foundation), absolute_uri(corpus), absolute_uri(out), found,
                         request_ids=request, local=local, workers=workers, use_gpu=gpu, threads=threads)
    except (LineageError, RetrainError, ModelError, StorageError) as err:
        raise fail(str(err), EXIT_BAD_INPUT) from None
    except Exception as err:  # noqa: BLE001 - reported with exit code 1
        raise fail(f"retraining failed: {type(err).__name__}: {err}", EXIT_ERROR) from None
    typer.echo(result.model_dump_json(indent=2))
