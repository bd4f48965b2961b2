"""``RunRequest``: one pipeline run's arguments, validated before anything is launched.

The pipelines' parameters (``unlearn_on_request``, ``compliance_batch``) are this model's fields
(tests/test_pipelines_compile.py keeps them equal); ``unlearnops run | submit | schedule`` build
one from their options, so an unknown method, a bad ``-p train.steps=x`` or a policy gating an
unknown metric exits 2 before the first step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RunRequest(BaseModel):
    """What to unlearn, from which model, how, and how the candidate is gated and promoted."""

    model_config = ConfigDict(extra="forbid")

    request_ids: list[str] = Field(default_factory=list, description="forget requests (empty: the batch "
                                                                      "pipeline selects them)")
    corpus_uri: str = Field(min_length=1)
    model_name: str = Field("unlearnops-model", min_length=1, description="registered model to unlearn")
    method: str = "npo"
    method_params: dict[str, Any] = Field(default_factory=dict, description="method and train.* parameters")
    policy_yaml: str = Field("", description="gate policy YAML (empty: the default policy)")
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    reference_uri: str = Field("", description="retain-only reference model URI (forget quality)")
    run_root: str = Field("", description="URI under which the run writes (empty: the storage root)")
    promote_target: Literal["local", "kserve"] = "local"

    @field_validator("policy_yaml")
    @classmethod
    def _policy(cls, text: str) -> str:
        if text.strip():
            from unlearnops.components.evaluate.gates import GatePolicy

            GatePolicy.from_yaml(text, "policy")
        return text

    @model_validator(mode="after")
    def _method(self) -> RunRequest:
        from unlearnops.components.unlearn.job import check_params

        check_params(self.method, self.method_params)
        return self

    def arguments(self, *, batch: bool = False) -> dict[str, Any]:
        """The pipeline's arguments (``batch``: compliance_batch's, which selects its own requests)."""
        return self.model_dump(mode="json", exclude={"request_ids"} if batch else set())


@dataclass(frozen=True)
class RunChannels:
    """A :class:`RunRequest` inside a pipeline definition: each field is a pipeline channel."""

    request_ids: Any
    corpus_uri: Any
    model_name: Any
    method: Any
    method_params: Any
    policy_yaml: Any
    workers: Any
    use_gpu: Any
    reference_uri: Any
    run_root: Any
    promote_target: Any

    @classmethod
    def of(cls, values: Mapping[str, Any], **override: Any) -> RunChannels:
        """From a pipeline function's ``locals()`` (its parameters; anything else is ignored)."""
        picked = {f.name: values.get(f.name) for f in fields(cls)}
        return cls(**{**picked, **override})
