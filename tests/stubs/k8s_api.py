"""A stand-in for the Kubernetes API server: RayJob custom objects, pod lists and pod logs.

A local HTTP server on a free loopback port for the official ``kubernetes`` client
(``Configuration(host=stub.url)``). It checks what a real API server with KubeRay installed
checks: a created RayJob must be a ``ray.io/v1`` ``RayJob`` valid against the vendored CRD, in
the namespace of the URL, with a name not already taken (409). Each GET of the RayJob returns
the next status of ``statuses`` (the last one repeats), so a test scripts the job's life; pods
labelled ``job-name=<rayjob>`` and their logs come from ``logs`` (the text so far, per poll).

InferenceServices (serving.kserve.io/v1beta1): POST checks the body against the CRD; PATCH must
be a JSON merge patch (``application/merge-patch+json``) and the merged object must still be
valid; a write that changes ``spec`` bumps ``metadata.generation``. After each write, GETs walk
``isvc_script`` (``"progress"``, ``"ready"``, ``"failed"``; the last repeats): ``ready`` reports
``Ready=True`` at the new generation, ``progress`` the old generation still serving, ``failed``
``BlockedByFailedLoad`` with a message. Every request is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.stubs.http import Recorded, StubServer

RAYJOB = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/rayjobs(?:/([^/]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
ISVC = re.compile(r"^/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?$")
FAILED_LOAD = "model server failed to load the model: config.json not found"


@dataclass
class K8sState:
    rayjobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    gets: int = 0
    isvcs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    isvc_gets: int = 0
    patch_types: list[str] = field(default_factory=list)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes a key)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class K8sApiStub(StubServer):
    """Use as a context manager; ``configuration()`` gives a client Configuration for it."""

    def __init__(self, statuses: list[dict[str, Any]] | None = None, logs: list[str] | None = None,
                 validate: bool = True, isvc_script: list[str] | None = None):
        self.isvc_script = isvc_script or ["ready"]
        self.statuses = statuses or [{"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}]
        self.logs = logs or []
        self.validate = validate
        self.state = K8sState()
        super().__init__()

    def configuration(self) -> Any:
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return config

    def api_client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration())

    def calls(self, method: str, pattern: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and pattern in r.path]

    # ------------------------------------------------------------------ routing
    def respond(self, method: str, path: str, query: dict[str, list[str]], body: Any,
                headers: Any) -> tuple[int, Any, str]:
        with self.lock:
            if ISVC.match(path) and method == "PATCH":
                self.state.patch_types.append(str(headers.get("Content-Type", "")))
            return self.route(method, path, query, body)

    def route(self, method: str, path: str, query: dict[str, list[str]],
              body: Any) -> tuple[int, Any, str]:
        if m := RAYJOB.match(path):
            return self._rayjob(method, m.group(1), m.group(2), body)
        if m := ISVC.match(path):
            return self._isvc(method, m.group(1), m.group(2), body)
        if (m := PODS.match(path)) and method == "GET":
            return 200, self._pods(m.group(1), query), "application/json"
        if (m := POD_LOG.match(path)) and method == "GET":
            return 200, self._log_text(), "text/plain"
        return 404, _status(404, "NotFound", f"no route {method} {path}"), "application/json"

    def _rayjob(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, Any, str]:
        js = "application/json"
        if method == "POST" and name is None:
            problem = self._check(ns, body)
            if problem:
                return 422, _status(422, "Invalid", problem), js
            key = (ns, body["metadata"]["name"])
            if key in self.state.rayjobs:
                return 409, _status(409, "AlreadyExists", f'rayjobs.ray.io "{key[1]}" already exists'), js
            obj = {**body, "metadata": {**body["metadata"], "uid": "uid-" + key[1]}}
            self.state.rayjobs[key] = obj
            return 201, obj, js
        if name is None:
            return 405, _status(405, "MethodNotAllowed", "method not allowed"), js
        key = (ns, name)
        if key not in self.state.rayjobs:
            return 404, _status(404, "NotFound", f'rayjobs.ray.io "{name}" not found'), js
        if method == "GET":
            status = self.statuses[min(self.state.gets, len(self.statuses) - 1)]
            self.state.gets += 1
            return 200, {**self.state.rayjobs[key], "status": status}, js
        if method == "DELETE":
            self.state.rayjobs.pop(key)
            self.state.deleted.append(name)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}, js
        return 405, _status(405, "MethodNotAllowed", "method not allowed"), js

    def _isvc(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, Any, str]:
        js = "application/json"
        if method == "POST" and name is None:
            problem = self._check_isvc(ns, body)
            if problem:
                return 422, _status(422, "Invalid", problem), js
            key = (ns, body["metadata"]["name"])
            if key in self.state.isvcs:
                return 409, _status(409, "AlreadyExists", f'inferenceservices "{key[1]}" already exists'), js
            obj = {**body, "metadata": {**body["metadata"], "namespace": ns, "generation": 1}}
            self.state.isvcs[key] = obj
            self.state.isvc_gets = 0
            return 201, obj, js
        key = (ns, name or "")
        if name is None or key not in self.state.isvcs:
            return 404, _status(404, "NotFound", f'inferenceservices "{name}" not found'), js
        current = self.state.isvcs[key]
        if method == "GET":
            step = self.isvc_script[min(self.state.isvc_gets, len(self.isvc_script) - 1)]
            self.state.isvc_gets += 1
            return 200, {**current, "status": self._isvc_status(current, step)}, js
        if method == "PATCH":
            if self.state.patch_types[-1].split(";")[0] != "application/merge-patch+json":
                return 415, _status(415, "UnsupportedMediaType", self.state.patch_types[-1]), js
            merged = merge_patch({k: v for k, v in current.items() if k != "status"}, body)
            problem = self._check_isvc(ns, merged)
            if problem:
                return 422, _status(422, "Invalid", problem), js
            generation = current["metadata"]["generation"] + (merged.get("spec") != current.get("spec"))
            merged["metadata"] = {**merged["metadata"], "generation": generation}
            self.state.isvcs[key] = merged
            self.state.isvc_gets = 0
            return 200, merged, js
        return 405, _status(405, "MethodNotAllowed", "method not allowed"), js

    def _check_isvc(self, ns: str, body: Any) -> str:
        if not isinstance(body, dict) or body.get("kind") != "InferenceService":
            return "expected an InferenceService"
        if (body.get("metadata") or {}).get("namespace", ns) != ns:
            return "the namespace of the provided object does not match the URL"
        from unlearnops import crds

        manifest = {k: v for k, v in body.items() if k != "status"}
        return "; ".join(crds.errors(manifest))

    @staticmethod
    def _isvc_status(obj: dict[str, Any], step: str) -> dict[str, Any]:
        gen = obj["metadata"]["generation"]
        if step == "ready":
            return {"observedGeneration": gen, "modelStatus": {"transitionStatus": "UpToDate"},
                    "conditions": [{"type": "Ready", "status": "True"}]}
        if step == "failed":
            return {"observedGeneration": gen,
                    "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": FAILED_LOAD}},
                    "conditions": [{"type": "Ready", "status": "False", "reason": "ModelLoadFailed",
                                    "message": FAILED_LOAD}]}
        return {"observedGeneration": gen - 1, "modelStatus": {"transitionStatus": "InProgress"},
                "conditions": [{"type": "Ready", "status": "Unknown", "message": "new revision rolling out"}]}

    def _check(self, ns: str, body: Any) -> str:
        if not isinstance(body, dict):
            return "body must be a JSON object"
        if body.get("apiVersion") != "ray.io/v1" or body.get("kind") != "RayJob":
            return f"expected ray.io/v1 RayJob, got {body.get('apiVersion')} {body.get('kind')}"
        meta = body.get("metadata") or {}
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", str(meta.get("name", ""))) \
                or len(meta["name"]) > 63:
            return f"metadata.name {meta.get('name')!r} is not a DNS-1123 label"
        if meta.get("namespace", ns) != ns:
            return (f"the namespace of the provided object ({meta.get('namespace')}) "
                    f"does not match the URL ({ns})")
        if self.validate:
            from unlearnops import crds

            problems = crds.errors(body)
            if problems:
                return "; ".join(problems)
        return ""

    def _pods(self, ns: str, query: dict[str, list[str]]) -> dict[str, Any]:
        selector = query.get("labelSelector", [""])[0]
        items = []
        for (job_ns, name) in self.state.rayjobs:
            if job_ns == ns and selector == f"job-name={name}" and self.logs:
                items.append({"metadata": {"name": f"{name}-submitter", "namespace": ns,
                                           "labels": {"job-name": name}}})
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _log_text(self) -> str:
        if not self.logs:
            return ""
        return self.logs[min(max(self.state.gets - 1, 0), len(self.logs) - 1)]
