"""``unlearnops scope resolve``: ForgetRequests (ledger ids or files) + corpus → DataScope folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from unlearnops.cli import EXIT_ERROR, fail, scope_app
from unlearnops.cli.params import absolute_uri, writable_folder
from unlearnops.storage import StorageError
from unlearnops.types import ForgetRequest

from .shards import ScopeError


def load_requests(refs: list[str]) -> list[ForgetRequest]:
    """Each ref is a request FILE (YAML/JSON, one or a list) or a request id in the ledger."""
    from pydantic import ValidationError

    from unlearnops import ledger

    out: list[ForgetRequest] = []
    for ref in refs:
        try:
            if Path(ref).is_file() or ref.startswith("s3://"):
                out.extend(ledger.load_request_file(ref))
            else:
                out.append(ledger.Ledger().get(ref))
        except ValidationError as err:
            raise ScopeError(f"{ref}: not a valid forget request: {err}") from err
        except KeyError as err:
            raise ScopeError(f"{ref}: no such request file, and no request with this id in the ledger "
                             "(file it with `unlearnops request file`)") from err
    return out


@scope_app.command("resolve")
def resolve(
    request: list[str] = typer.Option(..., "--request", help="request id or FILE; repeatable"),
    corpus: str = typer.Option(..., "--corpus", help="folder or s3:// prefix of shards"),
    out: str = typer.Option(..., "--out", help="DataScope URI to write"),
    retain_multiple: float = typer.Option(None, "--retain-multiple", help="retain size = X × forget size "
                                          "(default: the scope_retain_multiple setting, 2)"),
    retain_eval_multiple: float = typer.Option(None, "--retain-eval-multiple",
                                               help="retain-eval size = X × forget size (default as retain)"),
    neighbor_k: int = typer.Option(None, "--neighbor-k", help="neighbor set size (default: forget size)"),
    max_share: float = typer.Option(0.2, "--max-share", help="refuse a request matching more of the corpus"),
    allow_large_scope: bool = typer.Option(False, "--allow-large-scope", help="accept over max-share"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    parallel: str = typer.Option("auto", "--parallel",
                                 help="auto (worker processes from 64 MiB of shards, Ray from 2 GiB), "
                                      "processes, ray or local"),
    fold_accents: bool | None = typer.Option(None, "--fold-accents/--no-fold-accents",
                                             help="names also match without accents ('Jose' finds "
                                                  "'José'); default: the match_fold_accents setting"),
) -> None:
    """Resolve forget requests to forget/retain/retain_eval/neighbor/holdout/paraphrase sets + manifest."""
    from unlearnops.ledger import LedgerError

    from .resolve import resolve_scope

    try:
        out = writable_folder(out)
        requests = load_requests(request)
        manifest = resolve_scope(requests, absolute_uri(corpus), out, retain_multiple=retain_multiple,
                                 retain_eval_multiple=retain_eval_multiple, neighbor_k=neighbor_k,
                                 max_share=max_share,
                                 allow_large_scope=allow_large_scope, seed=seed, parallel=parallel,
                                 progress=True, fold_accents=fold_accents)
    except (ScopeError, ValueError) as err:
        raise fail(str(err)) from err
    except (StorageError, LedgerError) as err:
        raise fail(str(err), EXIT_ERROR) from err
    table = Table(title=f"DataScope {out}")
    for column in ("set", "records", "sha256"):
        table.add_column(column)
    for name, info in manifest.sets.items():
        table.add_row(name, str(info.count), info.sha256[:16])
    Console().print(table)
    typer.echo(f"scope sha256 {manifest.sha256}")
