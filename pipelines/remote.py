"""Submit and schedule the compiled pipelines on a Kubeflow Pipelines cluster through ``kfp.Client``.

``submit``: upload the compiled pipeline as a new version (the pipeline is created on first use;
a version whose YAML was uploaded before is reused, named by its content hash), then create a
run in an experiment. ``schedule``: the same upload, then a recurring run of ``compliance_batch``
with a cron trigger, ``max_concurrency=1`` and ``no_catchup=True``. ``upload_all``: the upload
alone, for every pipeline (the chart's post-install/upgrade Job runs it before ``schedule``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .compile import ALL_PIPELINES, compile_text
from .options import CompileOptions

DEFAULT_EXPERIMENT = "unlearnops"
DISPLAY_NAMES = {"unlearn_on_request": "unlearn-on-request", "compliance_batch": "compliance-batch",
                 "compliance_retrain": "compliance-retrain"}


class RemoteError(RuntimeError):
    """The KFP API refused or could not be reached; the message says what to check."""


@dataclass(frozen=True)
class Uploaded:
    pipeline_id: str
    version_id: str
    version_name: str
    created: bool


@dataclass(frozen=True)
class Submitted:
    """What ``submit``/``schedule`` created on the cluster."""

    pipeline_id: str
    version_id: str
    version_name: str
    experiment_id: str
    run_id: str = ""
    recurring_run_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def client(host: str, token: str | None = None, namespace: str | None = None) -> Any:
    """A ``kfp.Client`` for ``host`` (``http(s)://…``), optionally with a bearer token."""
    import warnings

    import kfp

    if not host.startswith(("http://", "https://")):
        raise RemoteError(f"--host {host!r} must be an http:// or https:// URL of the KFP API")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
        except Exception as err:  # noqa: BLE001 - kfp raises many kinds; report them uniformly
            raise RemoteError(f"cannot reach the KFP API at {host}: {err}") from err


def _filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def _delete_recurring_runs(kfp_client: Any, experiment_id: str, name: str, namespace: str | None) -> None:
    """Delete the recurring runs named ``name`` in the experiment (the one being replaced)."""
    found = kfp_client.list_recurring_runs(experiment_id=experiment_id, namespace=namespace,
                                           filter=_filter(name), page_size=100).recurring_runs or []
    for rec in found:
        kfp_client.delete_recurring_run(rec.recurring_run_id)


def version_name(pipeline: str, text: str) -> str:
    """A content-addressed version name: same YAML → same version (uploads are idempotent)."""
    return f"{DISPLAY_NAMES[pipeline]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _description(text: str) -> str:
    """The pipeline's docstring as compiled (``pipelineInfo.description``), shown in the KFP UI."""
    spec = next((d for d in yaml.safe_load_all(text) if d), {})
    return str(spec.get("pipelineInfo", {}).get("description", ""))


def upload(kfp_client: Any, pipeline: str, text: str, description: str = "") -> Uploaded:
    """Upload ``text`` as a version of ``pipeline`` (creating the pipeline if needed)."""
    display = DISPLAY_NAMES[pipeline]
    description = description or _description(text)
    vname = version_name(pipeline, text)
    with tempfile.TemporaryDirectory(prefix="unlearnops-submit-") as tmp:
        path = Path(tmp) / f"{pipeline}.yaml"
        path.write_text(text)
        pipeline_id = kfp_client.get_pipeline_id(display)
        if pipeline_id is None:
            created = kfp_client.upload_pipeline(str(path), pipeline_name=display,
                                                 description=description or None)
            pipeline_id = created.pipeline_id
        found = kfp_client.list_pipeline_versions(pipeline_id, filter=_filter(vname)).pipeline_versions
        if found:
            return Uploaded(pipeline_id, found[0].pipeline_version_id, vname, False)
        version = kfp_client.upload_pipeline_version(str(path), vname, pipeline_id=pipeline_id,
                                                     description=description or None)
        return Uploaded(pipeline_id, version.pipeline_version_id, vname, True)


def upload_all(host: str, *, options: CompileOptions | None = None, token: str | None = None,
               namespace: str | None = None) -> dict[str, Uploaded]:
    """Upload every pipeline (the YAML of ``pipelines/compiled/`` with ``options``); idempotent."""
    kfp_client = client(host, token, namespace)
    return {name: upload(kfp_client, name, compile_text(name, options)) for name in ALL_PIPELINES}


def submit(host: str, params: dict[str, Any], *, pipeline: str = "unlearn_on_request",
           options: CompileOptions | None = None, experiment: str = DEFAULT_EXPERIMENT,
           run_name: str | None = None, token: str | None = None, namespace: str | None = None,
           service_account: str | None = None) -> Submitted:
    """Upload a pipeline version and create one run of it with ``params``."""
    kfp_client = client(host, token, namespace)
    up = upload(kfp_client, pipeline, compile_text(pipeline, options))
    exp = kfp_client.create_experiment(experiment, namespace=namespace)
    run = kfp_client.run_pipeline(exp.experiment_id, run_name or f"{DISPLAY_NAMES[pipeline]}-run",
                                  params=params, pipeline_id=up.pipeline_id, version_id=up.version_id,
                                  service_account=service_account)
    return Submitted(up.pipeline_id, up.version_id, up.version_name, exp.experiment_id, run_id=run.run_id)


def schedule(host: str, params: dict[str, Any], *, cron: str = "0 0 2 * * *",
             options: CompileOptions | None = None, experiment: str = DEFAULT_EXPERIMENT,
             name: str = "compliance-batch-nightly", token: str | None = None,
             namespace: str | None = None, service_account: str | None = None,
             pipeline: str = "compliance_batch") -> Submitted:
    """A recurring run of ``pipeline`` — ``compliance_batch``, or ``compliance_retrain`` for the
    periodic exact retraining (issue 16) — (6-field cron, one at a time, no catch-up).

    Create or update: a recurring run of the same ``name`` in the experiment is replaced (KFP has
    no update call), so re-running it (the chart's post-upgrade Job) never leaves two schedules.
    """
    if len(cron.split()) != 6:
        raise RemoteError(f"cron {cron!r} must have 6 fields (seconds first), e.g. '0 0 2 * * *'")
    kfp_client = client(host, token, namespace)
    up = upload(kfp_client, pipeline, compile_text(pipeline, options))
    exp = kfp_client.create_experiment(experiment, namespace=namespace)
    _delete_recurring_runs(kfp_client, exp.experiment_id, name, namespace)
    rec = kfp_client.create_recurring_run(
        exp.experiment_id, name, description="retrain without the erased data (unlearnops)"
        if pipeline == "compliance_retrain" else "unlearn pending forget requests (unlearnops)",
        cron_expression=cron, max_concurrency=1, no_catchup=True, params=params,
        pipeline_id=up.pipeline_id, version_id=up.version_id, enabled=True,
        service_account=service_account)
    return Submitted(up.pipeline_id, up.version_id, up.version_name, exp.experiment_id,
                     recurring_run_id=rec.recurring_run_id)
