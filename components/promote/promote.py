"""Promote a registered version to serving with safe alias moves (pipeline step 5).

Aliases: ``champion`` (serving), ``challenger`` (passed the gates, not yet serving), ``previous``
(the last champion, for :func:`rollback`).

Compare-and-set: ``champion`` moves to VERSION only if the current champion is still the version
VERSION was unlearned from (its ``unlearnops.parent_version`` tag), or there is no champion yet
and VERSION has no parent. Otherwise someone promoted in between, and VERSION still holds what
the new champion forgot (or vice versa): the requests must be re-run on the new champion.

Failure safety: the state is read first, then the moves are applied in order (``previous`` ←
old champion, ``champion`` ← VERSION, clear ``challenger``), each retried with exponential
backoff (tenacity). The champion is re-read just before it moves (a concurrent promotion aborts
the move). If any move fails, the moves already made are undone (with a longer retry window) so
the aliases end as they were, and a :class:`PromotionError` says what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from unlearnops import storage
from unlearnops.masking import mask_secrets
from unlearnops.model_erasure import tagged_requests
from unlearnops.modelio import EXPORT_TAG
from unlearnops.settings import get_settings
from unlearnops.types import ModelRef

from . import erasure, kserve, rollout

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
PARENT_TAG, GATE_TAG = "unlearnops.parent_version", "unlearnops.gate"
KSERVE_TAG = "unlearnops.kserve_manifest"
TARGETS = ("local", "kserve")
_PERMANENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
              "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST"}


class PromotionError(RuntimeError):
    """Promotion did not happen (the message says why and what to do)."""


class PromotionRefused(PromotionError):
    """The version was trained on erased data and no override reason was given (nothing changed)."""


class PromotionGateFailed(PromotionError):
    """The version failed its gates (tag ``unlearnops.gate=failed``): nothing changed (exit 3)."""


class PromotionConflict(PromotionError):
    """The compare-and-set on the champion failed: someone promoted in between."""


@dataclass
class RetryPolicy:
    """Attempts and exponential backoff (seconds) for alias moves, and for undoing them."""

    attempts: int = 4
    wait_initial: float = 0.5
    wait_max: float = 8.0
    undo_attempts: int = 8
    undo_wait_max: float = 15.0


RETRY = RetryPolicy()
#: Test hook called with the step about to run ("read", "move:previous", "move:champion", ...).
_hook: Callable[[str], None] | None = None
Move = tuple[str, str | None]  # (alias, version or None to delete)


def _transient(err: BaseException) -> bool:
    if isinstance(err, MlflowException):
        return err.error_code not in _PERMANENT
    return isinstance(err, OSError | ConnectionError | TimeoutError)


def _retry(fn: Callable[[], Any], attempts: int, wait_max: float) -> Any:
    for attempt in Retrying(stop=stop_after_attempt(attempts), reraise=True,
                            wait=wait_exponential(multiplier=RETRY.wait_initial, max=wait_max),
                            retry=retry_if_exception(_transient)):
        with attempt:
            return fn()
    return None  # pragma: no cover - Retrying re-raises


def _step(name: str) -> None:
    if _hook is not None:
        _hook(name)


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=get_settings().tracking_uri)


def read_aliases(client: mlflow.MlflowClient, name: str) -> dict[str, str]:
    """alias → version of a registered model (retried; a missing model is a clear error)."""
    try:
        model = _retry(lambda: client.get_registered_model(name), RETRY.attempts, RETRY.wait_max)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionError(f"no registered model {name!r}: register it first "
                                 "(unlearnops register --model URI --name NAME)") from err
        raise _unreachable(err, "nothing was changed") from err
    return {k: str(v) for k, v in (model.aliases or {}).items()}


def _unreachable(err: BaseException, state: str) -> PromotionError:
    return PromotionError(mask_secrets(f"the registry at {get_settings().tracking_uri} failed "
                                       f"({type(err).__name__}: {str(err)[:300]}); {state}"))


def _set(client: mlflow.MlflowClient, name: str, alias: str, version: str | None, attempts: int,
         wait_max: float) -> None:
    if version is None:
        def delete() -> None:
            try:
                client.delete_registered_model_alias(name, alias)
            except MlflowException as err:
                if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise
        _retry(delete, attempts, wait_max)
    else:
        _retry(lambda: client.set_registered_model_alias(name, alias, version), attempts, wait_max)


def apply_moves(client: mlflow.MlflowClient, name: str, moves: list[Move], before: dict[str, str],
                expect_champion: str | None = None, check_champion: bool = False) -> None:
    """Apply ``moves`` in order; on any failure undo the applied ones (aliases end as ``before``)."""
    done: list[Move] = []
    try:
        for alias, version in moves:
            _step(f"move:{alias}")
            if alias == CHAMPION and check_champion:
                now = read_aliases(client, name).get(CHAMPION)
                if now != expect_champion:
                    raise PromotionConflict(f"the champion of {name} changed to version {now} during the "
                                            f"promotion (expected {expect_champion}); re-run the requests "
                                            f"on models:/{name}@champion")
            _set(client, name, alias, version, RETRY.attempts, RETRY.wait_max)
            done.append((alias, before.get(alias)))
    except Exception as err:
        left = _undo(client, name, done)
        if isinstance(err, PromotionError) and not left:
            raise
        state = ("aliases left as they were; retry when the registry answers" if not left else
                 f"and undoing failed too: {', '.join(left)} — check with `unlearnops models {name}`")
        raise _unreachable(err, state) from err


def _undo(client: mlflow.MlflowClient, name: str, done: list[Move]) -> list[str]:
    """Restore each moved alias (newest first); returns the aliases that could not be restored."""
    left = []
    for alias, old in reversed(done):
        try:
            _set(client, name, alias, old, RETRY.undo_attempts, RETRY.undo_wait_max)
        except Exception as err:  # noqa: BLE001 - report every alias we could not restore
            log.error("could not restore alias %s of %s to %s: %s", alias, name, old, err)
            left.append(f"{alias} should be {old or '<unset>'}")
    return left


def check_parent(name: str, version: str, parent: str | None, champion: str | None) -> None:
    """The compare-and-set rule (see the module docstring); raises :class:`PromotionConflict`."""
    if champion is None and parent is None:
        return
    if champion is not None and parent == champion:
        return
    if champion is None:
        raise PromotionConflict(
            f"{name} has no champion, but version {version} was unlearned from version {parent}: "
            f"set the champion first (unlearnops promote {name} {parent}) or pass expect_parent=False")
    raise PromotionConflict(
        f"the champion of {name} is version {champion}, but version {version} was unlearned from "
        f"{'version ' + parent if parent else 'no registered parent'}: someone promoted in between. "
        f"Re-run the requests on the new champion (base model models:/{name}@champion).")


def promote(name: str, version: str, *, target: str = "local", expect_parent: bool = True,
            out: str | None = None, canary_traffic_percent: int | None = None,
            namespace: str | None = None, override_reason: str | None = None, apply: bool = True,
            api_client: Any = None, timeout_s: float = 600.0) -> ModelRef:
    """Make ``version`` the champion of ``name`` (compare-and-set on its parent); see the module docstring.

    ``target="kserve"`` also writes the version's InferenceService manifest (validated against
    the CRD) to ``out`` (default ``<storage root>/registry/<name>/kserve/v<version>.yaml``) and,
    with ``apply``, creates or patches it in the cluster and waits until it is Ready *before* any
    alias moves (components/promote/rollout.py); a failed or slow rollout leaves the aliases and
    the old revision serving and raises :class:`PromotionError` with the condition's message.
    """
    if target not in TARGETS:
        raise PromotionError(f"target {target!r}: use one of {', '.join(TARGETS)}")
    version = str(version)
    client = _client()
    _step("read")
    before = read_aliases(client, name)
    try:
        mv = _retry(lambda: client.get_model_version(name, version), RETRY.attempts, RETRY.wait_max)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionError(f"{name} has no version {version} (see `unlearnops models {name}`)") from err
        raise _unreachable(err, "nothing was changed") from err
    tags = mv.tags or {}
    if tags.get(GATE_TAG) == "failed":
        raise PromotionGateFailed(f"version {version} of {name} failed its gates (tag {GATE_TAG}); "
                                  "not promoted")
    _erasure_guard(client, name, version, tags, "promote", override_reason)
    manifest = _kserve_manifest(name, version, tags, canary_traffic_percent, namespace) \
        if target == "kserve" else None
    champion = before.get(CHAMPION)
    if champion != version:
        if expect_parent:
            check_parent(name, version, tags.get(PARENT_TAG), champion)
        if manifest is not None and apply:
            _roll_out(manifest, namespace, api_client, timeout_s)
        moves: list[Move] = [(PREVIOUS, champion)] if champion else []
        moves.append((CHAMPION, version))
        if before.get(CHALLENGER) == version:
            moves.append((CHALLENGER, None))
        apply_moves(client, name, moves, before, expect_champion=champion, check_champion=True)
        log.info("%s: champion %s → %s", name, champion, version)
        erasure.tag_older_versions(client, name, version, tags)  # they still hold what it erased
    if manifest is not None:
        dest = out or storage.join(get_settings().storage_root_uri, "registry", name, "kserve",
                                   f"v{version}.yaml")
        storage.write_text(dest, kserve.to_yaml(manifest))
        _retry(lambda: client.set_model_version_tag(name, version, KSERVE_TAG, dest), RETRY.attempts,
               RETRY.wait_max)
    return ModelRef(name=name, version=version, alias=CHAMPION)


def _kserve_manifest(name: str, version: str, tags: dict[str, str], canary: int | None,
                     namespace: str | None) -> dict[str, Any]:
    export = tags.get(EXPORT_TAG)
    if not export:
        raise PromotionError(f"version {version} of {name} has no exported copy (tag {EXPORT_TAG}); "
                             "re-run `unlearnops register` for it")
    try:
        return kserve.inference_service(name, version, export, canary_traffic_percent=canary,
                                        namespace=namespace)
    except ValueError as err:
        raise PromotionError(str(err)) from err


def _roll_out(manifest: dict[str, Any], namespace: str | None, api_client: Any, timeout_s: float) -> None:
    ns = namespace or manifest["metadata"].get("namespace") or "default"
    try:
        done = rollout.KServeRollout(api_client, timeout_s=timeout_s).apply_and_wait(manifest, ns)
    except rollout.RolloutError as err:
        raise PromotionError(f"{mask_secrets(str(err))}; the aliases were not moved and the previous "
                             "revision keeps serving") from err
    log.info("InferenceService %s/%s %s and Ready (generation %d, %.0fs)", ns, done.name,
             "created" if done.created else "patched", done.generation, done.seconds)


def rollback(name: str, override_reason: str | None = None, *, target: str = "local",
             namespace: str | None = None, api_client: Any = None, timeout_s: float = 600.0) -> ModelRef:
    """``champion`` ← ``previous`` (and ``previous`` is cleared); the aliases end as they were on failure.

    A previous version trained on data erased since is refused unless ``override_reason`` is given.
    ``target="kserve"``: the InferenceService is patched back to the previous version and must be
    Ready before the aliases move (as in :func:`promote`).
    """
    if target not in TARGETS:
        raise PromotionError(f"target {target!r}: use one of {', '.join(TARGETS)}")
    client = _client()
    _step("read")
    before = read_aliases(client, name)
    previous = before.get(PREVIOUS)
    if previous is None:
        raise PromotionError(f"{name} has no 'previous' version to roll back to")
    tags = _retry(lambda: client.get_model_version(name, previous), RETRY.attempts, RETRY.wait_max).tags or {}
    _erasure_guard(client, name, previous, tags, "rollback", override_reason)
    if target == "kserve":
        _roll_out(_kserve_manifest(name, previous, tags, None, namespace), namespace, api_client, timeout_s)
    apply_moves(client, name, [(CHAMPION, previous), (PREVIOUS, None)], before,
                expect_champion=before.get(CHAMPION), check_champion=True)
    log.warning("%s: rolled back champion %s → %s", name, before.get(CHAMPION), previous)
    return ModelRef(name=name, version=previous, alias=CHAMPION)


def _erasure_guard(client: mlflow.MlflowClient, name: str, version: str, tags: dict[str, str], action: str,
                   override_reason: str | None) -> None:
    try:
        erasure.guard(client, name, version, tags, action, override_reason)
    except erasure.ErasedVersionRefused as err:
        raise PromotionRefused(f"{err}; nothing was changed") from None


def describe(name: str) -> list[dict[str, Any]]:
    """Every version of ``name`` with its aliases, gate, requests, parent, method and export URI."""
    client = _client()
    aliases = read_aliases(client, name)
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(v, []).append(alias)
    rows = []
    for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda m: int(m.version)):
        tags = mv.tags or {}
        rows.append({"version": str(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                     "gate": tags.get(GATE_TAG, ""), "parent": tags.get(PARENT_TAG, ""),
                     "method": tags.get("unlearnops.method", ""),
                     "requests": tagged_requests(tags),  # keyed-hash tokens of the request ids
                     "export_uri": tags.get(EXPORT_TAG, ""), "created": mv.creation_timestamp,
                     "erased_by": tags.get(erasure.ERASED_BY_TAG, "")})
    return rows
