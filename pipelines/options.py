"""Compile-time settings of the pipelines: image, GPU, scheduling and credentials (``CompileOptions``).

Cluster-only settings (accelerators, tolerations, node selectors, secrets as env) go through
kfp-kubernetes; ``kfp.local`` ignores them, so the local runner compiles with :meth:`local`.
"""

from __future__ import annotations

import json
from typing import Literal

from kfp import dsl, kubernetes
from pydantic import BaseModel, ConfigDict, Field
from unlearnops.components import BASE_IMAGE


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    operator: Literal["Equal", "Exists"] | None = None
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None


class SecretEnv(BaseModel):
    """A Kubernetes Secret whose keys become environment variables of every task."""

    model_config = ConfigDict(extra="forbid")

    name: str
    env: dict[str, str] = Field(description="secret data key -> environment variable")
    optional: bool = False


def _default_secrets() -> list[SecretEnv]:
    return [
        SecretEnv(name="unlearnops-s3", env={
            "endpoint_url": "UNLEARNOPS_S3__ENDPOINT_URL",
            "access_key_id": "UNLEARNOPS_S3__ACCESS_KEY_ID",
            "secret_access_key": "UNLEARNOPS_S3__SECRET_ACCESS_KEY",
        }),
        SecretEnv(name="unlearnops-mlflow", env={"tracking_uri": "UNLEARNOPS_MLFLOW_TRACKING_URI"}),
        SecretEnv(name="unlearnops-ledger", env={"url": "UNLEARNOPS_LEDGER_URL"}),
    ]


class CompileOptions(BaseModel):
    """What the compiled pipeline asks of the cluster (see pipelines/README.md)."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(BASE_IMAGE, description="container image of every task")
    gpu: bool = Field(True, description="the RayJob's workers ask for accelerators (never the launcher task)")
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = Field(1, ge=1, description="accelerators per Ray worker")
    unlearn_cpu: str = Field("1", description="CPU limit of the unlearn task (it only launches a RayJob)")
    unlearn_memory: str = Field("2G", description="memory limit of the unlearn task")
    tolerations: list[Toleration] = Field(default_factory=lambda: [
        Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")])
    node_selector: dict[str, str] = Field(default_factory=dict)
    secrets: list[SecretEnv] = Field(default_factory=_default_secrets)
    unlearn_timeout_s: int = Field(6 * 3600, ge=60, description="kfp-kubernetes timeout of the unlearn task")
    kubernetes: bool = Field(True, description="emit kfp-kubernetes platform settings")

    @classmethod
    def local(cls) -> CompileOptions:
        """For kfp.local: no accelerators, no platform settings (the env carries the settings)."""
        return cls(gpu=False, tolerations=[], node_selector={}, secrets=[], kubernetes=False)


def side_effect(task: dsl.PipelineTask, options: CompileOptions) -> dsl.PipelineTask:
    """A task that changes the world (ledger, registry, serving): never cached; credentials as env."""
    task.set_caching_options(False)
    return with_credentials(task, options)


def with_credentials(task: dsl.PipelineTask, options: CompileOptions) -> dsl.PipelineTask:
    if options.kubernetes:
        for secret in options.secrets:
            kubernetes.use_secret_as_env(task, secret_name=secret.name, secret_key_to_env=secret.env,
                                         optional=secret.optional)
    return task


def configure_unlearn(task: dsl.PipelineTask, options: CompileOptions) -> dsl.PipelineTask:
    """The RayJob launcher: small resources, and what its Ray workers get (GPUs, tolerations, node
    selector, secrets) passed on as env; the launcher pod itself requests no accelerator and
    schedules anywhere, so no GPU sits idle while the RayJob trains."""
    side_effect(task, options)
    task.set_display_name("unlearn")
    if not options.kubernetes:
        return task
    task.set_cpu_limit(options.unlearn_cpu).set_memory_limit(options.unlearn_memory)
    # what the RayJob launcher (components/unlearn/rayjob.py) passes on to the Ray pods
    task.set_env_variable("UNLEARNOPS_RAYJOB_SECRETS",
                          json.dumps([s.model_dump() for s in options.secrets], sort_keys=True))
    task.set_env_variable("UNLEARNOPS_RAYJOB_TOLERATIONS",
                          json.dumps([t.model_dump(exclude_none=True) for t in options.tolerations]))
    task.set_env_variable("UNLEARNOPS_RAYJOB_NODE_SELECTOR",
                          json.dumps(options.node_selector, sort_keys=True))
    gpus = options.accelerator_limit if options.gpu else 0  # per Ray worker, not for this pod
    task.set_env_variable("UNLEARNOPS_RAYJOB_GPUS_PER_WORKER", str(gpus))
    kubernetes.use_field_path_as_env(task, "UNLEARNOPS_KFP_RUN_ID", "metadata.labels['pipeline/runid']")
    kubernetes.use_field_path_as_env(task, "UNLEARNOPS_K8S_NAMESPACE", "metadata.namespace")
    kubernetes.use_field_path_as_env(task, "UNLEARNOPS_POD_NAME", "metadata.name")
    kubernetes.set_timeout(task, options.unlearn_timeout_s)
    return task
