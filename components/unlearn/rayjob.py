"""Run a training step as a KubeRay ``RayJob`` (ray.io/v1) when its component runs on a cluster.

The unlearn component, inside a KFP pod, calls :func:`run_as_rayjob` (the retrain component
``components.retrain.retrain.retrain_as_rayjob``; both through :func:`launch_rayjob`): it renders a
RayJob named
after the KFP run (DNS-safe), with the task's resources passed to the worker group (workers,
CPU, memory, GPU), ``shutdownAfterJobFinishes``, ``ttlSecondsAfterFinished`` and
``activeDeadlineSeconds``; validates it against the vendored CRD (:mod:`unlearnops.crds`);
creates it through ``CustomObjectsApi``; polls ``status.jobStatus`` (never the submitter pod's
exit code) until SUCCEEDED / FAILED / STOPPED, streaming the submitter pod's log; and deletes it
on the way out — on success, failure, KFP cancellation (SIGTERM) or any error.

The RayJob's entrypoint is this module: ``python -m unlearnops.components.unlearn.rayjob
--step unlearn --args-json '{...}'`` runs the step's driver (:data:`DRIVERS`: :func:`drive_unlearn`,
or the retrain step's) as the Ray job's driver (``ray.init()`` there attaches to the RayJob's
cluster through ``RAY_ADDRESS``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from unlearnops.types import TrainingRecord

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
BACKEND_ENV = "UNLEARNOPS_UNLEARN_BACKEND"  # "rayjob" (default on Kubernetes) or "local"
SECRETS_ENV = "UNLEARNOPS_RAYJOB_SECRETS"  # JSON [{"name", "env": {key: ENV}}] (set at compile time)
RUN_ID_ENV, NAMESPACE_ENV = "UNLEARNOPS_KFP_RUN_ID", "UNLEARNOPS_K8S_NAMESPACE"
_PASS_ENV = re.compile(r"^(UNLEARNOPS_|HF_|MLFLOW_DISABLE_TELEMETRY$|TOKENIZERS_PARALLELISM$)")
AUTH_SECRET_ENV = "UNLEARNOPS_RAYJOB_AUTH_SECRET"  # optional: Secret holding the Ray auth token
MAX_NAME = 40  # KubeRay derives RayCluster/Job/Service names (and 63-char labels) from it
#: the Ray job's driver of each step that runs as a RayJob: ``module:function(args) -> Doc``
DRIVERS = {"unlearn": "unlearnops.components.unlearn.rayjob:drive_unlearn",
           "retrain": "unlearnops.components.retrain.retrain:drive_retrain"}


class RayJobError(RuntimeError):
    """The RayJob failed, stopped, timed out or could not be created; the message says which."""


class Cancelled(BaseException):
    """SIGTERM arrived (KFP cancelled the run): unwind so the RayJob is deleted."""


def running_on_kubernetes() -> bool:
    """True inside a Kubernetes pod, unless ``UNLEARNOPS_UNLEARN_BACKEND=local``."""
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    return in_pod and os.environ.get(BACKEND_ENV, "rayjob") != "local"


def dns_name(run_id: str, prefix: str = "unlearn") -> str:
    """``unlearn-<run id>``, lower-case RFC 1123, at most :data:`MAX_NAME` characters.

    A long id keeps a hash of the full id so two runs never share a name.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-") or "run"
    name = f"{prefix}-{clean}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"
    return name


@dataclass
class RayJobResources:
    """What the worker group asks for; the head only runs the driver."""

    workers: int = 1
    cpus_per_worker: str = "2"
    memory_per_worker: str = "8Gi"
    gpus_per_worker: int = 0
    head_cpu: str = "1"
    head_memory: str = "4Gi"
    gpu_resource: str = "nvidia.com/gpu"
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, workers: int, use_gpu: bool) -> RayJobResources:
        """Task resources, overridable with ``UNLEARNOPS_RAYJOB_{CPU,MEMORY,GPUS}_PER_WORKER``."""
        env = os.environ
        gpus = int(env.get("UNLEARNOPS_RAYJOB_GPUS_PER_WORKER", "1")) if use_gpu else 0
        tolerations = json.loads(env.get("UNLEARNOPS_RAYJOB_TOLERATIONS", "[]"))
        selector = json.loads(env.get("UNLEARNOPS_RAYJOB_NODE_SELECTOR", "{}"))
        return cls(workers=workers, cpus_per_worker=env.get("UNLEARNOPS_RAYJOB_CPU_PER_WORKER", "2"),
                   memory_per_worker=env.get("UNLEARNOPS_RAYJOB_MEMORY_PER_WORKER", "8Gi"),
                   gpus_per_worker=gpus, tolerations=tolerations, node_selector=selector)


def entrypoint(args: dict[str, Any], step: str = "unlearn") -> str:
    """The Ray job's driver command: this module with the step and its arguments as one JSON word."""
    if step not in DRIVERS:
        raise ValueError(f"no RayJob driver for step {step!r} (one of {', '.join(DRIVERS)})")
    return (f"python -m unlearnops.components.unlearn.rayjob --step {step} "
            f"--args-json {shlex.quote(json.dumps(args))}")


def _container_env(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Non-secret unlearnops settings as values; secrets only as ``secretKeyRef`` (never copied).

    A variable holding a credential (:func:`unlearnops.masking.holds_secret`) not listed in
    ``UNLEARNOPS_RAYJOB_SECRETS`` is left out, not written in clear. ``RAY_AUTH_MODE`` is never passed:
    the cluster's token auth comes from the RayJob's ``authOptions``.
    """
    from unlearnops.masking import holds_secret

    source = dict(os.environ if env is None else env)
    secrets = json.loads(source.get(SECRETS_ENV, "[]") or "[]")
    secret_vars = {var for s in secrets for var in s["env"].values()}
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(source.items())
           if _PASS_ENV.match(k) and k not in secret_vars and k not in (SECRETS_ENV, AUTH_SECRET_ENV)
           and not holds_secret(k, v)]
    out.append({"name": BACKEND_ENV, "value": "local"})
    for secret in secrets:
        for key, var in sorted(secret["env"].items()):
            out.append({"name": var, "valueFrom": {"secretKeyRef": {
                "name": secret["name"], "key": key, "optional": bool(secret.get("optional", False))}}})
    seen: dict[str, dict[str, Any]] = {}
    for item in out:
        seen[item["name"]] = item
    return list(seen.values())


def _auth_options() -> dict[str, Any]:
    """Ray token auth on the RayJob's cluster (KubeRay creates the token Secret unless one is named)."""
    secret = os.environ.get(AUTH_SECRET_ENV)
    return {"mode": "token", **({"secretName": secret} if secret else {})}


def _resources(cpu: str, memory: str, gpus: int, gpu_resource: str) -> dict[str, Any]:
    res: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        res[gpu_resource] = gpus
    return {"requests": dict(res), "limits": dict(res)}


def build_manifest(name: str, namespace: str, image: str, command: str, res: RayJobResources, *,
                   labels: dict[str, str] | None = None, active_deadline_s: int = 6 * 3600,
                   ttl_s: int = 600, env: list[dict[str, Any]] | None = None,
                   service_account: str | None = None, ray_version: str = "2.60.0",
                   step: str = "unlearn") -> dict[str, Any]:
    """The RayJob manifest of ``step`` (a plain dict; validate with :func:`validate`)."""
    env = env if env is not None else _container_env()

    def pod(container: str, resources: dict[str, Any], gpu_pod: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [{
            "name": container, "image": image, "env": env, "resources": resources,
        }]}
        if service_account:
            spec["serviceAccountName"] = service_account
        if gpu_pod and res.tolerations:
            spec["tolerations"] = res.tolerations
        if gpu_pod and res.node_selector:
            spec["nodeSelector"] = res.node_selector
        return {"metadata": {"labels": dict(labels or {})}, "spec": spec}

    head_res = _resources(res.head_cpu, res.head_memory, 0, res.gpu_resource)
    worker_res = _resources(res.cpus_per_worker, res.memory_per_worker, res.gpus_per_worker, res.gpu_resource)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {
            "entrypoint": command,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": ttl_s,
            "activeDeadlineSeconds": active_deadline_s,
            "backoffLimit": 0,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": {
                "rayVersion": ray_version,
                "authOptions": _auth_options(),
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},
                    "template": pod("ray-head", head_res, False),
                },
                "workerGroupSpecs": [{
                    "groupName": f"{step}-workers",
                    "replicas": res.workers,
                    "minReplicas": res.workers,
                    "maxReplicas": res.workers,
                    "rayStartParams": {},
                    "template": pod("ray-worker", worker_res, res.gpus_per_worker > 0),
                }],
            },
        },
    }


def validate(manifest: dict[str, Any]) -> dict[str, Any]:
    """Check the manifest against the vendored RayJob CRD (raises ``unlearnops.crds.ManifestError``)."""
    from unlearnops import crds

    return crds.validate(manifest)


@dataclass
class RayJobOutcome:
    name: str
    job_status: str
    deployment_status: str
    message: str
    seconds: float


class RayJobRunner:
    """Create → poll → stream logs → delete, through the official Kubernetes client."""

    def __init__(self, api_client: Any = None, *, namespace: str = "default", poll_s: float = 5.0,
                 timeout_s: float | None = None, log: TextIO = sys.stderr):
        from kubernetes import client as k8s

        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.namespace, self.poll_s, self.timeout_s, self.out = namespace, poll_s, timeout_s, log
        self._log_offsets: dict[str, int] = {}

    def create(self, manifest: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        except ApiException as err:
            if err.status == 409:  # a retried task: the run's RayJob already exists; follow it
                print(f"RayJob {manifest['metadata']['name']} exists; following it", file=self.out)
                return
            raise RayJobError(f"cannot create RayJob {manifest['metadata']['name']} "
                              f"({err.status} {err.reason}): {err.body}") from err

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return dict(obj.get("status") or {})

    def stream_logs(self, name: str) -> None:
        """Print what is new in the submitter pod's log (K8sJobMode: pods labelled ``job-name=NAME``)."""
        from kubernetes.client.exceptions import ApiException

        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items
            for pod in pods:
                pod_name = pod.metadata.name
                text = self.core.read_namespaced_pod_log(pod_name, self.namespace)
                offset = self._log_offsets.get(pod_name, 0)
                if len(text) > offset:
                    self.out.write(text[offset:])
                    self.out.flush()
                    self._log_offsets[pod_name] = len(text)
        except ApiException as err:  # the pod may not exist yet, or be gone: logs are best effort
            if err.status not in (400, 404):
                raise

    def wait(self, name: str, sleep: Callable[[float], None] = time.sleep) -> RayJobOutcome:
        """Poll ``status.jobStatus`` until terminal (or the deployment failed / the timeout passed)."""
        start = time.monotonic()
        last = ""
        while True:
            st = self.status(name)
            job, deploy = str(st.get("jobStatus") or ""), str(st.get("jobDeploymentStatus") or "")
            if (job, deploy) != ("", "") and f"{job}/{deploy}" != last:
                print(f"RayJob {name}: jobStatus={job or '-'} deployment={deploy or '-'}", file=self.out)
                last = f"{job}/{deploy}"
            self.stream_logs(name)
            elapsed = time.monotonic() - start
            if job in TERMINAL or deploy == "Failed":
                message = str(st.get("message") or st.get("reason") or "")
                return RayJobOutcome(name, job or "FAILED", deploy, message, elapsed)
            if self.timeout_s is not None and elapsed > self.timeout_s:
                raise RayJobError(f"RayJob {name} still {job or 'pending'} after {self.timeout_s:.0f}s")
            sleep(self.poll_s)

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                        propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                print(f"warning: could not delete RayJob {name}: {err.status} {err.reason}", file=self.out)

    def run(self, manifest: dict[str, Any]) -> RayJobOutcome:
        """Create the RayJob, wait for it, delete it whatever happens; raise unless it SUCCEEDED."""
        name = manifest["metadata"]["name"]
        with _sigterm_cancels():
            try:
                self.create(manifest)
                outcome = self.wait(name)
            finally:
                self.delete(name)
        if outcome.job_status != "SUCCEEDED":
            deploy = outcome.deployment_status or "-"
            raise RayJobError(f"RayJob {name} ended {outcome.job_status} (deployment {deploy}): "
                              f"{outcome.message or 'no message'}")
        return outcome


@contextlib.contextmanager
def _sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM into :class:`Cancelled` while the RayJob runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Cancelled(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _api_client() -> Any:
    from kubernetes import client as k8s
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return k8s.ApiClient()


def launch_rayjob(step: str, args: dict[str, Any], *, out_uri: str, workers: int = 1, use_gpu: bool = False,
                  run_id: str | None = None, namespace: str | None = None, image: str | None = None,
                  api_client: Any = None, poll_s: float = 5.0, active_deadline_s: int = 6 * 3600,
                  ttl_s: int = 600, log: TextIO = sys.stderr) -> RayJobOutcome:
    """Run ``step``'s driver with ``args`` as a RayJob of ``workers`` workers; its outcome once SUCCEEDED.

    The RayJob is named ``<step>-<run id>``: ``run_id`` defaults to the KFP run id the pipeline puts
    in ``UNLEARNOPS_KFP_RUN_ID``, else the run folder of ``out_uri`` (``RUN_ROOT/RUN_ID/model``);
    ``namespace`` to the pod's namespace. The Ray pods run the trainer image (CUDA torch), named
    beside the control image.
    """
    from unlearnops.components import BASE_IMAGE, trainer_image

    rid = run_id or os.environ.get(RUN_ID_ENV) or out_uri.rstrip("/").split("/")[-2]
    ns = namespace or os.environ.get(NAMESPACE_ENV) or _pod_namespace()
    labels = {"app.kubernetes.io/managed-by": "unlearnops", "unlearnops.io/kfp-run-id": dns_name(rid, "run"),
              "unlearnops.io/step": step}
    default_image = trainer_image(os.environ.get("UNLEARNOPS_IMAGE", BASE_IMAGE))
    manifest = build_manifest(dns_name(rid, step), ns, image or default_image, entrypoint(args, step),
                              RayJobResources.from_env(workers, use_gpu), labels=labels,
                              active_deadline_s=active_deadline_s, ttl_s=ttl_s, step=step)
    validate(manifest)
    runner = RayJobRunner(api_client or _api_client(), namespace=ns, poll_s=poll_s, log=log)
    outcome = runner.run(manifest)
    print(f"RayJob {outcome.name} SUCCEEDED in {outcome.seconds:.0f}s", file=log)
    return outcome


def run_as_rayjob(*, scope_uri: str, model_uri: str, method: str, params: dict[str, Any], out_uri: str,
                  workers: int = 1, use_gpu: bool = False, seed: int = 0,
                  stop_when: dict[str, Any] | None = None, **launch: Any) -> TrainingRecord:
    """Run the unlearn step as a RayJob and return its ``training.json`` (the same as a local run);
    ``launch``: :func:`launch_rayjob`'s options (run id, namespace, image, API client, polling)."""
    from unlearnops.documents import read_training

    args = {"scope_uri": scope_uri, "model_uri": model_uri, "method": method, "params": params,
            "out_uri": out_uri, "workers": workers, "use_gpu": use_gpu, "seed": seed,
            "stop_when": stop_when or {}}
    launch_rayjob("unlearn", args, out_uri=out_uri, workers=workers, use_gpu=use_gpu, **launch)
    return read_training(out_uri)


def drive_unlearn(args: dict[str, Any]) -> Any:
    """The unlearn step's RayJob driver: :func:`run_unlearning` with the component's arguments."""
    from unlearnops.components.unlearn.runner import run_unlearning

    from unlearnops.types import ComputeSpec, UnlearnSpec

    spec = UnlearnSpec(method=args["method"], params=args.get("params") or {}, seed=int(args.get("seed", 0)),
                       compute=ComputeSpec(workers=int(args.get("workers", 1)),
                                           use_gpu=bool(args.get("use_gpu", False))))
    return run_unlearning(spec, args["scope_uri"], args["model_uri"], args["out_uri"],
                          stop_when=args.get("stop_when") or None)


def _pod_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


def main(argv: list[str] | None = None) -> int:
    """RayJob entrypoint: run the step's driver (:data:`DRIVERS`) as the Ray job's driver."""
    import importlib

    parser = argparse.ArgumentParser(prog="python -m unlearnops.components.unlearn.rayjob")
    parser.add_argument("--step", choices=sorted(DRIVERS), default="unlearn", help="the step to run")
    parser.add_argument("--args-json", required=True, help="the step's arguments as JSON")
    ns = parser.parse_args(argv)
    from unlearnops.settings import apply_runtime_env

    apply_runtime_env()
    module, function = DRIVERS[ns.step].split(":")
    result = getattr(importlib.import_module(module), function)(json.loads(ns.args_json))
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
