"""The contract every unlearning objective implements, and the pieces they share.

A method is one small class (the open-unlearning pattern: one file per objective, one
registry by name). ``loss(model, ref_model, batch)`` gets the policy model, a frozen copy of
the base model when ``needs_reference`` is set, and a batch of *views*: ``"forget"``,
``"retain"``, ``"forget_idk"`` (forget questions with refusal answers), each a padded
``{"input_ids", "attention_mask", "labels"}`` dict from :func:`unlearnops.textformat.collate`
(labels ``IGNORE`` on prompt and padding, so every loss is over answer tokens only).
"""

from __future__ import annotations

import copy
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field

from unlearnops.textformat import IGNORE, sequence_nll, token_logprobs

Batch = dict[str, dict[str, torch.Tensor]]

#: Key under which a reference sequence log-likelihood may be cached in a batch view.
REF_SEQ_LOGP = "ref_seq_logp"
#: on inside :func:`packed_forward`; per model, whether the padding-free forward was verified
_PACKED: ContextVar[bool] = ContextVar("unlearnops_packed_forward", default=False)
_PACKING_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_CHECK_ROWS = 4


class MethodError(ValueError):
    """Unknown method or parameter, or a batch/model the method cannot use."""


@dataclass
class LossOutput:
    """A scalar loss to back-propagate and named float parts for logging."""

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class MethodParams(BaseModel):
    """Base of every method's hyper-parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RetainParams(MethodParams):
    """Weights of the two terms: ``gamma · forget_term + alpha · retain_term``."""

    gamma: float = Field(1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0 drops it)")


def _param_table(params_cls: type[BaseModel]) -> str:
    return ", ".join(f"{n}={f.default!r}" for n, f in params_cls.model_fields.items()) or "(none)"


class Method(ABC):
    """An unlearning objective. Subclasses set ``name``, ``Params`` and implement ``loss``."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = MethodParams
    needs_reference: ClassVar[bool] = False
    needs_retain: ClassVar[bool] = False
    forget_views: ClassVar[tuple[str, ...]] = ("forget",)

    def __init__(self, params: Mapping[str, Any] | None = None):
        given = dict(params or {})
        unknown = sorted(set(given) - set(self.Params.model_fields))
        if unknown:
            raise MethodError(
                f"method {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid parameters (with defaults): {_param_table(self.Params)}"
            )
        try:
            self.params: Any = self.Params.model_validate(given)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise MethodError(
                f"method {self.name!r}: bad parameter value ({problems}); "
                f"valid parameters (with defaults): {_param_table(self.Params)}"
            ) from None

    # ------------------------------------------------------------ engine hooks
    @property
    def uses_retain(self) -> bool:
        """Whether ``loss`` reads the retain view (False when its weight ``alpha`` is 0)."""
        return self.needs_retain and float(getattr(self.params, "alpha", 1.0)) != 0.0

    @property
    def views(self) -> tuple[str, ...]:
        """The batch views ``loss`` reads."""
        return self.forget_views + (("retain",) if self.uses_retain else ())

    def trainable_patterns(self, model: Any) -> list[str]:
        """Regexes over parameter names the method wants trained; ``[]`` means all."""
        return []

    def reference_cache(self, ref_model: Any, view: str, batch_view: Mapping[str, torch.Tensor]
                        ) -> dict[str, torch.Tensor] | None:
        """Per-example tensors from the frozen reference that never change (None: nothing to cache).

        The engine may compute them once per example and pass them back in ``batch[view]``;
        ``loss`` gives the same value with or without them.
        """
        return None

    def alternate_view(self, ref_model: Any, tokenizer: Any, seed: int
                       ) -> Callable[[Sequence[Mapping[str, Any]]], list[dict[str, Any]]] | None:
        """What builds the ``forget_alt`` view from the forget records (None: not used)."""
        return None

    @abstractmethod
    def loss(self, model: Any, ref_model: Any, batch: Batch) -> LossOutput:
        """The scalar objective to minimise on this batch, with named parts for logging."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


# ---------------------------------------------------------------- shared helpers
def view(batch: Batch, name: str, method: str) -> dict[str, torch.Tensor]:
    """One view of the batch, or a clear error naming what is missing."""
    if name not in batch:
        raise MethodError(f"method {method!r} needs the batch view {name!r}; got {sorted(batch)}")
    return batch[name]


@contextmanager
def packed_forward(enabled: bool = True) -> Iterator[None]:
    """While active, :func:`forward_logits` runs padding-free where the model allows (the loop's switch)."""
    token = _PACKED.set(enabled)
    try:
        yield
    finally:
        _PACKED.reset(token)


def forward_logits(model: Any, v: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits ``(batch, width, vocab)`` of a causal LM on one view (only ids and mask are passed).

    Inside :func:`packed_forward`, a right-padded view runs padding-free (:func:`packed_logits`)
    when the model is known to support it (:func:`_packing_verified`); padding positions then hold
    zero logits, which every loss ignores (their labels are ``IGNORE``).
    """
    mask = v["attention_mask"]
    if _PACKED.get() and not bool(mask.all()) and _right_padded(mask) and _packing_verified(model, v):
        return packed_logits(model, v["input_ids"], mask)
    return padded_logits(model, v["input_ids"], mask)


def padded_logits(model: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The plain forward: the padded batch with its attention mask."""
    return model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits


def _right_padded(mask: torch.Tensor) -> bool:
    """Each row's tokens come first, then only padding (the layout :func:`collate` builds)."""
    width = torch.arange(mask.shape[1], device=mask.device)
    return bool((mask.bool() == (width < mask.sum(1, keepdim=True))).all())


def packed_logits(model: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padding-free forward: the rows' real tokens as packed sequences, positions restarting per row.

    With no attention mask and position ids that restart at 0, transformers builds a
    block-diagonal causal mask (its packed-sequence format), so each row attends to itself only
    and no FLOP is spent on padding (32-39% of the tokens of a batch of 8 QA pairs, issue 15).
    Rows are packed in order into sequences of at most :func:`pack_length` tokens (one forward
    each), which keeps the dense mask's attention cost small; the logits are scattered back into
    the padded layout.
    """
    keep = mask.bool()
    lengths = mask.sum(1).tolist()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)[keep]
    ids = input_ids[keep]
    parts, start = [], 0
    for size in _pack_sizes(lengths, pack_length(model)):
        out = model(input_ids=ids[start:start + size].unsqueeze(0),
                    position_ids=positions[start:start + size].unsqueeze(0), use_cache=False)
        parts.append(out.logits[0])
        start += size
    packed = torch.cat(parts) if len(parts) > 1 else parts[0]
    full = packed.new_zeros((*mask.shape, packed.shape[-1]))
    full[keep] = packed
    return full


def pack_length(model: Any) -> int:
    """Tokens per packed sequence: the dense mask's attention costs ~T/(6·hidden) of the linear
    layers' FLOPs, so T = hidden/2 keeps it under ~8% (at least 128 tokens)."""
    hidden = getattr(getattr(unwrap(model), "config", None), "hidden_size", None)
    return max(128, int(hidden) // 2) if isinstance(hidden, int) else 256


def _pack_sizes(lengths: Sequence[int], limit: int) -> list[int]:
    """Token counts of consecutive row groups of at most ``limit`` tokens (a longer row stands alone)."""
    sizes, current = [], 0
    for n in lengths:
        if current and current + n > limit:
            sizes.append(current)
            current = 0
        current += n
    if current:
        sizes.append(current)
    return sizes


def _packing_verified(model: Any, v: Mapping[str, torch.Tensor]) -> bool:
    """Whether packed and padded forwards agree on this model (checked once per model, no grad).

    Not every architecture reads packed position ids as sequence boundaries; one that does not
    would let rows attend to each other, so such a model keeps the padded forward. The check runs
    on the view's first :data:`_CHECK_ROWS` rows (one-off work, a small share of a step).
    """
    verdict = _PACKING_OK.get(model)
    if verdict is None:
        mask = v["attention_mask"][:_CHECK_ROWS]
        width = int(mask.sum(1).max())
        mask, ids = mask[:, :width], v["input_ids"][:_CHECK_ROWS, :width]
        with torch.no_grad():
            padded, packed = padded_logits(model, ids, mask), packed_logits(model, ids, mask)
        exact = padded.dtype == torch.float32 and not torch.is_autocast_enabled(padded.device.type)
        padded, packed = padded.float(), packed.float()
        keep = mask.bool()
        scale = padded[keep].abs().max().clamp(min=1e-6)
        tolerance = 1e-3 if exact else 3e-2  # bf16 rounding vs rows attending to each other (O(1))
        verdict = bool(((padded[keep] - packed[keep]).abs().max() / scale) <= tolerance)
        _PACKING_OK[model] = verdict
    return verdict


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean answer-token NLL over the batch (all answer tokens weigh the same, as HF's loss)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp(min=1)


def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits that predict answer tokens ``(N, vocab)`` (float32) and those tokens ``(N,)``."""
    mask = labels[:, 1:] != IGNORE
    return logits[:, :-1][mask].float(), labels[:, 1:][mask]


def model_nll(model: Any, v: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return mean_nll(forward_logits(model, v), v["labels"])


def seq_logp(model: Any, v: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example answer log-likelihood ``log π(y|x)`` (summed over tokens) and answer length."""
    nll, length = sequence_nll(forward_logits(model, v), v["labels"])
    return -nll, length


def reference_seq_logp(ref_model: Any, v: Mapping[str, torch.Tensor], method: str) -> torch.Tensor:
    """``log π_ref(y|x)`` per example: the cached ``ref_seq_logp`` if present, else computed."""
    cached = v.get(REF_SEQ_LOGP)
    if cached is not None:
        return cached.float()
    if ref_model is None:
        raise MethodError(f"method {method!r} needs a reference model (or cached {REF_SEQ_LOGP!r})")
    with torch.no_grad():
        return seq_logp(ref_model, v)[0].detach()


def ref_seq_cache(ref_model: Any, v: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference log-likelihood cache entry for one view (shape ``(batch,)``)."""
    with torch.no_grad():
        return {REF_SEQ_LOGP: seq_logp(ref_model, v)[0].detach()}


def retain_nll_term(method: Method, model: Any, batch: Batch
                    ) -> tuple[torch.Tensor | float, dict[str, float]]:
    """``alpha · NLL(retain)`` (0 and no forward pass when ``alpha`` is 0)."""
    alpha = float(method.params.alpha)  # type: ignore[attr-defined]
    if alpha == 0.0:
        return 0.0, {}
    nll = model_nll(model, view(batch, "retain", method.name))
    return alpha * nll, {"retain_nll": float(nll.detach())}


def frozen_copy(model: Any) -> Any:
    """A frozen copy of ``model`` to use as the reference (eval mode, no gradients)."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def unwrap(model: Any) -> Any:
    """The plain transformers model under DDP / peft / ``torch.compile`` wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile
            model = model._orig_mod
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(model, torch.nn.Module) and hasattr(model, "module") and \
                isinstance(model.module, torch.nn.Module):
            model = model.module
        else:
            return model
