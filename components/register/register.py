"""Register a model version in MLflow with its lineage (pipeline step 4).

One MLflow run per registration holds the params (method, hyper-parameters, seed, world size,
library versions — from the model folder's ``training.json``), the metrics (every EvalReport
number, per model role: ``candidate.forget.prob``, ``base.forget.prob``, ...), the artifacts
(report.json/md, plots, the scope manifest — never the scope's records — and training.json) and
the model as an MLflow pyfunc wrapping the Hugging Face folder (:class:`HFCausalLM`, logged as
models-from-code from ``pyfunc_code.py`` so loading unpickles nothing; exactly pinned
``pip_requirements``, a signature with the ``max_new_tokens`` param). The registered version
carries the lineage tags (the ``unlearnops.*`` names below), and a plain ``save_pretrained``
copy is exported to
``<storage root>/registry/<name>/v<version>/`` (tag ``unlearnops.export_uri``) for serving runtimes.

The run is the parent of one run per earlier step (:func:`log_step_runs`): ``unlearn-…`` (from
training.json: hyper-parameters, totals, the per-step loss curve and probes) and ``evaluate-…``
(from report.json: every metric, gate values and failed-gate reasons). The steps log nothing to
MLflow themselves; their runs are written here, at registration, from their documents.

Idempotent: a fingerprint (SHA-256 over the weights' digests, the scope digest and the parent)
is tagged on the version; registering the same candidate again returns that version (finishing
the export if an earlier attempt stopped before it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow.pyfunc import PythonModel

from unlearnops import modelio, storage
from unlearnops.documents import DocumentError, find_training, read_manifest, read_report
from unlearnops.model_erasure import REQUESTS_TAG, request_tokens, requests_tag
from unlearnops.settings import get_settings
from unlearnops.types import EvalReport, ModelRef, TrainingRecord

from .lineage import Lineage, LineageError, find_lineage, registry_params, registry_tags
from .lineage import describe as describe_lineage

log = logging.getLogger(__name__)

TAG = "unlearnops."
PARENT_TAG, SCOPE_TAG = f"{TAG}parent_version", f"{TAG}scope_sha256"
METHOD_TAG, GATE_TAG, KFP_TAG = f"{TAG}method", f"{TAG}gate", f"{TAG}kfp_run_id"
FINGERPRINT_TAG, RUN_TAG = f"{TAG}fingerprint", f"{TAG}run_id"
REPORT_VERDICT_TAG, OVERRIDE_TAG = f"{TAG}gate.report_verdict", f"{TAG}gate.override"
STEP_TAG = f"{TAG}step"
EXPORT_TAG = modelio.EXPORT_TAG
CHALLENGER = "challenger"
GATES = ("passed", "failed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_METRIC_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")


#: The pyfunc's code file (models-from-code: loading runs it; no pickled Python object is stored).
MODEL_CODE = Path(__file__).with_name("pyfunc_code.py")


class RegistrationError(ValueError):
    """Bad input to registration (the message says what to fix)."""


@dataclass(frozen=True)
class GateOverride:
    """A named operator's decision to replace the verdict of one evaluate report, with a reason."""

    gate: str
    operator: str
    reason: str

    def check(self, report_uri: str | None, report_verdict: str | None) -> None:
        """Refuse an override that does not name its report, operator and reason, or changes nothing."""
        if self.gate not in GATES:
            raise RegistrationError(f"override gate {self.gate!r}: use one of {', '.join(GATES)}")
        if not report_uri or report_verdict is None:
            raise RegistrationError("a gate override needs the report it overrides "
                                    "(--report DIR with a verdict)")
        if not self.operator.strip() or len(self.reason.strip()) < 10:
            raise RegistrationError("a gate override needs --operator NAME and --reason "
                                    "(at least 10 characters)")
        if self.gate == report_verdict:
            raise RegistrationError(f"the report's verdict is already {report_verdict}: nothing to override")

    def detail(self, report_uri: str, report_verdict: str) -> dict[str, str]:
        """Who overrode which report's verdict, from what to what, and why (credentials masked)."""
        from unlearnops.masking import mask_secrets

        return {"operator": self.operator.strip(), "reason": mask_secrets(self.reason.strip())[:1000],
                "report_uri": mask_secrets(report_uri), "from": report_verdict, "to": self.gate}

    def record(self, report_uri: str, report_verdict: str) -> dict[str, str]:
        """Registry tags: the verdict used, the report's own verdict, and who overrode it why."""
        from datetime import UTC, datetime

        detail = {**self.detail(report_uri, report_verdict),
                  "at": datetime.now(UTC).isoformat(timespec="seconds")}
        return {REPORT_VERDICT_TAG: report_verdict, OVERRIDE_TAG: json.dumps(detail, sort_keys=True)}

    def record_in_ledger(self, request_ids: list[str], report_uri: str, report_verdict: str,
                         model_name: str) -> None:
        """One ``override`` audit event (code ``gate-override``) on each request the version serves.

        Written before the version exists, so no overridden version lacks its ledger trace; the
        same override is recorded once however often registration is retried.
        """
        if not request_ids:
            return
        from unlearnops.ledger import Ledger, RequestNotFound

        detail = self.detail(report_uri, report_verdict)
        events = {"model": model_name, **{k: detail[k] for k in ("report_uri", "from", "to")}}
        try:
            with Ledger() as ledger:
                ledger.record_override(request_ids, actor=detail["operator"], reason=detail["reason"],
                                       code="gate-override", details=events)
        except RequestNotFound as err:
            raise RegistrationError(f"{err}: a gate override is recorded on every --request, "
                                    "so each must be in the ledger") from None


class HFCausalLM(PythonModel):
    """MLflow pyfunc over a Hugging Face causal-LM folder: prompts in, greedy continuations out."""

    def load_context(self, context):  # noqa: ANN001 - MLflow's interface
        path = Path(context.artifacts["hf_model"])
        self.tokenizer = modelio.load_tokenizer(path)
        self.tokenizer.padding_side = "left"
        self.model = modelio.load_model(path).eval()

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's interface
        from unlearnops.serving import generate_texts, prompt_from

        if hasattr(model_input, "to_dict"):  # pandas DataFrame: one prompt per row
            cols = list(model_input.columns)
            key = "question" if "question" in cols else "prompt" if "prompt" in cols else cols[0]
            items: list[Any] = [{"question": v} if key == "question" else str(v) for v in model_input[key]]
        else:
            items = model_input if isinstance(model_input, list) else [model_input]
        max_new = int((params or {}).get("max_new_tokens", 32))
        return generate_texts(self.model, self.tokenizer, [prompt_from(i) for i in items], max_new)


# ------------------------------------------------------------------ helpers
def _client(tracking_uri: str | None = None) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=tracking_uri or get_settings().tracking_uri)


def weights_sha256(path: Path) -> str:
    """One digest over every ``*.safetensors`` file (name + content digest, sorted)."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")):
        digest.update(f"{file.name}:{storage.sha256_of(str(file))};".encode())
    return digest.hexdigest()


def fingerprint(weights: str, scope_sha: str | None, parent: str | None) -> str:
    return hashlib.sha256(f"{weights}|{scope_sha or ''}|{parent or ''}".encode()).hexdigest()



def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        out[prefix] = value
    return out


def report_metrics(report: EvalReport) -> dict[str, float]:
    """Every finite number of the report: ``<role>.<metric>`` (``candidate.forget.prob``) per model,
    and per gate its value and pass/fail (``gate.<gate>.value``, ``gate.<gate>.passed`` 1/0)."""
    flat: dict[str, Any] = {}
    for role in ("candidate", "base", "reference"):
        flat.update({f"{role}.{name}": value for name, value in (getattr(report, role) or {}).items()})
    for gate in report.verdict.gates if report.verdict else []:
        if not gate.skipped:
            flat[f"gate.{gate.gate}.value"] = gate.value
            flat[f"gate.{gate.gate}.passed"] = float(gate.passed)
    out: dict[str, float] = {}
    for key, value in flat.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        out[_METRIC_BAD.sub("_", key)[:250]] = float(value)
    return out


def report_gate(report: EvalReport | None) -> str | None:
    """``passed``/``failed`` from the report's verdict, if it has one."""
    if report is None or report.verdict is None:
        return None
    return "passed" if report.verdict.passed else "failed"


def gate_reason_tags(report: EvalReport | None) -> dict[str, str]:
    """One tag per failed gate, its reason: ``unlearnops.gate_failed.<gate>``."""
    if report is None or report.verdict is None:
        return {}
    return {f"{TAG}gate_failed.{g.gate}"[:250]: g.reason[:5000] for g in report.verdict.gates
            if not g.passed and not g.skipped}


def describe(name: str, training: TrainingRecord | None, requests: list[str], gate: str | None,
             parent: str | None) -> str:
    """The version's description: what was unlearned from what, how, and the gate's verdict."""
    if training is None:
        return f"Base model of {name} (no unlearning)."
    what = f"requests {', '.join(request_tokens(requests))}" if requests else "a forget scope"
    return (f"{training.method} unlearning of {what} from version {parent or '?'} of {name}; "
            f"{training.steps} steps; gates {gate or 'not evaluated'}.")


def training_params(training: TrainingRecord | None) -> dict[str, str]:
    """Run params from training.json: method, hyper-parameters, seed, world size, versions, inputs."""
    if training is None:
        return {"kind": "base"}
    keep = training.model_dump(mode="json", include={"method", "seed", "world_size", "steps", "tokens",
                                                     "base_model_uri", "scope_uri", "stopped_early"},
                               exclude_none=True)
    flat = _flatten("", {**keep, "params": training.params, "versions": training.versions}, {})
    return {k[:250]: json.dumps(v) if isinstance(v, list | dict) else str(v)[:6000] for k, v in flat.items()}


def library_versions() -> dict[str, str]:
    out = {}
    for pkg in ("unlearnops", "torch", "transformers", "tokenizers", "safetensors", "mlflow"):
        try:
            out[pkg] = pkg_version(pkg)
        except PackageNotFoundError:
            continue
    return out


def pip_requirements() -> list[str]:
    """Explicit requirements (MLflow's inference would pull torchvision and fail)."""
    versions = library_versions()
    reqs = [f"{pkg}=={v.split('+')[0]}" for pkg, v in versions.items() if pkg != "mlflow"]
    return reqs or ["unlearnops", "torch", "transformers", "safetensors"]


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]),
                          outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("max_new_tokens", "long", 32)]))


def _scope_sha(scope_uri: str | None, training: TrainingRecord | None,
               report: EvalReport | None) -> str | None:
    if scope_uri:
        try:
            return read_manifest(scope_uri).sha256
        except DocumentError as err:
            raise RegistrationError(f"{err} (give the scope step's output folder)") from None
    if training and training.scope_sha256:
        return training.scope_sha256
    return report.scope_sha256 if report else None


def _default_parent(name: str, training: TrainingRecord | None) -> str | None:
    parent = training.parent if training else None
    if parent and parent.version and parent.name == name:
        return parent.version
    return None


def unapplied_override(name: str, existing: Any, override: GateOverride) -> None:
    """Refuse an override of a candidate registered before without it: a registered verdict stays.

    A retry of the same override (the version carries it) passes.
    """
    tags = existing.tags or {}
    if tags.get(GATE_TAG) == override.gate and OVERRIDE_TAG in tags:
        return
    raise RegistrationError(
        f"models:/{name}/{existing.version} already holds this candidate (gate {tags.get(GATE_TAG, 'none')}, "
        f"registered without this override): --override-gate {override.gate} was not applied and nothing "
        "was recorded")


def find_version(client: mlflow.MlflowClient, name: str, fp: str) -> Any | None:
    """The existing version of ``name`` with fingerprint ``fp`` (None if none or no such model)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    for mv in versions:
        if (mv.tags or {}).get(FINGERPRINT_TAG) == fp:
            return mv
    return None


def export_copy(client: mlflow.MlflowClient, name: str, version: str, model_dir: Path) -> str:
    """Copy the HF folder to ``<storage root>/registry/<name>/v<version>`` and tag its URI."""
    uri = storage.join(get_settings().storage_root_uri, "registry", name, f"v{version}")
    storage.upload_dir(model_dir, uri)
    client.set_model_version_tag(name, version, EXPORT_TAG, uri)
    return uri


# ------------------------------------------------------------------ the step
def register_model(model_uri: str, name: str, *, report_uri: str | None = None, scope_uri: str | None = None,
                   parent_version: str | None = None, request_ids: list[str] | None = None,
                   gate: str | None = None, kfp_run_id: str | None = None,
                   gate_override: GateOverride | None = None, lineage: Lineage | None = None) -> ModelRef:
    """Log, register and export ``model_uri`` as a version of ``name`` (see the module docstring).

    ``parent_version`` defaults to training.json's parent (when it names the same registered
    model); ``gate`` defaults to the report's verdict and may not contradict it: only a
    ``gate_override`` (named operator, reason, the report's own URI) changes a verdict, and it is
    recorded as tags (``unlearnops.gate.override``, ``unlearnops.gate.report_verdict``) and as an
    ``override`` event in the ledger on each of ``request_ids``.
    ``lineage`` (foundation, corpus snapshot, recipe: components/register/lineage.py) defaults to the
    folder's ``lineage.json`` (the retrain step writes it); it becomes params and tags of the version.
    Returns ``ModelRef(name, version)``.
    """
    if not _NAME.match(name):
        raise RegistrationError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (max 128)")
    if gate is not None and gate not in GATES:
        raise RegistrationError(f"gate {gate!r}: use one of {', '.join(GATES)}")
    if parent_version is not None and not str(parent_version).isdigit():
        raise RegistrationError(f"parent version {parent_version!r}: a registered version number such as 3")
    requests = list(request_ids or [])
    client = _client()
    with modelio.LocalModel(model_uri) as model_dir:
        try:
            training = find_training(str(model_dir))
        except DocumentError as err:
            raise RegistrationError(f"{err} (the unlearn step writes it beside the weights)") from None
        try:
            lineage = lineage or find_lineage(model_dir)
        except LineageError as err:
            raise RegistrationError(str(err)) from None
        try:
            report = read_report(report_uri) if report_uri else None
        except DocumentError as err:
            raise RegistrationError(f"{err} (give the evaluate step's output folder)") from None
        parent = str(parent_version) if parent_version else _default_parent(name, training)
        scope_sha = _scope_sha(scope_uri, training, report)
        verdict = report_gate(report)
        override_tags: dict[str, str] = {}
        if gate_override is not None:
            gate_override.check(report_uri, verdict)
            override_tags = gate_override.record(str(report_uri), str(verdict))
            gate = gate_override.gate
        elif gate is not None and verdict is not None and gate != verdict:
            raise RegistrationError(f"gate {gate} contradicts the report's verdict ({verdict}); only a named "
                                    "operator overrides a verdict (--override-gate, --operator, --reason)")
        gate = gate or verdict
        fp = fingerprint(weights_sha256(model_dir), scope_sha, parent)
        existing = find_version(client, name, fp)
        if existing is not None:
            if gate_override is not None:
                unapplied_override(name, existing, gate_override)
            log.info("%s: already registered as version %s", model_uri, existing.version)
            if not (existing.tags or {}).get(EXPORT_TAG):
                export_copy(client, name, str(existing.version), model_dir)
            return ModelRef(name=name, version=str(existing.version))
        if parent is not None:
            try:
                client.get_model_version(name, parent)
            except mlflow.exceptions.MlflowException as err:
                raise RegistrationError(f"parent models:/{name}/{parent} is not registered: {err}") from err
        if gate_override is not None:
            gate_override.record_in_ledger(requests, str(report_uri), str(verdict), name)
        given = {PARENT_TAG: parent, REQUESTS_TAG: requests_tag(requests), SCOPE_TAG: scope_sha,
                METHOD_TAG: training.method if training else "base",
                GATE_TAG: gate, KFP_TAG: kfp_run_id, FINGERPRINT_TAG: fp, **override_tags}
        tags = {k: str(v) for k, v in given.items() if v not in (None, "")}
        tags.update(gate_reason_tags(report))
        tags.update(registry_tags(lineage) if lineage else {})
        retrained = lineage is not None and lineage.claim_level == "retrained"
        mv = _log_and_register(name, model_dir, training, report, report_uri, scope_uri, tags,
                               describe_lineage(name, lineage) if lineage and retrained
                               else describe(name, training, requests, gate, parent),
                               registry_params(lineage) if lineage else {})
        version = str(mv.version)
        export_copy(client, name, version, model_dir)
        if gate == "passed":
            client.set_registered_model_alias(name, CHALLENGER, version)
    return ModelRef(name=name, version=version)


def _log_and_register(name: str, model_dir: Path, training: TrainingRecord | None,
                      report: EvalReport | None, report_uri: str | None, scope_uri: str | None,
                      tags: dict[str, str], description: str, params: dict[str, str] | None = None) -> Any:
    """One MLflow run: params, metrics, artifacts, the pyfunc model; then the registered version."""
    mlflow.set_tracking_uri(get_settings().tracking_uri)
    experiment_id = _experiment(f"unlearnops-{name}")
    with mlflow.start_run(experiment_id=experiment_id,
                          run_name=_run_name(name, tags), description=description) as run:
        mlflow.log_params({**training_params(training), **(params or {}),
                           **{f"library.{k}": v for k, v in library_versions().items()}})
        if report:
            mlflow.log_metrics(report_metrics(report))
        mlflow.log_metrics(training_metrics(training))
        mlflow.set_tags({**{k: v for k, v in tags.items() if k != FINGERPRINT_TAG}, STEP_TAG: "register"})
        log_step_runs(experiment_id, name, tags, training, report)
        _log_artifacts(model_dir, report_uri, scope_uri)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(MODEL_CODE), artifacts={"hf_model": str(model_dir)},
            pip_requirements=pip_requirements(), signature=signature(),
            input_example=None,
        )
        tags = {**tags, RUN_TAG: run.info.run_id}
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    _client().update_model_version(name, str(mv.version), description=description)
    return mv


def _run_name(name: str, tags: dict[str, str], step: str = "register") -> str:
    """``<step>-<model>-<method>-<first request's token>[+n]`` (the fingerprint's head when no request)."""
    requests = [r for r in tags.get(REQUESTS_TAG, "").split(",") if r]
    who = f"{requests[0]}+{len(requests) - 1}" if len(requests) > 1 else (
        requests[0] if requests else tags[FINGERPRINT_TAG][:8])
    return f"{step}-{name}-{tags.get(METHOD_TAG, 'model')}-{who}"[:250]


# ------------------------------------------------------------------ the steps' runs, nested
def training_metrics(training: TrainingRecord | None) -> dict[str, float]:
    """The unlearning run's totals from training.json: ``training.steps``, ``training.tokens``, ..."""
    values = {key: getattr(training, key) if training else None
              for key in ("steps", "tokens", "worker_seconds", "wall_seconds", "peak_memory_mb")}
    return {f"training.{k}": float(v) for k, v in values.items() if isinstance(v, int | float)}


def step_history(prefix: str, rows: list[dict[str, Any]], numbered: bool) -> list[Any]:
    """``<prefix>.<key>`` per step: of the loss curve (row i is step i + 1, ``numbered``) or of the
    probes (each row has its ``step``); finite numbers only."""
    from mlflow.entities import Metric

    now, out = int(time.time() * 1000), []
    for i, row in enumerate(rows):
        step = i + 1 if numbered else int(row.get("step", i))
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                out.append(Metric(_METRIC_BAD.sub("_", f"{prefix}.{key}")[:250], float(value), now, step))
    return out


def log_step_runs(experiment_id: str, name: str, tags: dict[str, str], training: TrainingRecord | None,
                  report: EvalReport | None) -> dict[str, str]:
    """Runs of the unlearn and evaluate steps nested under the active registration run (MLflow tag
    ``mlflow.parentRunId``), logged from the documents those steps wrote; returns step → run id.

    The steps run in their own pods and log nothing to MLflow themselves, so the registration run is
    the parent: ``unlearn-…`` holds training.json's hyper-parameters, totals and per-step curve and
    probes; ``evaluate-…`` every number of report.json, the gate values, verdict and failed-gate reasons.
    """
    from unlearnops.masking import mask_secrets

    def child(step: str, step_tags: dict[str, str], description: str) -> Any:
        return mlflow.start_run(experiment_id=experiment_id, nested=True, description=description,
                                run_name=_run_name(name, tags, step), tags={STEP_TAG: step, **step_tags})

    ids: dict[str, str] = {}
    if training is not None:
        stop = training.stopping
        why = {f"{TAG}stopping": f"{stop.mode}: {stop.reason}"[:5000]} if stop else {}
        what = f"The unlearn step ({training.method}, {training.steps} steps), from its training.json."
        with child("unlearn", {METHOD_TAG: training.method, **why}, what) as run:
            mlflow.log_params(training_params(training))
            mlflow.log_metrics(training_metrics(training))
            history = [*step_history("train", training.curve, True),
                       *step_history("probe", training.probes, False)]
            for at in range(0, len(history), 1000):  # MLflow's batch limit
                _client().log_batch(run.info.run_id, metrics=history[at:at + 1000])
            ids["unlearn"] = run.info.run_id
    if report is not None:
        inputs = {"model_uri": report.model_uri, "base_uri": report.base_uri,
                  "reference_uri": report.reference_uri or "", "scope_sha256": report.scope_sha256,
                  "device": report.device}
        with child("evaluate", {GATE_TAG: report_gate(report) or "not gated", **gate_reason_tags(report)},
                   "The evaluate step, from its report.json.") as run:
            mlflow.log_params({k: mask_secrets(v)[:6000] for k, v in inputs.items()})
            mlflow.log_metrics({**report_metrics(report),
                                **{f"seconds.{k}": v for k, v in report.seconds.items()},
                                **{f"examples.{k}": float(v) for k, v in report.counts.items()}})
            ids["evaluate"] = run.info.run_id
    return ids


def _experiment(experiment: str) -> str:
    """The experiment's id; created with artifacts under the unlearnops home for ``sqlite:`` registries
    (MLflow's default would be ``./mlruns`` in the working directory)."""
    settings = get_settings()
    client = _client()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        location = (settings.home / "mlartifacts").absolute().as_uri()
    try:
        return str(client.create_experiment(experiment, artifact_location=location))
    except mlflow.exceptions.MlflowException:  # created concurrently
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return str(found.experiment_id)


def _log_artifacts(model_dir: Path, report_uri: str | None, scope_uri: str | None) -> None:
    """report.json/md + plots, the scope manifest (no records: they hold personal data), training.json."""
    if report_uri:
        with storage.local_dir(report_uri) as folder:
            mlflow.log_artifacts(str(folder), "report")
    if scope_uri:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "manifest.json"
            storage.download_file(storage.join(scope_uri, "manifest.json"), target)
            mlflow.log_artifact(str(target), "scope")
    if (model_dir / "training.json").is_file():
        mlflow.log_artifact(str(model_dir / "training.json"), "training")
