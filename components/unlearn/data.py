"""Scope sets → encoded views → per-worker seeded batches (forget + retain, gradient accumulation).

Views (what a method's ``forget_views`` names, plus ``retain``):

- ``forget``      the forget records, prompt masked, answer + EOS as target (:mod:`unlearnops.textformat`);
- ``forget_idk``  the same records with a refusal answer (``methods.refusals.idk_record``), index-aligned
  with ``forget`` so one sampler draws both;
- ``forget_alt``  the same records with an alternate answer sampled from the base model before
  training (``methods.altpo.alternate_answers``), index-aligned with ``forget``;
- ``retain``      the retain records.

Sharding: each worker owns a fixed, seeded shard of the forget and of the retain examples (a
permutation split ``rank::world``) and walks it in a fresh seeded order each pass. The position of
every stream is a pure function of the number of examples drawn, so a resumed run replays the exact
order from the step count alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unlearnops import documents
from unlearnops.textformat import Encoded, collate, encode_record

FORGET, FORGET_IDK, FORGET_ALT, RETAIN = "forget", "forget_idk", "forget_alt", "retain"
#: Hold the retain probe out of training only when retain has this many probe slices of examples.
RETAIN_HOLDOUT_MULTIPLE = 8


Transform = Callable[[Mapping[str, Any], int], Mapping[str, Any]]
#: Rewrites a whole set at once (e.g. base-model generation of alternate answers), order kept.
SetTransform = Callable[[Sequence[Mapping[str, Any]]], Sequence[Mapping[str, Any]]]
Batch = dict[str, dict[str, torch.Tensor]]


class DataError(ValueError):
    """The scope's data cannot be used with this model or method (message says why and what to do)."""


#: The only DataScope sets training may read: the forget set and the retain-train sample. The
#: retain-eval, neighbor and holdout sets are what evaluation measures on — never trained on.
TRAINABLE_SETS: tuple[str, ...] = ("forget", "retain")


def read_scope_sets(scope_uri: str, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Read the named trainable sets of a DataScope folder (see :data:`TRAINABLE_SETS`)."""
    held_out = sorted(set(names) - set(TRAINABLE_SETS))
    if held_out:
        raise DataError(f"training may read only the {' and '.join(TRAINABLE_SETS)} sets of a scope, "
                        f"not {held_out}: those are held out for evaluation")

    try:
        return {name: documents.read_scope_set(scope_uri, name) for name in names}
    except documents.DocumentError as err:
        raise DataError(f"{err}") from None


def read_corpus_sets(corpus_uri: str) -> dict[str, list[dict[str, Any]]]:
    """A corpus's training records, minus the suppression list, as the ``forget`` view of ``finetune``.

    The retrain step (components/retrain/) fine-tunes on them with the NLL objective; there is no
    retain set. The reader is the benchmark's (:func:`.benchmark_models.read_training_records`),
    which applies :func:`unlearnops.suppression.unsuppressed`.
    """
    from .benchmark_models import read_training_records

    return {"forget": read_training_records(corpus_uri), "retain": []}


def encode_records(tokenizer: Any, records: Sequence[Mapping[str, Any]], max_length: int | None,
                   set_name: str, transform: Transform | None = None) -> list[Encoded]:
    """Encode records with :func:`encode_record`; a too-long example is a :class:`DataError` naming it."""
    out: list[Encoded] = []
    for index, record in enumerate(records):
        rec = transform(record, index) if transform else record
        try:
            out.append(encode_record(tokenizer, rec, max_length))
        except ValueError as err:
            raise DataError(f"scope set '{set_name}', record {record.get('id', index)}: {err}") from err
    return out


def context_length(model_config: Any) -> int | None:
    """The model's context (``max_position_embeddings``), if it declares one."""
    value = getattr(model_config, "max_position_embeddings", None)
    return int(value) if value else None


@dataclass
class TrainData:
    """Encoded training views and the probe slices (held out of training where possible)."""

    views: dict[str, list[Encoded]]
    probe_forget: list[Encoded] = field(default_factory=list)
    probe_retain: list[Encoded] = field(default_factory=list)

    @property
    def n_forget(self) -> int:
        return len(next(iter(v for k, v in self.views.items() if k != RETAIN), []))

    @property
    def n_retain(self) -> int:
        return len(self.views.get(RETAIN, []))


def _perm(n: int, *seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(list(seed)).permutation(n)]


#: ``retain_reason`` prefix the scope step gives retain-train records that are out of scope but close to
#: the forget set (shared attribute values or surname: ``components/scope/resolve.py``).
HARD_NEGATIVE = "hard_negative"


def retain_probe_order(retain: Sequence[Mapping[str, Any]], probe_size: int, seed: int) -> list[int]:
    """Indices of ``retain`` in probe order: up to ``probe_size // 2`` hard negatives first (seeded
    order), then the other records (seeded order).

    Over-forgetting hits the records closest to the forget set first (the neighbor gates measure
    exactly that), so the calibrated-stopping retain probe watches them; the other half keeps it a
    sample of the whole retain set (general facts, other people).
    """
    order = _perm(len(retain), seed, 13)
    hard = [i for i in order if str(retain[i].get("retain_reason", "")).startswith(HARD_NEGATIVE)]
    first = hard[:probe_size // 2]
    taken = set(first)
    return first + [i for i in order if i not in taken]


def prepare_data(records: Mapping[str, Sequence[Mapping[str, Any]]], tokenizer: Any, *,
                 views: Sequence[str], needs_retain: bool, max_length: int | None,
                 probe_size: int = 16, probe_holdout_forget: bool = False, seed: int = 0,
                 idk: Transform | None = None, alternate: SetTransform | None = None) -> TrainData:
    """Encode the ``views`` a method reads (``Method.views``) and carve the probe slices.

    The retain probe (:func:`retain_probe_order`: hard negatives first) is held out of training when
    the retain set has at least ``RETAIN_HOLDOUT_MULTIPLE`` x ``probe_size`` examples (on small
    scopes every retain example is needed to anchor the model, and a held-out slice of a few
    people's facts mostly measures collateral forgetting of unseen facts); hard negatives are never
    held out — they are the records that anchor the forget set's neighbourhood. ``alternate``
    builds the ``forget_alt`` view (it needs the base model, which the caller holds). The forget
    probe is a seeded slice of the forget set that stays in training unless
    ``probe_holdout_forget``: every forget item must be erased, so holding items back would leave
    them to generalisation.
    """
    forget = list(records.get(FORGET, []))
    retain = list(records.get(RETAIN, []))
    if not forget:
        raise DataError("the scope's forget set is empty: nothing to unlearn (check the request's selectors)")
    if needs_retain and not retain:
        raise DataError("this method needs a retain set but the scope's retain set is empty: "
                        "resolve the scope with retain_multiple > 0 or pick a forget-only method")
    f_order = _perm(len(forget), seed, 11)
    probe_f = [forget[i] for i in f_order[:probe_size]]
    if probe_holdout_forget and len(forget) > 2 * probe_size:
        held = set(f_order[:probe_size])
        forget = [r for i, r in enumerate(forget) if i not in held]
    probe_r: list[Mapping[str, Any]] = []
    if retain:
        r_order = retain_probe_order(retain, probe_size, seed)
        probe_r = [retain[i] for i in r_order[:probe_size]]
        if len(retain) >= RETAIN_HOLDOUT_MULTIPLE * probe_size:
            held = {i for i in r_order[:probe_size]
                    if not str(retain[i].get("retain_reason", "")).startswith(HARD_NEGATIVE)}
            retain = [r for i, r in enumerate(retain) if i not in held]
    out: dict[str, list[Encoded]] = {}
    for view in views:
        if view == RETAIN:
            out[view] = encode_records(tokenizer, retain, max_length, RETAIN)
        elif view == FORGET:
            out[view] = encode_records(tokenizer, forget, max_length, FORGET)
        elif view == FORGET_IDK:
            if idk is None:
                from unlearnops.components.unlearn.methods.refusals import idk_record

                idk = idk_record
            out[view] = encode_records(tokenizer, forget, max_length, FORGET, transform=idk)
        elif view == FORGET_ALT:
            if alternate is None:
                raise DataError("the forget_alt view needs alternate answers from the base model: "
                                "pass alternate= (methods.altpo.alternate_answers) to prepare_data")
            out[view] = encode_records(tokenizer, list(alternate(forget)), max_length, FORGET_ALT)
        else:
            raise DataError(f"unknown view {view!r}; known: {FORGET}, {FORGET_IDK}, {FORGET_ALT}, {RETAIN}")
    return TrainData(
        views=out,
        probe_forget=encode_records(tokenizer, probe_f, max_length, FORGET),
        probe_retain=encode_records(tokenizer, probe_r, max_length, RETAIN),
    )


class ShardStream:
    """An endless seeded stream over one worker's fixed shard of ``n`` examples.

    The shard is ``perm(n)[rank::world]`` (a worker with no example of its own, when
    ``n < world``, borrows ``perm(n)[rank % n]``); each pass over it uses a fresh seeded order.
    ``position`` counts the examples drawn so far and is all the state a resume needs.
    """

    def __init__(self, n: int, *, rank: int = 0, world: int = 1, seed: int = 0, salt: int = 0):
        base = _perm(n, seed, salt, 7)
        shard = base[rank::world] if n else []
        if n and not shard:
            shard = [base[rank % n]]
        self.shard = shard
        self.seed, self.salt, self.rank = seed, salt, rank
        self.position = 0
        self._pass = -1
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self.shard)

    def _order_of(self, pass_no: int) -> list[int]:
        if pass_no != self._pass:
            perm = _perm(len(self.shard), self.seed, self.salt, self.rank, pass_no)
            self._order = [self.shard[i] for i in perm]
            self._pass = pass_no
        return self._order

    def take(self, k: int) -> list[int]:
        """The next ``k`` example indices (empty when the stream has no examples)."""
        if not self.shard or k <= 0:
            return []
        out: list[int] = []
        size = len(self.shard)
        for _ in range(k):
            pass_no, offset = divmod(self.position, size)
            out.append(self._order_of(pass_no)[offset])
            self.position += 1
        return out


def split_batch(total: int, world: int, grad_accum: int, what: str) -> int:
    """Per-worker micro-batch size for a global batch of ``total`` examples per optimizer step."""
    parts = world * grad_accum
    if total < parts or total % parts:
        raise DataError(f"{what}={total} must be a positive multiple of workers x grad_accum = {parts}")
    return total // parts


RowCache = dict[str, torch.Tensor]


def _stack_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-example cached tensors, right-padding ragged last dimensions with zeros."""
    if all(r.shape == rows[0].shape for r in rows):
        return torch.stack(list(rows))
    width = max(r.shape[-1] for r in rows)
    padded = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]
    return torch.stack(padded)


def build_batch(data: TrainData, forget_idx: Sequence[int], retain_idx: Sequence[int], pad_id: int,
                caches: Mapping[str, Mapping[int, RowCache]] | None = None) -> Batch:
    """``{view: collate(...)}`` for the drawn indices, with each view's cached reference values."""
    batch: dict[str, dict[str, torch.Tensor]] = {}
    for view, examples in data.views.items():
        idx = retain_idx if view == RETAIN else forget_idx
        if not idx:
            continue
        part = collate([examples[i] for i in idx], pad_id)
        cache = (caches or {}).get(view)
        if cache:
            for key in cache[idx[0]]:
                part[key] = _stack_rows([cache[i][key] for i in idx])
        batch[view] = part
    return batch


def count_tokens(batch: Mapping[str, Mapping[str, torch.Tensor]]) -> int:
    """Non-padding tokens in a batch (all views)."""
    return int(sum(int(part["attention_mask"].sum()) for part in batch.values()))


def to_device(batch: Batch, device: Any) -> Batch:
    return {view: {k: v.to(device, non_blocking=True) for k, v in part.items()}
            for view, part in batch.items()}
