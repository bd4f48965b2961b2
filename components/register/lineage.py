"""Lineage of a fine-tuned model: its foundation checkpoint, corpus snapshot and training recipe.

A model fine-tuned from a foundation checkpoint is exactly retrainable when three things are
known: the **foundation** (its URI and weights digest), the **corpus snapshot** it was trained on
(:func:`corpus_sha256`: SHA-256 over the content digests of the training records, in reading
order, after the suppression list — the set actually trained on) and the **recipe** (objective,
hyper-parameters, seed: :class:`Recipe`). The retrain step (components/retrain/) writes them as
``lineage.json`` beside the weights; ``unlearnops register --foundation URI --recipe FILE`` records
them for a model fine-tuned elsewhere. Registration turns a :class:`Lineage` into run params
(``lineage.*``, ``recipe.*``) and version tags (``unlearnops.foundation``, ...) with
:func:`registry_tags` / :func:`registry_params`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from unlearnops import storage
from unlearnops.types import Doc, utcnow

LINEAGE_FILE = "lineage.json"
TAG = "unlearnops."
FOUNDATION_TAG, FOUNDATION_SHA_TAG = f"{TAG}foundation", f"{TAG}foundation_sha256"
CORPUS_SHA_TAG, RECIPE_SHA_TAG = f"{TAG}corpus_sha256", f"{TAG}recipe_sha256"
CLAIM_TAG, COVERS_TAG = f"{TAG}claim_level", f"{TAG}covers_requests"


class LineageError(ValueError):
    """A recipe or lineage document is unreadable or invalid (the message says what to fix)."""


class Recipe(Doc):
    """How a model is fine-tuned from its foundation: objective, hyper-parameters and seed.

    ``params`` is an unlearn ``spec.params``: the objective's own hyper-parameters and, under
    ``train``, the loop's TrainConfig (components/unlearn/job.py), e.g. ``{"train": {"lr": 3e-3,
    "epochs": 60, "batch_size": 32}}``.
    """

    objective: Literal["finetune"] = "finetune"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

    def sha256(self) -> str:
        """SHA-256 of the recipe's canonical JSON (sorted keys, no spaces)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class Lineage(Doc):
    """``lineage.json``: what a fine-tuned model was trained from, and what that training covers."""

    foundation_uri: str
    foundation_sha256: str = Field("", description="weights digest of the foundation checkpoint")
    corpus_uri: str = ""
    corpus_sha256: str = Field("", description="SHA-256 over the trained records' content digests")
    corpus_records: int | None = None
    recipe: Recipe
    claim_level: Literal["unlearned", "retrained"] | None = Field(
        "retrained", description="retrained: trained without the erased data (exact unlearning); "
                                 "None for a model fine-tuned elsewhere")
    covers_requests: list[str] = Field(default_factory=list,
                                       description="requests whose data the corpus no longer holds")
    created_at: datetime = Field(default_factory=utcnow)


def read_recipe(uri: str) -> Recipe:
    """A recipe from a YAML or JSON file; the objective and every ``train.*`` key are checked."""
    import yaml

    try:
        raw = yaml.safe_load(storage.read_text(uri))
    except (OSError, storage.StorageError) as err:
        raise LineageError(f"{uri}: cannot read the recipe ({err})") from None
    except yaml.YAMLError as err:
        raise LineageError(f"{uri}: not YAML or JSON ({err})") from None
    if not isinstance(raw, dict):
        raise LineageError(f"{uri}: a recipe is a mapping with objective, params, seed")
    return check_recipe(raw, uri)


def check_recipe(raw: Mapping[str, Any] | Recipe, source: str = "recipe") -> Recipe:
    """Validate a recipe (fields, then the objective's hyper-parameters and train config)."""
    from unlearnops.components.unlearn.job import check_params
    from unlearnops.components.unlearn.methods import MethodError

    try:
        recipe = raw if isinstance(raw, Recipe) else Recipe.model_validate(dict(raw))
        check_params(recipe.objective, recipe.params)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise LineageError(f"{source}: invalid recipe ({problems})") from None
    except MethodError as err:
        raise LineageError(f"{source}: {err}") from None
    return recipe


def corpus_sha256(records: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 over ``content_sha256`` of each record, one per line, in reading order."""
    from unlearnops.suppression import content_sha256

    digest = hashlib.sha256()
    for record in records:
        digest.update(f"{content_sha256(record)}\n".encode())
    return digest.hexdigest()


def corpus_snapshot(corpus_uri: str) -> tuple[str, int]:
    """(digest, record count) of the corpus's unsuppressed training records."""
    from unlearnops.components.unlearn.benchmark_models import read_training_records

    records = read_training_records(corpus_uri)
    return corpus_sha256(records), len(records)


def foundation_sha256(uri: str) -> str:
    """Weights digest of a model folder (any model URI), as registration computes it."""
    from unlearnops.modelio import LocalModel

    from .register import weights_sha256

    with LocalModel(uri) as path:
        return weights_sha256(path)


def lineage_of(foundation_uri: str, recipe: Recipe, corpus_uri: str = "") -> Lineage:
    """The lineage of a model fine-tuned elsewhere (``register --foundation --recipe [--corpus]``)."""
    digest, count = corpus_snapshot(corpus_uri) if corpus_uri else ("", None)
    return Lineage(foundation_uri=foundation_uri, foundation_sha256=foundation_sha256(foundation_uri),
                   corpus_uri=corpus_uri, corpus_sha256=digest, corpus_records=count, recipe=recipe,
                   claim_level=None)


def write_lineage(folder: Path, lineage: Lineage) -> None:
    (folder / LINEAGE_FILE).write_text(lineage.model_dump_json(indent=2) + "\n")


def find_lineage(model_dir: Path) -> Lineage | None:
    """``lineage.json`` of a local model folder, or None; an invalid one is a :class:`LineageError`."""
    path = model_dir / LINEAGE_FILE
    if not path.is_file():
        return None
    try:
        return Lineage.model_validate_json(path.read_text())
    except ValidationError as err:
        raise LineageError(f"{path}: not a valid lineage document ({err.errors()[0]['msg']})") from None


def registry_tags(lineage: Lineage) -> dict[str, str]:
    """Version tags: foundation, its digest, corpus and recipe digests, claim level, covered requests
    (as keyed request tokens, like ``unlearnops.requests``: never ids in clear)."""
    from unlearnops.model_erasure import requests_tag

    tags = {FOUNDATION_TAG: lineage.foundation_uri, FOUNDATION_SHA_TAG: lineage.foundation_sha256,
            CORPUS_SHA_TAG: lineage.corpus_sha256, RECIPE_SHA_TAG: lineage.recipe.sha256(),
            CLAIM_TAG: lineage.claim_level or "", COVERS_TAG: requests_tag(lineage.covers_requests)}
    return {k: v[:5000] for k, v in tags.items() if v}


def registry_params(lineage: Lineage) -> dict[str, str]:
    """Run params: ``lineage.*`` (foundation, corpus) and the recipe flattened as ``recipe.*``."""
    out = {"lineage.foundation_uri": lineage.foundation_uri,
           "lineage.foundation_sha256": lineage.foundation_sha256,
           "lineage.corpus_uri": lineage.corpus_uri, "lineage.corpus_sha256": lineage.corpus_sha256,
           "lineage.corpus_records": "" if lineage.corpus_records is None else str(lineage.corpus_records),
           "recipe.objective": lineage.recipe.objective, "recipe.seed": str(lineage.recipe.seed),
           "recipe.sha256": lineage.recipe.sha256()}
    stack: list[tuple[str, Any]] = [("recipe.params", lineage.recipe.params)]
    while stack:
        prefix, value = stack.pop()
        if isinstance(value, dict) and value:
            stack.extend((f"{prefix}.{k}", v) for k, v in value.items())
        else:
            out[prefix] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return {k[:250]: v[:6000] for k, v in out.items() if v != ""}


def describe(name: str, lineage: Lineage) -> str:
    """A registered version's description for a retrained model."""
    from unlearnops.model_erasure import request_tokens

    covers = (f", covering requests {', '.join(request_tokens(lineage.covers_requests))}"
              if lineage.covers_requests else "")
    return (f"{lineage.recipe.objective} of {lineage.foundation_uri} on corpus snapshot "
            f"{lineage.corpus_sha256[:12] or '?'} ({lineage.corpus_records} records){covers}: "
            f"{lineage.claim_level or 'fine-tuned'} version of {name}.")
