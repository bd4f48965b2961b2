"""``unlearnops benchmark generate`` (the fictitious-people corpus) and ``benchmark import``
(TOFU / MUSE files a user downloaded) — both write the corpus format of docs/data.md."""

from __future__ import annotations

import typer

from ..storage import StorageError
from . import benchmark_app, fail


@benchmark_app.command("generate")
def generate(
    out: str = typer.Option(..., "--out", help="corpus URI to write (path, file:// or s3://)"),
    people: int = typer.Option(40, "--people", min=1, help="training people"),
    holdout: int = typer.Option(10, "--holdout", min=0, help="holdout people (never in training shards)"),
    seed: int = typer.Option(0, "--seed", help="random seed (same arguments → byte-identical files)"),
    shards: int = typer.Option(4, "--shards", min=1, help="number of training shards"),
) -> None:
    """Generate the deterministic benchmark corpus: people, QA facts, biographies, sidecars."""
    from ..data.generate import generate_benchmark

    try:
        manifest = generate_benchmark(out, people=people, holdout=holdout, seed=seed, shards=shards)
    except (ValueError, StorageError) as err:
        raise fail(str(err)) from err
    counts = manifest["counts"]
    typer.echo(f"wrote {out}: {counts['train_records']} training records in {shards} shards "
               f"({people} people + {counts['general_facts']} general facts), "
               f"{counts['holdout_records']} holdout records ({holdout} people)")


@benchmark_app.command("import")
def import_(
    path: str = typer.Argument(..., help="folder of the downloaded TOFU files, or of one MUSE corpus"),
    fmt: str = typer.Option(..., "--format", help="tofu | muse"),
    out: str = typer.Option(..., "--out", help="corpus URI to write (path, file:// or s3://)"),
) -> None:
    """Turn locally downloaded TOFU or MUSE files into a corpus and request files (no download)."""
    from ..data.importers import ImportFormatError, import_benchmark

    try:
        manifest = import_benchmark(fmt, path, out)
    except (ImportFormatError, StorageError, OSError, UnicodeDecodeError) as err:
        raise fail(str(err)) from err
    counts = manifest["counts"]
    typer.echo(f"wrote {out}: {counts['train_records']} training records about {counts['subjects']} "
               f"subjects, {counts['holdout_records']} holdout records; requests: "
               f"{', '.join(manifest['requests']) or 'none'}")
