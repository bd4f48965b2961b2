"""Roll a version out on KServe: create or patch the InferenceService, wait until it is Ready.

The alias moves only after this returns (see :func:`promote.promote`). ``apply_and_wait``:

1. GET the InferenceService; create it (POST) if it does not exist, else JSON-merge-PATCH its
   predictor (``storageUri``, ``canaryTrafficPercent``) and the version annotation.
2. Poll until ``Ready`` is ``True`` for the new spec: ``status.observedGeneration`` ≥ the
   generation our write returned (the new revision), and ``modelStatus.transitionStatus`` not
   ``InProgress``. ``BlockedByFailedLoad`` / ``InvalidSpec`` or a timeout fail at once.
3. On failure, the predictor is patched back to what it was (the old revision keeps serving) and
   :class:`RolloutError` carries the Ready condition's message.

Uses the official ``kubernetes`` client (in-cluster config, else the kubeconfig); the Role in
charts/unlearnops grants exactly get/create/patch on inferenceservices.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
#: Seconds between status reads.
POLL_S = 5.0


class RolloutError(RuntimeError):
    """The InferenceService did not become Ready with the new version; the old one keeps serving."""


@dataclass
class Rollout:
    """What ``apply_and_wait`` did: the object's name, whether it was created, the generation, seconds."""

    name: str
    namespace: str
    created: bool
    generation: int
    seconds: float


def default_api_client() -> Any:
    """An ApiClient from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _ready(status: dict[str, Any]) -> tuple[str, str]:
    """(status of the Ready condition, its message or reason)."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status", "Unknown")), str(cond.get("message") or cond.get("reason") or "")
    return "Unknown", ""


def _failure(status: dict[str, Any]) -> str | None:
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in FAILED_TRANSITIONS:
        info = model.get("lastFailureInfo") or {}
        why = info.get("message") or info.get("reason") or _ready(status)[1]
        return f"{model['transitionStatus']}: {why}".rstrip(": ")
    return None


def _predictor_patch(manifest: dict[str, Any]) -> dict[str, Any]:
    """Merge patch setting the new model (and canary), clearing a stale canary percentage."""
    predictor = manifest["spec"]["predictor"]
    patch_pred: dict[str, Any] = {"model": {"storageUri": predictor["model"]["storageUri"]},
                                  "canaryTrafficPercent": predictor.get("canaryTrafficPercent")}
    return {"metadata": {"annotations": manifest["metadata"].get("annotations", {})},
            "spec": {"predictor": patch_pred}}


def _restore_patch(old: dict[str, Any]) -> dict[str, Any]:
    predictor = old["spec"]["predictor"]
    return {"metadata": {"annotations": (old.get("metadata") or {}).get("annotations") or {}},
            "spec": {"predictor": {"model": {"storageUri": predictor["model"]["storageUri"]},
                                   "canaryTrafficPercent": predictor.get("canaryTrafficPercent")}}}


class KServeRollout:
    """Create or patch one InferenceService and wait for it; see the module docstring."""

    def __init__(self, api_client: Any = None, *, timeout_s: float = 600.0, poll_s: float | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        from kubernetes import client as k8s

        self.custom = k8s.CustomObjectsApi(api_client or default_api_client())
        self.timeout_s, self.poll_s, self.sleep = timeout_s, POLL_S if poll_s is None else poll_s, sleep

    def _get(self, ns: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise RolloutError(f"cannot read InferenceService {ns}/{name} "
                               f"({err.status} {err.reason})") from err

    def _patch(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch (``null`` removes a key, e.g. a canary percentage no longer wanted)."""
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)

    def apply_and_wait(self, manifest: dict[str, Any], namespace: str) -> Rollout:
        """Create or patch ``manifest``'s InferenceService in ``namespace`` and wait until it is Ready."""
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        start = time.monotonic()
        old = self._get(namespace, name)
        try:
            if old is None:
                body = copy.deepcopy(manifest)
                body["metadata"]["namespace"] = namespace
                obj = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            else:
                obj = self._patch(namespace, name, _predictor_patch(manifest))
        except ApiException as err:
            verb = "create" if old is None else "patch"
            raise RolloutError(f"cannot {verb} InferenceService {namespace}/{name} "
                               f"({err.status} {err.reason}): {str(err.body)[:300]}") from err
        generation = int((obj.get("metadata") or {}).get("generation") or 1)
        try:
            self._wait(namespace, name, generation, start)
        except RolloutError:
            if old is not None:
                self._patch(namespace, name, _restore_patch(old))
            raise
        return Rollout(name, namespace, old is None, generation, time.monotonic() - start)

    def _wait(self, ns: str, name: str, generation: int, start: float) -> None:
        message = "no status yet"
        while True:
            obj = self._get(ns, name) or {}
            status = obj.get("status") or {}
            failure = _failure(status)
            if failure:
                raise RolloutError(f"InferenceService {ns}/{name} failed: {failure}")
            ready, message = _ready(status)
            current = int(status.get("observedGeneration") or 0) >= generation
            settled = (status.get("modelStatus") or {}).get("transitionStatus") != "InProgress"
            if ready == "True" and current and settled:
                return
            if time.monotonic() - start >= self.timeout_s:
                raise RolloutError(f"InferenceService {ns}/{name} not Ready after {self.timeout_s:.0f}s "
                                   f"(Ready={ready}: {message or 'no message'})")
            self.sleep(self.poll_s)
