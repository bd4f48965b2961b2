"""Registry side of the model layer (:mod:`unlearnops.model_erasure`): tag, guard, dispose.

- :func:`tag_older_versions`: at promotion of a version that erased requests, every older
  version gets ``erased_by`` (and ``erased_at``).
- :func:`guard`: promote/rollback to an ``erased_by`` version is refused unless an override
  reason is given; the override is recorded on the version.
- :func:`dispose_versions`: deletes the artifacts (exported copy and MLflow model artifacts) of
  erased versions whose retention window has passed, never the champion's, and records it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import mlflow

from unlearnops import disposition
from unlearnops.model_erasure import (
    DISPOSED_TAG,
    ERASED_AT_TAG,
    ERASED_BY_TAG,
    ERASED_OVERRIDE_TAG,
    ErasedVersionRefused,
    merged,
    override_record,
    refusal,
    tagged_requests,
)
from unlearnops.modelio import EXPORT_TAG
from unlearnops.settings import get_settings
from unlearnops.types import utcnow

log = logging.getLogger(__name__)


def tag_older_versions(client: mlflow.MlflowClient, name: str, version: str,
                       tags: dict[str, str]) -> list[str]:
    """Tag every version older than ``version`` with the requests ``version`` erased; versions tagged."""
    tokens = tagged_requests(tags)
    if not tokens:
        return []
    now, tagged = utcnow().isoformat(), []
    for mv in client.search_model_versions(f"name = '{name}'"):
        if int(mv.version) >= int(version):
            continue
        old = (mv.tags or {}).get(ERASED_BY_TAG, "")
        new = merged(old, tokens)
        if new != old:
            client.set_model_version_tag(name, str(mv.version), ERASED_BY_TAG, new)
            client.set_model_version_tag(name, str(mv.version), ERASED_AT_TAG, now)
            tagged.append(str(mv.version))
    return tagged


def guard(client: mlflow.MlflowClient, name: str, version: str, tags: dict[str, str], action: str,
          override_reason: str | None) -> None:
    """Refuse an erased version, or record the operator's override on it."""
    why = refusal(name, version, {k: v for k, v in tags.items() if k != ERASED_OVERRIDE_TAG})
    if why is None:
        return
    if not override_reason:
        raise ErasedVersionRefused(why)
    client.set_model_version_tag(name, version, ERASED_OVERRIDE_TAG, override_record(override_reason, action))
    log.warning("%s: %s to erased version %s overridden: %s", name, action, version, override_reason)


def dispose_versions(name: str, *, now: datetime | None = None,
                     retention_days: float | None = None) -> disposition.DispositionRecord:
    """Delete the artifacts of erased versions past the retention window (never a served alias)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = mlflow.MlflowClient(tracking_uri=get_settings().tracking_uri)
    now = now or utcnow()
    days = get_settings().retention_days if retention_days is None else retention_days
    served = {str(v) for v in client.get_registered_model(name).aliases.values()}  # never a served alias
    entries = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tags: dict[str, Any] = mv.tags or {}
        erased_at = tags.get(ERASED_AT_TAG)
        if not tags.get(ERASED_BY_TAG) or tags.get(DISPOSED_TAG) or str(mv.version) in served:
            continue
        if erased_at and datetime.fromisoformat(erased_at) + timedelta(days=days) > now:
            continue
        items: list[tuple[disposition.What, str]] = []
        if tags.get(EXPORT_TAG):
            items.append(("model-version", tags[EXPORT_TAG]))
        entries += disposition.dispose(items, retention_days=0, now=now)
        uri = client.get_model_version_download_uri(name, str(mv.version))
        repo = get_artifact_repository(uri)
        files = [f.path for f in repo.list_artifacts()]
        repo.delete_artifacts()
        entries.append(disposition.DispositionEntry(what="model-version", uri=uri, files=len(files), bytes=0,
                                                    digest="", action="deleted", at=now))
        client.set_model_version_tag(name, str(mv.version), DISPOSED_TAG, now.isoformat())
    record = disposition.DispositionRecord(run_id=f"models-{name}-{now:%Y%m%d-%H%M%S}", entries=entries)
    if entries:
        disposition.write_record(record)
    return record


__all__ = ["ERASED_BY_TAG", "ErasedVersionRefused", "dispose_versions", "guard", "tag_older_versions"]
