"""Exact unlearning by retraining: fine-tune the foundation checkpoint on the redacted corpus.

``retrain(foundation_uri, corpus_uri, out_uri, recipe)`` fine-tunes the foundation with the
recipe's objective (``finetune``: NLL on answer + EOS tokens) on the corpus's training records
minus everything on the suppression list — read by the one reader every step uses
(:func:`unlearnops.components.unlearn.data.read_corpus_sets` →
:func:`unlearnops.suppression.unsuppressed`), so nothing erased can enter. The model is what the
approximate methods only imitate: retraining without the erased data (the gold standard of
Liu et al., 2024, *Rethinking Machine Unlearning for LLMs*).

It runs the unlearn step's loop (components/unlearn/loop.py) — in a Ray Train ``TorchTrainer``
by default, in this process with ``local=True`` — and writes the model, ``training.json`` and
``lineage.json`` (foundation, corpus snapshot digest, recipe, covered requests;
components/register/lineage.py) to ``out_uri``.

Resumable: the Ray run's name is a function of the output and the inputs' digests, and
``train.checkpoint_every`` steps are checkpointed under ``<storage root>/ray/``; a restarted
step with the same inputs resumes from the last checkpoint (Ray Train restores a run of the same
name), and a finished output with the same lineage is returned without training again.
The run's checkpoints are deleted once the model is stored.

On a cluster the component runs it as a KubeRay ``RayJob`` (:func:`retrain_as_rayjob`, through the
unlearn step's launcher components/unlearn/rayjob.py; :func:`drive_retrain` is the Ray job's driver).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from unlearnops import disposition, modelio, storage
from unlearnops.documents import TRAINING_FILE
from unlearnops.types import Doc, TrainingRecord, UnlearnSpec

from ..register.lineage import LINEAGE_FILE, Lineage, LineageError, Recipe, check_recipe, corpus_sha256


class RetrainError(ValueError):
    """Bad input to a retraining run (the message says what is wrong and what to do)."""


class RetrainResult(Doc):
    """What the retrain step produced and what it cost."""

    model_uri: str
    lineage: Lineage
    steps: int
    tokens: int
    worker_seconds: float
    wall_seconds: float
    resumed: bool = Field(False, description="an earlier finished output with the same lineage was reused")


def spec_of(recipe: Recipe, *, workers: int = 1, use_gpu: bool = False, threads: int = 1) -> UnlearnSpec:
    """The loop's spec for a recipe (the objective is an unlearn method: ``finetune``)."""
    return UnlearnSpec(method=recipe.objective, params=dict(recipe.params), seed=recipe.seed,
                       compute={"workers": workers, "use_gpu": use_gpu, "torch_threads": threads})


def finetune_in_process(model: Any, tokenizer: Any, records: Sequence[Mapping[str, Any]], recipe: Recipe,
                        threads: int = 1) -> dict[str, Any]:
    """Fine-tune an in-memory model on ``records`` with the recipe (world size 1); returns run.json.

    ``benchmark build-models`` builds its base and reference models with this.
    """
    from unlearnops.components.unlearn.job import Preloaded, TrainJob
    from unlearnops.components.unlearn.loop import train_local

    quiet = not sys.stderr.isatty()  # a progress bar (steps, loss) on a terminal only
    job = TrainJob(spec=spec_of(recipe, threads=threads), quiet=quiet)
    return train_local(job, Preloaded(model, tokenizer, {"forget": [dict(r) for r in records], "retain": []}),
                       device="cpu")


def run_name(out_uri: str, lineage: Lineage) -> str:
    """Ray run name: the disposition prefix of ``out_uri`` + the inputs' digest (same inputs, same run)."""
    key = f"{lineage.foundation_sha256}|{lineage.corpus_sha256}|{lineage.recipe.sha256()}"
    return f"{disposition.checkpoint_prefix(out_uri)}retrain-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def finished(out_uri: str, lineage: Lineage) -> Lineage | None:
    """The lineage of a finished output with the same foundation, corpus and recipe, else None."""
    uri = storage.join(out_uri, LINEAGE_FILE)
    if not (storage.exists(uri) and storage.exists(storage.join(out_uri, TRAINING_FILE))):
        return None
    try:
        found = Lineage.model_validate_json(storage.read_text(uri))
    except ValueError:
        return None
    same = (found.foundation_sha256, found.corpus_sha256, found.recipe) == (
        lineage.foundation_sha256, lineage.corpus_sha256, lineage.recipe)
    return found if same else None


def retrain(foundation_uri: str, corpus_uri: str, out_uri: str, recipe: Recipe, *,
            request_ids: Sequence[str] = (), replaces: str = "", local: bool = False, workers: int = 1,
            use_gpu: bool = False, threads: int = 1, step_hooks: Sequence[Any] = ()) -> RetrainResult:
    """Fine-tune ``foundation_uri`` on the unsuppressed training records of ``corpus_uri``; write the
    model with ``training.json`` and ``lineage.json`` to ``out_uri`` (see the module docstring).

    ``request_ids`` are the requests this retraining covers (their data is on the suppression list
    or redacted from the corpus); they are recorded in the lineage and training.json. ``replaces``
    (``models:/NAME/VERSION``, the champion the retrained model is to replace) is recorded as its
    parent, so registration and promotion's compare-and-set treat it as that champion's successor.
    ``step_hooks`` (:class:`~unlearnops.components.unlearn.job.StepHook`) run before each step, e.g.
    the resilience drill that kills a worker (components/unlearn/drills.py).
    """
    from unlearnops.components.unlearn.data import read_corpus_sets
    from unlearnops.components.unlearn.job import TrainJob
    from unlearnops.components.unlearn.loop import RUN_FILE, train_local
    from unlearnops.components.unlearn.runner import ray_session, run_ray, versions

    from ..register.register import weights_sha256

    started = time.perf_counter()
    parent = modelio.parse_registry_uri(replaces) if replaces else None
    if replaces and (parent is None or not parent.version):
        raise RetrainError(f"replaces={replaces!r}: give the replaced version as models:/NAME/VERSION")
    try:
        recipe = check_recipe(recipe)
    except LineageError as err:
        raise RetrainError(str(err)) from None
    try:
        sets = read_corpus_sets(corpus_uri)
    except ValueError as err:
        raise RetrainError(str(err)) from None
    if not sets["forget"]:
        raise RetrainError(f"{corpus_uri}: no training records left after the suppression list")
    resolved = modelio.resolve(foundation_uri)
    with modelio.LocalModel(resolved.uri) as path:
        resolved_uri = resolved.uri if storage.is_s3(resolved.uri) else str(path.absolute())
        foundation_digest = weights_sha256(path)
    lineage = Lineage(foundation_uri=foundation_uri, foundation_sha256=foundation_digest,
                      corpus_uri=corpus_uri, corpus_sha256=corpus_sha256(sets["forget"]),
                      corpus_records=len(sets["forget"]),
                      recipe=recipe, claim_level="retrained", covers_requests=sorted(set(request_ids)))
    done = finished(out_uri, lineage)
    if done is not None:
        return _result(out_uri, done, started, resumed=True)
    spec = spec_of(recipe, workers=workers, use_gpu=use_gpu, threads=threads)
    job = TrainJob(spec=spec, corpus_uri=corpus_uri, model_uri=resolved_uri, quiet=not sys.stderr.isatty(),
                   step_hooks=list(step_hooks))
    name = run_name(out_uri, lineage)
    with tempfile.TemporaryDirectory(prefix="unlearnops-retrain-") as tmp:
        folder = Path(tmp) / "model"
        if local:
            from unlearnops.components.unlearn.job import Preloaded

            folder.mkdir()
            train_local(job.model_copy(update={"out_dir": str(folder)}), Preloaded(records=sets))
        else:
            with ray_session(max(workers, os.cpu_count() or 1)):
                run_ray(job, job.train, name, folder)
        meta = storage.read_json(str(folder / RUN_FILE))
        (folder / RUN_FILE).unlink()
        meta.update({"run_name": name, "wall_seconds": round(time.perf_counter() - started, 3),
                     "versions": versions(), "base_model_uri": foundation_uri,
                     "resolved_base_uri": resolved_uri,
                     "request_ids": lineage.covers_requests, "backend": "local" if local else "ray",
                     "parent": parent.model_dump() if parent else None})
        record = TrainingRecord.model_validate(meta)
        (folder / TRAINING_FILE).write_text(record.model_dump_json(indent=2) + "\n")
        (folder / LINEAGE_FILE).write_text(lineage.model_dump_json(indent=2) + "\n")
        storage.upload_dir(folder, out_uri)
    for uri in disposition.checkpoint_dirs(out_uri):  # the model is stored: its checkpoints are spent
        storage.delete_prefix(uri)
    return _result(out_uri, lineage, started)


def retrain_args(foundation_uri: str, corpus_uri: str, out_uri: str, recipe: Recipe, *,
                 request_ids: Sequence[str] = (), replaces: str = "", workers: int = 1,
                 use_gpu: bool = False) -> dict[str, Any]:
    """The retrain step's arguments as the RayJob driver reads them (JSON-safe)."""
    return {"foundation_uri": foundation_uri, "corpus_uri": corpus_uri, "out_uri": out_uri,
            "recipe": check_recipe(recipe).model_dump(mode="json"), "request_ids": list(request_ids),
            "replaces": replaces, "workers": workers, "use_gpu": use_gpu}


def drive_retrain(args: Mapping[str, Any]) -> RetrainResult:
    """The retrain step's RayJob driver: :func:`retrain` on the RayJob's Ray cluster (``RAY_ADDRESS``)."""
    return retrain(args["foundation_uri"], args["corpus_uri"], args["out_uri"], check_recipe(args["recipe"]),
                   request_ids=args.get("request_ids") or (), replaces=args.get("replaces") or "",
                   workers=int(args.get("workers", 1)), use_gpu=bool(args.get("use_gpu", False)))


def retrain_as_rayjob(foundation_uri: str, corpus_uri: str, out_uri: str, recipe: Recipe, *,
                      request_ids: Sequence[str] = (), replaces: str = "", workers: int = 1,
                      use_gpu: bool = False, **launch: Any) -> RetrainResult:
    """Run :func:`retrain` as a KubeRay RayJob and return its result, read from what it stored;
    ``launch``: the launcher's options (run id, namespace, image, API client, polling)."""
    from unlearnops.components.unlearn.rayjob import launch_rayjob

    started = time.perf_counter()
    args = retrain_args(foundation_uri, corpus_uri, out_uri, recipe, request_ids=request_ids,
                        replaces=replaces, workers=workers, use_gpu=use_gpu)
    launch_rayjob("retrain", args, out_uri=out_uri, workers=workers, use_gpu=use_gpu, **launch)
    lineage = Lineage.model_validate_json(storage.read_text(storage.join(out_uri, LINEAGE_FILE)))
    return _result(out_uri, lineage, started)


def _result(out_uri: str, lineage: Lineage, started: float, resumed: bool = False) -> RetrainResult:
    from unlearnops.documents import read_training

    training = read_training(out_uri)
    return RetrainResult(model_uri=out_uri, lineage=lineage, steps=int(training.steps or 0),
                         tokens=int(training.tokens or 0), worker_seconds=float(training.worker_seconds or 0),
                         wall_seconds=round(time.perf_counter() - started, 3) if not resumed
                         else float(training.wall_seconds or 0), resumed=resumed)
