"""The objectives added from the reference toolkit (UNDIAL, WGA, SatImp, CE-U, PDU, AltPO):
each loss against a hand computation from the logits (plain loops in float64), one SGD step in
the intended direction, the alternate-answer view, and a few in-process training steps each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from unlearnops.components.unlearn.data import DataError, prepare_data
from unlearnops.components.unlearn.methods import get_method
from unlearnops.components.unlearn.methods.altpo import alternate_answers
from unlearnops.components.unlearn.methods.pdu import dual_update
from unlearnops.components.unlearn.runner import run_unlearning

from tests.test_methods import batch, hand_nll, hand_seq, logits_of, logsig, make_view, tiny_model
from unlearnops import modelio
from unlearnops.textformat import IGNORE
from unlearnops.types import UnlearnSpec

torch.set_num_threads(1)
NEW = ("undial", "wga", "satimp", "ce_u", "pdu", "altpo")


@pytest.fixture()
def model():
    return tiny_model(0)


@pytest.fixture()
def ref():
    from unlearnops.components.unlearn.methods import frozen_copy

    return frozen_copy(tiny_model(1))


def positions(m, v):
    """(log-softmax row, raw logits row, target) at every answer position, by explicit loop."""
    logits = logits_of(m, v)
    out = []
    for i in range(v["input_ids"].shape[0]):
        for t in range(1, v["input_ids"].shape[1]):
            label = int(v["labels"][i, t])
            if label != IGNORE:
                out.append((torch.log_softmax(logits[i, t - 1], -1), logits[i, t - 1], label))
    return out


def test_undial_value(model, ref):
    b, beta = batch(), 3.0
    terms = []
    pairs = zip(positions(model, b["forget"]), positions(ref, b["forget"]), strict=True)
    for (lp, _, y), (_, z_ref, _) in pairs:
        z = z_ref.clone()
        z[y] -= beta
        q = torch.softmax(z, -1)
        terms.append(float(-(q * lp).sum()))
    want = sum(terms) / len(terms) + 0.5 * hand_nll(model, b["retain"])
    got = get_method("undial", {"beta": beta, "alpha": 0.5}).loss(model, ref, b)
    assert got.loss.item() == pytest.approx(want, rel=1e-5)
    # β = 0: plain distillation, the loss is the cross-entropy to the base model's distribution
    same = get_method("undial", {"beta": 0.0}).loss(model, model, b).loss.item()
    ent = [float(-(lp.exp() * lp).sum()) for lp, _, _ in positions(model, b["forget"])]
    assert same == pytest.approx(sum(ent) / len(ent), rel=1e-5)


@pytest.mark.parametrize("name,params", [("wga", {"beta": 2.0}), ("satimp", {"beta1": 2.0, "beta2": 3.0})])
def test_weighted_ascent_values(name, params, model):
    b = batch()
    terms = []
    for lp, _, y in positions(model, b["forget"]):
        logp = float(lp[y])
        p = math.exp(logp)
        w = p ** 2.0 if name == "wga" else p ** 2.0 * (1 - p) ** 3.0
        terms.append(w * logp)
    alpha = 1.0 if name == "wga" else 0.1  # the papers' defaults
    want = sum(terms) / len(terms) + alpha * hand_nll(model, b["retain"])
    assert get_method(name, params).loss(model, None, b).loss.item() == pytest.approx(want, rel=1e-5)


def test_ce_u_value(model):
    b = batch()
    terms = []
    for lp, z, y in positions(model, b["forget"]):
        zm = z.clone()
        zm[y] = float("-inf")
        q = torch.softmax(zm, -1)
        assert float(q[y]) == 0.0
        terms.append(float(-(q * lp).sum()))
    want = sum(terms) / len(terms)
    assert get_method("ce_u").loss(model, None, b).loss.item() == pytest.approx(want, rel=1e-5)


def test_pdu_value_and_dual_ascent(model):
    b = batch()
    flat = [float((z.max() - z.mean()) ** 2) for _, z, _ in positions(model, b["forget"])]
    retain = hand_nll(model, b["retain"])
    method = get_method("pdu", {"epsilon": retain - 0.5, "alpha": 2.0, "dual_step": 0.1})
    out = method.loss(model, None, b)
    assert out.loss.item() == pytest.approx(sum(flat) / len(flat) + 2.0 * 0.5, rel=1e-5)
    assert out.parts["dual_lambda"] == 2.0 and method.lam == pytest.approx(2.0 + 0.1 * 0.5, rel=1e-5)
    assert dual_update(0.2, -5.0, 1.0) == 0.0  # projected onto λ ≥ 0
    first = get_method("pdu")  # ε = the first step's retain NLL: no slack at step one
    assert first.loss(model, None, b).parts["constraint_slack"] == pytest.approx(0.0, abs=1e-9)
    assert first.epsilon == pytest.approx(retain, rel=1e-5) and first.uses_retain


def test_altpo_value(model, ref):
    b, beta = batch(), 0.1
    b["forget_alt"] = make_view([([5, 6, 7], [40, 41, 2]), ([5, 8], [42, 2])])

    def ratios(v):
        return [x - y for x, y in zip(hand_seq(model, v), hand_seq(ref, v), strict=True)]

    win, lose = ratios(b["forget_alt"]), ratios(b["forget"])
    dpo = -(2 / beta) * sum(logsig(beta * (w - lo)) for w, lo in zip(win, lose, strict=True)) / 2
    want = dpo + hand_nll(model, b["retain"])
    assert get_method("altpo").loss(model, ref, b).loss.item() == pytest.approx(want, rel=1e-5)
    del b["forget_alt"]
    with pytest.raises(ValueError, match="forget_alt"):
        get_method("altpo").loss(model, ref, b)


@pytest.mark.parametrize("name", NEW)
def test_one_step_lowers_forget_likelihood(name, ref):
    model = tiny_model(0)
    b = batch()
    b["forget"] = make_view([([5, 6, 7], [10, 11, 12, 2])])
    b["forget_alt"] = make_view([([5, 6, 7], [20, 21, 2])])
    before = hand_nll(model, b["forget"])
    if name == "undial":  # self-distillation: the teacher is the starting model itself
        from unlearnops.components.unlearn.methods import frozen_copy

        ref = frozen_copy(model)
    params = {"epsilon": 100.0} if name == "pdu" else {"alpha": 0}
    if name == "satimp":  # p^5 of an untrained model's ~1/50 probabilities barely moves in one step
        params["beta1"] = 1.0
    method = get_method(name, params)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = method.loss(model, ref, b)
    first.loss.backward()
    opt.step()
    if name == "pdu":  # PDU flattens the forget distribution (toward uniform), whatever the label
        assert method.loss(model, ref, b).parts["forget_loss"] < first.parts["forget_loss"]
    else:
        assert hand_nll(model, b["forget"]) > before + 1e-6


def test_defaults_follow_the_papers():
    p = {n: get_method(n).params for n in NEW}
    assert p["undial"].beta == 10.0 and p["undial"].alpha == 0.0
    assert p["wga"].beta == 1.0 and p["wga"].alpha == 1.0
    assert (p["satimp"].beta1, p["satimp"].beta2, p["satimp"].alpha) == (5.0, 1.0, 0.1)
    assert p["ce_u"].alpha == 0.0 and p["pdu"].dual_step == 1.0 and p["pdu"].epsilon is None
    assert p["altpo"].beta == 0.1 and get_method("altpo").forget_views == ("forget", "forget_alt")


# ------------------------------------------------------------ alternate answers, in process
@pytest.fixture(scope="module")
def mini_model(mini_unlearn):
    from unlearnops.components.scope.resolve import read_set

    with modelio.LocalModel(str(mini_unlearn["model"])) as path:
        tok, m = modelio.load_tokenizer(path), modelio.load_model(path, "cpu", torch.float32)
    return m, tok, list(read_set(str(mini_unlearn["scope"]), "forget"))


def test_alternate_answers_are_seeded_samples_not_the_truth(mini_model):
    m, tok, forget = mini_model
    records = forget[:3] + [{"id": "t", "kind": "text", "text": "Ada Quill was born in Westbrook in 1984."}]
    a = alternate_answers(m, tok, records, seed=1, max_new_tokens=8)
    assert a == alternate_answers(m, tok, records, seed=1, max_new_tokens=8)
    assert [r["id"] for r in a] == [r["id"] for r in records]
    for alt, rec in zip(a, records, strict=True):
        assert alt["answer"] and alt["question"]
        if rec.get("answer"):
            assert rec["answer"].strip().lower() not in alt["answer"].lower()
    data = prepare_data({"forget": records, "retain": forget[3:]}, tok, views=("forget", "forget_alt"),
                        needs_retain=False, max_length=None, alternate=lambda rs: a)
    assert len(data.views["forget_alt"]) == len(data.views["forget"]) == 4
    with pytest.raises(DataError, match="alternate"):
        prepare_data({"forget": records}, tok, views=("forget_alt",), needs_retain=False, max_length=None)


@pytest.mark.parametrize("name", NEW)
def test_method_trains_in_process(name, mini_unlearn, tmp_path: Path):
    train = {"steps": 2, "batch_size": 2, "probe_every": 2, "probe_size": 2}
    spec = UnlearnSpec(method=name, params={"train": train})
    out = tmp_path / "out"
    run_unlearning(spec, str(mini_unlearn["scope"]), str(mini_unlearn["model"]), str(out), local=True,
                   calibrate=False)
    meta = json.loads((out / "training.json").read_text())
    assert meta["method"] == name and meta["steps"] == 2
    assert all(math.isfinite(row["loss"]) for row in meta["curve"])
