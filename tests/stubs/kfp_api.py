"""A stand-in for the Kubeflow Pipelines v2beta1 REST API (the calls ``kfp.Client`` 2.17 makes).

A local HTTP server on a free loopback port that keeps pipelines, versions, experiments, runs and
recurring runs in memory and, like the real API server, refuses bodies it would refuse: unknown
fields, a run whose parameters are not the pipeline's inputs or miss a required one, a version
upload without the ``uploadfile`` part, with a query parameter the endpoint does not take or with
a file that is not pipeline IR YAML, a cron trigger
that is not 6 fields, ``max_concurrency`` outside 1..10. Every request is recorded.

Endpoints (paths of kfp_server_api 2.17): GET healthz; GET/POST pipelines, POST pipelines/upload,
POST pipelines/upload_version, GET pipelines/{id}/versions; GET/POST experiments; POST runs,
GET runs/{id}; POST recurringruns, GET recurringruns/{id}, GET recurringruns (list by display
name and experiment), DELETE recurringruns/{id}.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from tests.stubs.http import Recorded, StubServer

PREFIX = "/apis/v2beta1"
RUN_FIELDS = {"experiment_id", "display_name", "description", "pipeline_spec", "pipeline_version_reference",
              "runtime_config", "service_account", "plugins_input"}
RECURRING_FIELDS = {"display_name", "description", "pipeline_spec", "pipeline_version_reference",
                    "runtime_config", "service_account", "max_concurrency", "trigger", "mode",
                    "no_catchup", "namespace", "experiment_id", "plugins_input"}
UPLOAD_QUERY = {"name", "display_name", "description", "namespace", "tags"}  # pipelines/upload
UPLOAD_VERSION_QUERY = {"name", "display_name", "pipelineid", "description", "tags"}  # …/upload_version


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class KfpState:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring_runs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _display_filter(query: dict[str, list[str]]) -> str | None:
    raw = query.get("filter", [None])[0]
    if not raw:
        return None
    predicates = json.loads(raw).get("predicates", [])
    for pred in predicates:
        if pred.get("key") == "display_name" and pred.get("operation") in (1, "EQUALS"):
            return str(pred.get("stringValue", pred.get("string_value")))
    raise ApiError(400, f"unsupported filter {raw}")


def _parse_upload(headers: Any, body: bytes) -> tuple[str, bytes]:
    ctype = headers.get("Content-Type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(400, f"upload needs multipart/form-data, got {ctype!r}")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return str(part.get_filename() or ""), part.get_payload(decode=True) or b""
    raise ApiError(400, "multipart body has no 'uploadfile' part")


def _check_query(query: dict[str, list[str]], allowed: set[str]) -> None:
    unknown = set(query) - allowed
    if unknown:
        raise ApiError(400, f"unknown query parameter(s) {sorted(unknown)}")


def _pipeline_spec(content: bytes) -> dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(content.decode()) if d]
    except yaml.YAMLError as err:
        raise ApiError(400, f"uploaded file is not YAML: {err}") from err
    if not docs or "pipelineInfo" not in docs[0] or "root" not in docs[0]:
        raise ApiError(400, "uploaded file is not a compiled pipeline (no pipelineInfo/root)")
    return docs[0]


class KfpApiStub(StubServer):
    """Use as a context manager; ``url`` is the host for ``kfp.Client(host=url)``."""

    def __init__(self) -> None:
        self.state = KfpState()
        super().__init__()

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == PREFIX + path]

    # ------------------------------------------------------------------ routing
    def decode_body(self, raw: bytes, headers: Any) -> Any:
        """JSON bodies decoded; multipart uploads kept raw for ``_parse_upload``."""
        if raw and headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw)
        return raw

    def respond(self, method: str, path: str, query: dict[str, list[str]], body: Any,
                headers: Any) -> tuple[int, Any, str]:
        try:
            status, obj = self.route(method, path, query, body, headers)
        except ApiError as err:
            status, obj = err.status, {"error": err.message, "code": 3, "message": err.message}
        return status, obj, "application/json"

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any,
              headers: Any) -> tuple[int, Any]:
        if not path.startswith(PREFIX):
            raise ApiError(404, f"no route {path}")
        parts = path[len(PREFIX):].strip("/").split("/")
        with self.lock:
            return self._route(method, parts, query, body, headers)

    def _route(self, method: str, parts: list[str], query: dict[str, list[str]], body: Any,
               headers: Any) -> tuple[int, Any]:
        st = self.state
        key = (method, parts[0], len(parts))
        if key == ("GET", "healthz", 1):
            return 200, {"multi_user": False}
        if key == ("GET", "pipelines", 1):
            name = _display_filter(query)
            found = [p for p in st.pipelines.values() if name is None or p["display_name"] == name]
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if key == ("POST", "pipelines", 2) and parts[1] == "upload":
            return 200, self._upload_pipeline(query, body, headers)
        if key == ("POST", "pipelines", 2) and parts[1] == "upload_version":
            return 200, self._upload_version(query, body, headers)
        if key == ("GET", "pipelines", 3) and parts[2] == "versions":
            if parts[1] not in st.pipelines:
                raise ApiError(404, f"pipeline {parts[1]} not found")
            name = _display_filter(query)
            found = [v for v in st.versions.values() if v["pipeline_id"] == parts[1]
                     and (name is None or v["display_name"] == name)]
            return 200, ({"pipeline_versions": found, "total_size": len(found)} if found else {})
        if key == ("GET", "experiments", 1):
            name = _display_filter(query)
            found = [e for e in st.experiments.values() if name is None or e["display_name"] == name]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if key == ("POST", "experiments", 1):
            return 200, self._create_experiment(body)
        if key == ("POST", "runs", 1):
            return 200, self._create_run(body)
        if key == ("GET", "runs", 2):
            if parts[1] not in st.runs:
                raise ApiError(404, f"run {parts[1]} not found")
            return 200, st.runs[parts[1]]
        if key == ("POST", "recurringruns", 1):
            return 200, self._create_recurring_run(body)
        if key == ("GET", "recurringruns", 2):
            if parts[1] not in st.recurring_runs:
                raise ApiError(404, f"recurring run {parts[1]} not found")
            return 200, st.recurring_runs[parts[1]]
        if key == ("GET", "recurringruns", 1):
            name, exp = _display_filter(query), query.get("experiment_id", [None])[0]
            found = [r for r in st.recurring_runs.values() if (name is None or r["display_name"] == name)
                     and (exp is None or r.get("experiment_id") == exp)]
            return 200, ({"recurringRuns": found, "total_size": len(found)} if found else {})
        if key == ("DELETE", "recurringruns", 2):
            if st.recurring_runs.pop(parts[1], None) is None:
                raise ApiError(404, f"recurring run {parts[1]} not found")
            return 200, {}
        raise ApiError(404, f"no route {method} {'/'.join(parts)}")

    # ------------------------------------------------------------------ handlers
    def _upload_pipeline(self, query: dict[str, list[str]], body: bytes, headers: Any) -> dict[str, Any]:
        _check_query(query, UPLOAD_QUERY)
        name = query.get("name", [""])[0]
        if not name:
            raise ApiError(400, "pipeline upload needs a name query parameter")
        if any(p["display_name"] == name for p in self.state.pipelines.values()):
            raise ApiError(409, f"pipeline {name} already exists")
        _, content = _parse_upload(headers, body)
        spec = _pipeline_spec(content)
        pid = str(uuid.uuid4())
        pipeline = {"pipeline_id": pid, "display_name": name, "name": name, "created_at": _now(),
                    "description": query.get("description", [""])[0]}
        self.state.pipelines[pid] = pipeline
        self._add_version(pid, name, spec, pipeline["description"])  # first version from the upload
        return pipeline

    def _upload_version(self, query: dict[str, list[str]], body: bytes, headers: Any) -> dict[str, Any]:
        _check_query(query, UPLOAD_VERSION_QUERY)
        name = query.get("name", [""])[0]
        pid = query.get("pipelineid", [""])[0]
        if not name or not pid:
            raise ApiError(400, "version upload needs name and pipelineid query parameters")
        if pid not in self.state.pipelines:
            raise ApiError(404, f"pipeline {pid} not found")
        if any(v["pipeline_id"] == pid and v["display_name"] == name for v in self.state.versions.values()):
            raise ApiError(409, f"version {name} already exists")
        _, content = _parse_upload(headers, body)
        return self._add_version(pid, name, _pipeline_spec(content), query.get("description", [""])[0])

    def _add_version(self, pid: str, name: str, spec: dict[str, Any], description: str) -> dict[str, Any]:
        vid = str(uuid.uuid4())
        version = {"pipeline_id": pid, "pipeline_version_id": vid, "display_name": name, "name": name,
                   "description": description, "created_at": _now()}
        self.state.versions[vid] = version
        self.state.specs[vid] = spec
        return version

    def _create_experiment(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("display_name"):
            raise ApiError(400, "experiment needs a display_name")
        unknown = set(body) - {"display_name", "description", "namespace"}
        if unknown:
            raise ApiError(400, f"unknown experiment field(s) {sorted(unknown)}")
        eid = str(uuid.uuid4())
        exp = {"experiment_id": eid, "display_name": body["display_name"], "created_at": _now(),
               "storage_state": "AVAILABLE"}
        self.state.experiments[eid] = exp
        return exp

    def _check_job(self, body: Any, fields: set[str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        unknown = set(body) - fields
        if unknown:
            raise ApiError(400, f"unknown field(s) {sorted(unknown)}")
        if not body.get("display_name"):
            raise ApiError(400, "display_name is required")
        if body.get("experiment_id") not in self.state.experiments:
            raise ApiError(404, f"experiment {body.get('experiment_id')} not found")
        ref = body.get("pipeline_version_reference") or {}
        if body.get("pipeline_spec") is None:
            if ref.get("pipeline_id") not in self.state.pipelines:
                raise ApiError(404, f"pipeline {ref.get('pipeline_id')} not found")
            version = self.state.versions.get(ref.get("pipeline_version_id", ""))
            if version is None or version["pipeline_id"] != ref["pipeline_id"]:
                raise ApiError(404, f"pipeline version {ref.get('pipeline_version_id')} not found")
            spec = self.state.specs[version["pipeline_version_id"]]
        else:
            spec = body["pipeline_spec"]
        self._check_parameters(spec, (body.get("runtime_config") or {}).get("parameters") or {})
        return spec

    @staticmethod
    def _check_parameters(spec: dict[str, Any], params: dict[str, Any]) -> None:
        declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(params) - set(declared)
        if unknown:
            raise ApiError(400, f"parameter(s) {sorted(unknown)} are not inputs of the pipeline")
        missing = [n for n, d in declared.items() if not d.get("isOptional") and n not in params]
        if missing:
            raise ApiError(400, f"required pipeline parameter(s) {sorted(missing)} missing")

    def _create_run(self, body: Any) -> dict[str, Any]:
        self._check_job(body, RUN_FIELDS)
        rid = str(uuid.uuid4())
        run = {**body, "run_id": rid, "state": "PENDING", "created_at": _now(), "storage_state": "AVAILABLE"}
        self.state.runs[rid] = run
        return run

    def _create_recurring_run(self, body: Any) -> dict[str, Any]:
        self._check_job(body, RECURRING_FIELDS)
        trigger = body.get("trigger") or {}
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        periodic = trigger.get("periodic_schedule")
        if not cron and not periodic:
            raise ApiError(400, "trigger needs cron_schedule.cron or periodic_schedule")
        if cron and len(cron.split()) != 6:
            raise ApiError(400, f"cron {cron!r} must have 6 fields")
        concurrency = int(body.get("max_concurrency") or 1)
        if not 1 <= concurrency <= 10:
            raise ApiError(400, f"max_concurrency {concurrency} must be in 1..10")
        if body.get("mode") not in ("ENABLE", "DISABLE"):
            raise ApiError(400, f"mode {body.get('mode')!r} must be ENABLE or DISABLE")
        rid = str(uuid.uuid4())
        state = "ENABLED" if body["mode"] == "ENABLE" else "DISABLED"
        rec = {**body, "recurring_run_id": rid, "status": state, "created_at": _now()}
        self.state.recurring_runs[rid] = rec
        return rec
