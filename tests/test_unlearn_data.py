"""Unit tests of the engine's data path: encoding views, the sharded sampler, batches, schedule, probes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from unlearnops.components.unlearn import probes
from unlearnops.components.unlearn.benchmark_models import train_tokenizer
from unlearnops.components.unlearn.data import (
    RETAIN_HOLDOUT_MULTIPLE,
    DataError,
    ShardStream,
    build_batch,
    count_tokens,
    prepare_data,
    split_batch,
)
from unlearnops.components.unlearn.job import TrainConfig, lr_factor, total_steps

from unlearnops.textformat import IGNORE


def qa(i: int, who: str = "p1") -> dict:
    return {"id": f"{who}-{i}", "kind": "qa", "question": f"What is fact {i} of {who}?",
            "answer": f"value {i}", "subject_ids": [who], "source": "person", "attribute": "x"}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([qa(i) for i in range(20)] + [{"id": "t", "kind": "text", "text": "A short bio."}],
                           vocab_size=300)


# ---------------------------------------------------------------- sampler
@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (7, 2), (3, 4)])
def test_shards_cover_the_examples_and_are_disjoint_when_possible(n: int, world: int) -> None:
    shards = [ShardStream(n, rank=r, world=world, seed=3).shard for r in range(world)]
    assert set().union(*map(set, shards)) == set(range(n))
    if n >= world:
        assert sum(len(s) for s in shards) == n


def test_stream_is_seeded_and_resumes_from_its_position() -> None:
    a, b = ShardStream(9, rank=1, world=2, seed=5), ShardStream(9, rank=1, world=2, seed=5)
    first = a.take(7) + a.take(6)
    assert first == b.take(13)
    resumed = ShardStream(9, rank=1, world=2, seed=5)
    resumed.position = 7
    assert resumed.take(6) == first[7:]
    assert ShardStream(9, rank=1, world=2, seed=6).take(13) != first
    # each pass visits the whole shard once, in a fresh order
    c = ShardStream(8, seed=1)
    passes = [c.take(8) for _ in range(3)]
    assert all(sorted(p) == list(range(8)) for p in passes) and passes[0] != passes[1]


def test_empty_stream_and_batch_split() -> None:
    assert ShardStream(0).take(4) == []
    assert split_batch(32, 2, 2, "batch") == 8
    with pytest.raises(DataError, match="multiple of workers x grad_accum = 3"):
        split_batch(32, 3, 1, "train.batch_size")


# ---------------------------------------------------------------- views and probes
def test_prepare_data_encodes_views_and_holds_out_large_retain_probes(tokenizer) -> None:
    forget = [qa(i) for i in range(6)]
    retain = [qa(i, "p2") for i in range(RETAIN_HOLDOUT_MULTIPLE * 2)]
    data = prepare_data({"forget": forget, "retain": retain}, tokenizer, views=("forget", "retain"),
                        needs_retain=True, max_length=64, probe_size=2, seed=0)
    assert data.n_forget == 6 and data.n_retain == len(retain) - 2
    assert len(data.probe_forget) == 2 and len(data.probe_retain) == 2
    ex = data.views["forget"][0]
    assert ex.labels[0] == IGNORE and ex.labels[-1] == tokenizer.eos_token_id
    # small retain sets stay whole
    small = prepare_data({"forget": forget, "retain": retain[:5]}, tokenizer, views=("forget", "retain"),
                         needs_retain=True, max_length=64, probe_size=2)
    assert small.n_retain == 5 and len(small.probe_retain) == 2


def test_forget_idk_view_is_aligned_with_forget(tokenizer) -> None:
    def idk(record, index):
        return {**record, "answer": "I don't know."}

    data = prepare_data({"forget": [qa(i) for i in range(3)], "retain": []}, tokenizer,
                        views=("forget", "forget_idk"), needs_retain=False, max_length=64, idk=idk)
    assert len(data.views["forget_idk"]) == 3
    assert data.views["forget_idk"][0].input_ids != data.views["forget"][0].input_ids


def test_bad_data_is_refused_clearly(tokenizer) -> None:
    with pytest.raises(DataError, match="retain set is empty"):
        prepare_data({"forget": [qa(1)], "retain": []}, tokenizer, views=("forget", "retain"),
                     needs_retain=True, max_length=64)
    with pytest.raises(DataError, match="forget set is empty"):
        prepare_data({"forget": [], "retain": [qa(1)]}, tokenizer, views=("forget",),
                     needs_retain=False, max_length=64)
    with pytest.raises(DataError, match=r"record p1-0: .*exceeds the model's context of 4"):
        prepare_data({"forget": [qa(0)], "retain": []}, tokenizer, views=("forget",),
                     needs_retain=False, max_length=4)


def test_build_batch_collates_views_and_attaches_cached_rows(tokenizer) -> None:
    data = prepare_data({"forget": [qa(i) for i in range(4)], "retain": [qa(i, "p2") for i in range(4)]},
                        tokenizer, views=("forget", "retain"), needs_retain=True, max_length=64)
    caches = {"forget": {i: {"ref_seq_logp": torch.tensor(-float(i)),
                             "ragged": torch.ones(i + 1)} for i in range(4)}}
    batch = build_batch(data, [2, 0], [1, 3], tokenizer.pad_token_id, caches)
    assert set(batch) == {"forget", "retain"}
    assert batch["forget"]["ref_seq_logp"].tolist() == [-2.0, 0.0]
    assert batch["forget"]["ragged"].shape == (2, 3)
    assert count_tokens(batch) == int(sum(v["attention_mask"].sum() for v in batch.values()))
    assert "ref_seq_logp" not in batch["retain"]


# ---------------------------------------------------------------- schedule and stop conditions
def test_warmup_cosine_schedule_and_step_count() -> None:
    cfg = TrainConfig(warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(55, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert total_steps(TrainConfig(epochs=2, batch_size=8), 20) == math.ceil(40 / 8)
    assert total_steps(TrainConfig(), 20) == 100


def test_stop_when_conditions() -> None:
    with pytest.raises(ValueError, match="valid: "):
        probes.check_stop_when({"forget_prob": 0.1})
    cond = probes.check_stop_when({"forget_prob_max": 0.1, "retain_prob_min_ratio": 0.9, "min_steps": 5})
    base = {"forget_prob": 0.9, "retain_prob": 0.8}
    good = {"forget_prob": 0.05, "retain_prob": 0.75}
    assert probes.should_stop(good, base, cond, step=5)
    assert not probes.should_stop(good, base, cond, step=4)
    assert not probes.should_stop({"forget_prob": 0.05, "retain_prob": 0.7}, base, cond, step=9)
    assert probes.better(good, None, base, cond)
    assert not probes.better({"forget_prob": 0.2, "retain_prob": 0.8}, good, base, cond)
    assert not probes.should_stop(good, base, {}, step=50)


def test_band_distance_and_checkpoint_closest_to_the_band() -> None:
    cond = probes.check_stop_when({"forget_prob_max": 0.2, "forget_prob_min": 0.025,
                                   "retain_prob_min_ratio": 0.9})
    assert probes.band_distance(0.1, cond) == 0.0
    assert probes.band_distance(0.4, cond) == pytest.approx(math.log(2.0))  # log(0.4 / 0.2)
    assert probes.band_distance(0.005, cond) == pytest.approx(math.log(5.0))  # log(0.025 / 0.005)
    assert probes.band_distance(0.0, {"forget_prob_max": 0.2}) == 0.0  # no floor: no lower side
    never = {"forget_prob_max": 0.0}  # a band nothing reaches: the lowest forget probability is closest
    assert probes.band_distance(0.01, never) < probes.band_distance(0.02, never)
    base = {"forget_prob": 0.99, "retain_prob": 0.9}
    # below the floor: not a stop (over-forgotten), although under the max
    assert not probes.should_stop({"forget_prob": 0.001, "retain_prob": 0.9}, base, cond, step=9)
    assert probes.should_stop({"forget_prob": 0.1, "retain_prob": 0.85}, base, cond, step=9)
    above = {"forget_prob": 0.3, "retain_prob": 0.9}   # distance log 1.5 = 0.41
    below = {"forget_prob": 0.001, "retain_prob": 0.9}  # distance log 25 = 3.2: farther, although lower
    assert probes.better(above, below, base, cond) and not probes.better(below, above, base, cond)
    # inside the band, the one that kept more of the retain side
    in_low = {"forget_prob": 0.05, "retain_prob": 0.82}
    in_high = {"forget_prob": 0.15, "retain_prob": 0.88}
    assert probes.better(in_high, in_low, base, cond) and not probes.better(in_low, in_high, base, cond)
    # the retain side must hold whatever the forget side
    assert not probes.better({"forget_prob": 0.1, "retain_prob": 0.5}, above, base, cond)


def test_retain_probe_takes_hard_negatives_first_and_never_holds_them_out(tokenizer) -> None:
    from unlearnops.components.unlearn.data import retain_probe_order

    def rec(i: int, hard: bool) -> dict:
        return {**qa(100 + i), **({"retain_reason": "hard_negative_shared_surname"} if hard else {})}

    retain = [rec(i, hard=i % 10 == 0) for i in range(40)]  # 4 hard negatives: 0, 10, 20, 30
    order = retain_probe_order(retain, probe_size=4, seed=0)
    assert sorted(order) == list(range(40))
    assert all(i % 10 == 0 for i in order[:2]) and sum(i % 10 == 0 for i in order[:4]) == 2  # half of it
    hard_ids = {retain[i]["id"] for i in range(0, 40, 10)}
    data = prepare_data({"forget": [qa(i) for i in range(3)], "retain": retain}, tokenizer,
                        views=("forget", "retain"), needs_retain=True, max_length=None, probe_size=4)
    assert len(data.probe_retain) == 4
    # 40 >= 8 x 4: the probe's two ordinary records are held out of training, its hard negatives are not
    assert data.n_retain == 38
    probe_hard = [retain[i]["id"] for i in order[:2]]
    assert set(probe_hard) <= hard_ids


def test_training_reads_only_forget_and_retain_train(tmp_path: Path) -> None:
    from unlearnops.components.unlearn.data import read_scope_sets

    with pytest.raises(DataError, match="held out for evaluation"):
        read_scope_sets(str(tmp_path), ["forget", "retain_eval"])
