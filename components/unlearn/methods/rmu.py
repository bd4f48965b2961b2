"""``rmu``: Representation Misdirection for Unlearning (Li et al., 2024, "The WMDP Benchmark:
Measuring and Reducing Malicious Use With Unlearning", arXiv:2403.03218).

With ``h^ℓ(x)`` the output of decoder layer ℓ (the residual stream after it):

    L = γ · mean_{t ∈ forget} ‖h_θ^ℓ(x_f)_t − c·u‖²/d
      + α · mean_{t ∈ retain} ‖h_θ^ℓ(x_r)_t − h_ref^ℓ(x_r)_t‖²/d

u is a fixed random unit vector (entries drawn uniformly from [0, 1) and normalised, as in the
WMDP code; seeded by ``seed``), c the steering coefficient, d the hidden size (the squared
norms are divided by d: the per-coordinate mean squared error the WMDP code optimises, so α
and c mean the same as there). Only the MLP weights of layers ℓ−2..ℓ train
(:meth:`RMU.trainable_patterns`). Forget positions are, by default, those that predict answer
tokens (``forget_tokens="answer"``; ``"all"`` takes every real token, as WMDP does on plain
text — on QA data the shared prompt prefix would then be steered too); retain positions are
all real tokens.

Defaults and why: WMDP uses ℓ = 7 of 32, c = 6.5 and α = 1200 for Zephyr-7B (hidden 4096);
open-unlearning's config uses c = 300, α = 1000 and warns they are model-dependent. Here the
default layer is the middle one (``num_layers // 2``), c = 20 and α = 100. c must put c·u far
outside the usual activations (the WMDP paper scales c with the activation norm): on the tiny
benchmark model (hidden 64, 2 layers) token activations have norm ~1–1.5, and these defaults
(AdamW lr 1e-3–3e-3, 100 steps, batches of 32) bring the forget answer probability to ~0 while
retain stays ≥ 0.97 × base. Tune c and α per model.

The forward pass stops after layer ℓ (a hook raises) unless the model is wrapped by
DDP/FSDP or compiled, which need a complete forward; then only the LM head is cut down
(``logits_to_keep=1``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from unlearnops.textformat import IGNORE

from .base import Batch, LossOutput, Method, MethodError, MethodParams, unwrap, view


class RMUParams(MethodParams):
    layer: int | None = Field(None, ge=0, description="decoder layer ℓ to steer (None: num_layers // 2)")
    steering_coeff: float = Field(20.0, gt=0, description="steering coefficient c (‖c·u‖ = c)")
    alpha: float = Field(100.0, ge=0, description="weight α of the retain activation loss")
    gamma: float = Field(1.0, ge=0, description="weight of the forget activation loss")
    update_layers: list[int] | None = Field(
        None, description="layers whose MLP weights train (None: ℓ−2..ℓ, clipped at 0)")
    update_modules: str = Field("mlp", description="regex of the sub-module names that train in those layers")
    forget_tokens: Literal["answer", "all"] = Field("answer", description="forget positions steered")
    seed: int = Field(0, description="seed of the random direction u")
    early_exit: bool = Field(True, description="stop the forward pass after layer ℓ when possible")

    @field_validator("update_layers", mode="before")
    @classmethod
    def _parse_layers(cls, value: Any) -> Any:
        if isinstance(value, str):  # "5,6,7" or "[5, 6, 7]" from a command line
            return [int(x) for x in value.strip("[] ").split(",") if x.strip()]
        if isinstance(value, int):
            return [value]
        return value


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass after layer ℓ."""


def decoder_layers(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """The (name, module list) of the transformer blocks of a causal LM."""
    base = unwrap(model)
    n = getattr(getattr(base, "config", None), "num_hidden_layers", None)
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and re.search(r"(^|\.)(layers|h|blocks)$", name) \
                and (n is None or len(module) == n):
            return name, module
    raise MethodError("rmu: cannot find the decoder layers of this model (expected e.g. model.layers)")


def _wrapped(model: Any) -> bool:
    """DDP / FSDP / compiled models need a complete forward pass (no exception mid-way)."""
    names = type(model).__name__
    return isinstance(model, torch.nn.parallel.DistributedDataParallel) or "FSDP" in names \
        or "FullySharded" in names or hasattr(model, "_orig_mod")


def layer_output(model: Any, v: Mapping[str, torch.Tensor], layer: int, early_exit: bool) -> torch.Tensor:
    """Hidden state after decoder layer ``layer``: shape (batch, seq, hidden)."""
    _, layers = decoder_layers(model)
    captured: list[torch.Tensor] = []
    stop = early_exit and not _wrapped(model)

    def hook(module: Any, args: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out)
        if stop:
            raise _Stop

    handle = layers[layer].register_forward_hook(hook)
    try:
        model(input_ids=v["input_ids"], attention_mask=v["attention_mask"], use_cache=False,
              logits_to_keep=1)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def _masked_mse(diff: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of ``‖diff_t‖²/d``."""
    per_token = diff.float().pow(2).mean(-1)
    return per_token[mask].sum() / mask.sum().clamp(min=1)


class RMU(Method):
    """Steer layer-ℓ activations of forget data to c·u; keep retain activations at the reference's."""

    name: ClassVar[str] = "rmu"
    Params: ClassVar[type[MethodParams]] = RMUParams
    needs_reference: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = True

    def __init__(self, params: Mapping[str, Any] | None = None):
        super().__init__(params)
        self._u: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}

    def layer(self, model: Any) -> int:
        """ℓ for this model (validated against its number of layers)."""
        _, layers = decoder_layers(model)
        n = len(layers)
        layer = n // 2 if self.params.layer is None else self.params.layer
        if not 0 <= layer < n:
            raise MethodError(f"rmu: layer={layer} but the model has layers 0..{n - 1}")
        return layer

    def update_layers(self, model: Any) -> list[int]:
        layer = self.layer(model)
        chosen = self.params.update_layers
        layers = list(range(max(0, layer - 2), layer + 1)) if chosen is None else list(chosen)
        n = len(decoder_layers(model)[1])
        bad = [i for i in layers if not 0 <= i < n]
        if bad or not layers:
            raise MethodError(f"rmu: update_layers={layers} must be non-empty within 0..{n - 1}")
        return layers

    def trainable_patterns(self, model: Any) -> list[str]:
        prefix = re.escape(decoder_layers(model)[0])
        mods = self.params.update_modules
        return [rf"(^|\.){prefix}\.{i}\.{mods}\." for i in self.update_layers(model)]

    def direction(self, hidden: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The fixed random unit vector u (seeded, uniform [0, 1) entries, normalised)."""
        key = (hidden, str(device), dtype)
        if key not in self._u:
            gen = torch.Generator().manual_seed(self.params.seed)
            u = torch.rand(hidden, generator=gen, dtype=torch.float64)
            self._u[key] = (u / u.norm()).to(device=device, dtype=dtype)
        return self._u[key]

    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        p = self.params
        layer = self.layer(model)
        forget = view(batch, "forget", self.name)
        h_f = layer_output(model, forget, layer, p.early_exit)
        if p.forget_tokens == "answer":
            mask = torch.zeros_like(forget["attention_mask"], dtype=torch.bool)
            mask[:, :-1] = forget["labels"][:, 1:] != IGNORE
        else:
            mask = forget["attention_mask"].bool()
        target = p.steering_coeff * self.direction(h_f.shape[-1], h_f.device, torch.float32)
        forget_loss = _masked_mse(h_f.float() - target, mask.to(h_f.device))
        total = p.gamma * forget_loss
        parts = {"forget_act_loss": float(forget_loss.detach()),
                 "forget_act_norm": float(h_f.detach().float().norm(dim=-1)[mask].mean())}
        if p.alpha != 0.0:
            if ref_model is None:
                raise MethodError("method 'rmu' needs a reference model for its retain term")
            retain = view(batch, "retain", self.name)
            h_r = layer_output(model, retain, layer, p.early_exit)
            with torch.no_grad():
                h_ref = layer_output(ref_model, retain, layer, True)
            retain_loss = _masked_mse(h_r.float() - h_ref.float(), retain["attention_mask"].bool())
            total = total + p.alpha * retain_loss
            parts["retain_act_loss"] = float(retain_loss.detach())
        return LossOutput(total, parts)
