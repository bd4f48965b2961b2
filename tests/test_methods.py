"""Unit tests of the unlearning objectives on a tiny random Llama (CPU, seconds).

Each loss is checked against a hand computation from the logits (plain loops in float64),
its gradient direction with one SGD step, the frozen reference, the trainable selection of
RMU, the reference caches, and the registry's errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from unlearnops.components.unlearn.methods import (
    METHODS,
    MethodError,
    describe_methods,
    frozen_copy,
    get_method,
)
from unlearnops.components.unlearn.methods.base import (
    _pack_sizes,
    _right_padded,
    forward_logits,
    packed_forward,
    packed_logits,
)
from unlearnops.components.unlearn.methods.refusals import REFUSALS, idk_record
from unlearnops.components.unlearn.methods.rmu import RMU, layer_output
from unlearnops.components.unlearn.weights import select_trainable

from unlearnops.textformat import IGNORE, Encoded, collate

torch.set_num_threads(1)

VOCAB = 50


def tiny_model(seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the 0.02 init: non-trivial distributions
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model


def make_view(pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded batch from (prompt ids, answer ids) pairs."""
    examples = [Encoded([*p, *a], [IGNORE] * len(p) + list(a)) for p, a in pairs]
    return collate(examples, pad_id=0)


FORGET = [([5, 6, 7], [10, 11, 12, 2]), ([5, 8], [13, 14, 2])]
FORGET_IDK = [([5, 6, 7], [20, 21, 2]), ([5, 8], [22, 23, 24, 25, 2])]
RETAIN = [([5, 9, 7], [30, 31, 2]), ([5, 3], [32, 2]), ([5, 4, 4, 4], [33, 34, 35, 2])]


def batch() -> dict[str, dict[str, torch.Tensor]]:
    return {"forget": make_view(FORGET), "forget_idk": make_view(FORGET_IDK),
            "forget_alt": make_view(FORGET_IDK), "retain": make_view(RETAIN)}


@pytest.fixture()
def model() -> LlamaForCausalLM:
    return tiny_model(0)


@pytest.fixture()
def ref() -> LlamaForCausalLM:
    return frozen_copy(tiny_model(1))  # a different model, so log-ratios and KL are not zero


# ------------------------------------------------------------ hand computations
def logits_of(model, v) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=v["input_ids"], attention_mask=v["attention_mask"]).logits.double()


def hand_token_logps(model, v) -> list[list[float]]:
    """Per example, log p(answer token) at each answer position (explicit loop)."""
    logits = logits_of(model, v)
    out = []
    for i in range(v["input_ids"].shape[0]):
        row = []
        for t in range(1, v["input_ids"].shape[1]):
            label = int(v["labels"][i, t])
            if label != IGNORE:
                row.append(float(torch.log_softmax(logits[i, t - 1], -1)[label]))
        out.append(row)
    return out


def hand_nll(model, v) -> float:
    rows = hand_token_logps(model, v)
    return -sum(sum(r) for r in rows) / sum(len(r) for r in rows)


def hand_seq(model, v) -> list[float]:
    return [sum(r) for r in hand_token_logps(model, v)]


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def hand_kl(model, ref, v) -> float:
    logits, ref_logits = logits_of(model, v), logits_of(ref, v)
    total, n = 0.0, 0
    for i in range(v["input_ids"].shape[0]):
        for t in range(1, v["input_ids"].shape[1]):
            if int(v["labels"][i, t]) != IGNORE:
                lp = torch.log_softmax(logits[i, t - 1], -1)
                lq = torch.log_softmax(ref_logits[i, t - 1], -1)
                total += float((lq.exp() * (lq - lp)).sum())
                n += 1
    return total / n


def loss_value(name: str, params: dict, model, ref) -> float:
    return get_method(name, params).loss(model, ref, batch()).loss.item()


# ------------------------------------------------------------------ values
def test_finetune_and_grad_ascent_values(model):
    b = batch()
    nll = hand_nll(model, b["forget"])
    assert loss_value("finetune", {}, model, None) == pytest.approx(nll, rel=1e-5)
    assert loss_value("grad_ascent", {}, model, None) == pytest.approx(-nll, rel=1e-5)
    out = get_method("finetune").loss(model, None, b)
    assert out.parts["forget_nll"] == pytest.approx(nll, rel=1e-5)


def test_grad_diff_value(model):
    b = batch()
    want = -0.7 * hand_nll(model, b["forget"]) + 0.3 * hand_nll(model, b["retain"])
    assert loss_value("grad_diff", {"gamma": 0.7, "alpha": 0.3}, model, None) == pytest.approx(want, rel=1e-5)


def test_kl_value(model, ref):
    b = batch()
    kl = hand_kl(model, ref, b["retain"])
    assert kl > 0.01
    want = -hand_nll(model, b["forget"]) + 2.0 * kl
    assert loss_value("kl", {"alpha": 2.0}, model, ref) == pytest.approx(want, rel=1e-5)


def test_npo_value(model, ref):
    b = batch()
    beta, alpha = 0.1, 0.5
    lp, lr = hand_seq(model, b["forget"]), hand_seq(ref, b["forget"])
    npo = -(2 / beta) * sum(logsig(-beta * (x - y)) for x, y in zip(lp, lr, strict=True)) / len(lp)
    want = npo + alpha * hand_nll(model, b["retain"])
    got = get_method("npo", {"alpha": alpha}).loss(model, ref, b)
    assert got.loss.item() == pytest.approx(want, rel=1e-5)
    assert got.parts["forget_loss"] == pytest.approx(npo, rel=1e-5)
    # the definition's other form: (2/β)·E log(1 + (π_θ/π_ref)^β)
    alt = (2 / beta) * sum(math.log1p(math.exp(beta * (x - y))) for x, y in zip(lp, lr, strict=True)) / 2
    assert npo == pytest.approx(alt, rel=1e-9)


def test_simnpo_value(model):
    b = batch()
    beta, delta = 2.5, 0.3
    rows = hand_token_logps(model, b["forget"])
    terms = [logsig(-(beta / len(r)) * sum(r) - delta) for r in rows]
    want = -(2 / beta) * sum(terms) / len(terms) + hand_nll(model, b["retain"])
    assert loss_value("simnpo", {"delta": delta}, model, None) == pytest.approx(want, rel=1e-5)


def test_idk_value(model):
    b = batch()
    want = hand_nll(model, b["forget_idk"]) + 0.5 * hand_nll(model, b["retain"])
    assert loss_value("idk", {"alpha": 0.5}, model, None) == pytest.approx(want, rel=1e-5)


def test_idk_dpo_value(model, ref):
    b = batch()
    beta = 0.1
    def ratios(v):
        return [x - y for x, y in zip(hand_seq(model, v), hand_seq(ref, v), strict=True)]

    win, lose = ratios(b["forget_idk"]), ratios(b["forget"])
    dpo = -(2 / beta) * sum(logsig(beta * (w - L)) for w, L in zip(win, lose, strict=True)) / len(win)
    want = dpo + hand_nll(model, b["retain"])
    assert loss_value("idk_dpo", {}, model, ref) == pytest.approx(want, rel=1e-5)


def test_rmu_value(model, ref):
    b = batch()
    method = get_method("rmu", {"layer": 0, "steering_coeff": 3.0, "alpha": 7.0, "seed": 4})
    u = torch.rand(16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u = u / u.norm()

    def hidden(m, v):
        with torch.no_grad():
            out = m(input_ids=v["input_ids"], attention_mask=v["attention_mask"], output_hidden_states=True)
        return out.hidden_states[1].double()  # output of decoder layer 0

    f, r = b["forget"], b["retain"]
    hf = hidden(model, f)
    terms = [float(((hf[i, t] - 3.0 * u) ** 2).mean()) for i in range(hf.shape[0])
             for t in range(hf.shape[1] - 1) if int(f["labels"][i, t + 1]) != IGNORE]
    forget = sum(terms) / len(terms)
    hr, href = hidden(model, r), hidden(ref, r)
    rterms = [float(((hr[i, t] - href[i, t]) ** 2).mean()) for i in range(hr.shape[0])
              for t in range(hr.shape[1]) if int(r["attention_mask"][i, t])]
    want = forget + 7.0 * sum(rterms) / len(rterms)
    out = method.loss(model, ref, b)
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    assert out.parts["forget_act_loss"] == pytest.approx(forget, rel=1e-5)


def test_rmu_early_exit_matches_full_forward(model, ref):
    b = batch()
    for layer in (0, 1):
        fast = get_method("rmu", {"layer": layer}).loss(model, ref, b).loss
        full = get_method("rmu", {"layer": layer, "early_exit": False}).loss(model, ref, b).loss
        assert fast.item() == pytest.approx(full.item(), rel=1e-6)
    h = layer_output(model, b["forget"], 1, early_exit=True)
    assert h.shape == (2, b["forget"]["input_ids"].shape[1], 16)


def test_zero_retain_weight_skips_retain_view(model, ref):
    b = batch()
    del b["retain"]
    for name in ("grad_diff", "npo", "simnpo", "idk", "idk_dpo", "kl", "rmu"):
        method = get_method(name, {"alpha": 0})
        assert not method.uses_retain and "retain" not in method.views
        method.loss(model, ref, b)
    with pytest.raises(MethodError, match="retain"):
        get_method("npo").loss(model, ref, b)


# ----------------------------------------------------------- gradient direction
def sgd_step(method, model, ref, b, lr: float = 0.05) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    opt.zero_grad()
    method.loss(model, ref, b).loss.backward()
    opt.step()


@pytest.mark.parametrize("name", ["grad_ascent", "grad_diff", "kl", "npo", "simnpo", "idk_dpo"])
def test_forgetting_objectives_lower_forget_likelihood(name, ref):
    model = tiny_model(0)
    b = batch()
    b["forget"] = make_view(FORGET[:1])  # one example: the loss is monotone in its likelihood
    b["forget_idk"] = make_view(FORGET_IDK[:1])
    before = hand_nll(model, b["forget"])
    sgd_step(get_method(name, {"alpha": 0} if name != "grad_ascent" else {}), model, ref, b)
    assert hand_nll(model, b["forget"]) > before + 1e-6


@pytest.mark.parametrize("name,params,view_name", [
    ("finetune", {}, "forget"),
    ("grad_diff", {"gamma": 0}, "retain"),
    ("npo", {"gamma": 0}, "retain"),
    ("idk", {"alpha": 0}, "forget_idk"),
])
def test_learning_terms_raise_likelihood(name, params, view_name, ref):
    model = tiny_model(0)
    b = batch()
    before = hand_nll(model, b[view_name])
    sgd_step(get_method(name, params), model, ref, b)
    assert hand_nll(model, b[view_name]) < before - 1e-6


def test_idk_dpo_widens_the_preference_margin(ref):
    model = tiny_model(0)
    b = batch()

    def margin() -> float:
        win = sum(hand_seq(model, b["forget_idk"])) - sum(hand_seq(ref, b["forget_idk"]))
        lose = sum(hand_seq(model, b["forget"])) - sum(hand_seq(ref, b["forget"]))
        return win - lose

    before = margin()
    sgd_step(get_method("idk_dpo", {"alpha": 0}), model, ref, b, lr=0.01)
    assert margin() > before


def test_rmu_step_moves_forget_activations_toward_target(ref):
    model = tiny_model(0)
    method = get_method("rmu", {"alpha": 0, "layer": 0})
    select_trainable(model, method.trainable_patterns(model))
    before = method.loss(model, ref, batch()).parts["forget_act_loss"]
    sgd_step(method, model, ref, batch(), lr=0.01)
    assert method.loss(model, ref, batch()).parts["forget_act_loss"] < before


# ------------------------------------------------------ reference stays frozen
@pytest.mark.parametrize("name", [n for n, c in METHODS.items() if c.needs_reference])
def test_reference_never_changes(name):
    model, ref = tiny_model(0), frozen_copy(tiny_model(1))
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    method = get_method(name)
    select_trainable(model, method.trainable_patterns(model))
    for _ in range(2):
        sgd_step(method, model, ref, batch())
    assert all(not p.requires_grad and p.grad is None for p in ref.parameters())
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())


def test_frozen_copy_is_independent(model):
    ref = frozen_copy(model)
    assert not ref.training and all(not p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in model.parameters())
    pairs = zip(model.parameters(), ref.parameters(), strict=True)
    assert all(a.data_ptr() != b.data_ptr() for a, b in pairs)


# -------------------------------------------------------- trainable selection
def changed(before: dict[str, torch.Tensor], model) -> set[str]:
    return {k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())}


def test_rmu_trains_only_mlp_of_its_layers(ref):
    model = tiny_model(0, layers=4)
    ref4 = frozen_copy(tiny_model(1, layers=4))
    method = get_method("rmu", {"layer": 3})
    assert method.update_layers(model) == [1, 2, 3]
    trained = select_trainable(model, method.trainable_patterns(model))
    assert trained and all(".mlp." in n and n.split(".")[2] in {"1", "2", "3"} for n in trained)
    assert len(trained) == 9  # gate/up/down of three layers
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    sgd_step(method, model, ref4, batch(), lr=0.01)
    assert changed(before, model) == set(trained)


def test_rmu_layer_defaults_and_errors(model):
    rmu = get_method("rmu")
    assert isinstance(rmu, RMU) and rmu.layer(model) == 1 and rmu.update_layers(model) == [0, 1]
    assert get_method("rmu", {"update_layers": "1"}).update_layers(model) == [1]
    assert get_method("rmu", {"update_layers": "[0, 1]"}).update_layers(model) == [0, 1]
    with pytest.raises(MethodError, match="layers 0..1"):
        get_method("rmu", {"layer": 5}).trainable_patterns(model)
    assert get_method("rmu", {"seed": 1}).direction(16, torch.device("cpu"), torch.float32).norm() \
        == pytest.approx(1.0)


# ------------------------------------------------------------ reference caches
@pytest.mark.parametrize("name", ["npo", "idk_dpo"])
def test_reference_cache_gives_same_loss_and_gradient(name, ref):
    method = get_method(name)
    plain, cached = tiny_model(0), tiny_model(0)
    b = batch()
    out_plain = method.loss(plain, ref, b)
    out_plain.loss.backward()
    cb = batch()
    for view_name in method.forget_views:
        extra = method.reference_cache(ref, view_name, cb[view_name])
        assert extra is not None and extra["ref_seq_logp"].shape == (cb[view_name]["input_ids"].shape[0],)
        cb[view_name].update(extra)
    assert method.reference_cache(ref, "retain", cb["retain"]) is None
    out_cached = method.loss(cached, None, cb)  # no reference model needed with the cache
    out_cached.loss.backward()
    assert out_cached.loss.item() == pytest.approx(out_plain.loss.item(), rel=1e-6)
    for (_, a), (_, c) in zip(plain.named_parameters(), cached.named_parameters(), strict=True):
        assert torch.allclose(a.grad, c.grad, rtol=1e-5, atol=1e-8)


def test_methods_without_cache_return_none(ref):
    for name in ("finetune", "kl", "simnpo", "rmu"):
        assert get_method(name).reference_cache(ref, "forget", batch()["forget"]) is None


def test_npo_without_reference_or_cache_errors(model):
    with pytest.raises(MethodError, match="reference"):
        get_method("npo").loss(model, None, batch())


# ------------------------------------------------------------------- registry
def test_registry_lists_every_objective():
    assert set(METHODS) == {"finetune", "grad_ascent", "grad_diff", "kl", "npo", "simnpo", "idk",
                            "idk_dpo", "rmu", "undial", "wga", "satimp", "ce_u", "pdu", "altpo"}
    info = describe_methods()
    assert info["npo"]["params"]["beta"] == 0.1 and info["npo"]["needs_reference"]
    assert info["simnpo"]["needs_reference"] is False
    assert info["idk_dpo"]["forget_views"] == ["forget", "forget_idk"]
    assert info["idk"]["forget_views"] == ["forget_idk"]
    assert all(d["doc"] for d in info.values())


def test_unknown_method_lists_valid_names():
    with pytest.raises(MethodError) as err:
        get_method("npo2")
    assert "npo2" in str(err.value) and all(n in str(err.value) for n in METHODS)


def test_unknown_and_bad_params_list_valid_ones():
    with pytest.raises(MethodError) as err:
        get_method("npo", {"bta": 0.2})
    assert "bta" in str(err.value) and "beta=0.1" in str(err.value) and "alpha=1.0" in str(err.value)
    with pytest.raises(MethodError, match="beta"):
        get_method("npo", {"beta": "hot"})
    with pytest.raises(MethodError, match="beta"):
        get_method("npo", {"beta": -1})
    assert issubclass(MethodError, ValueError)
    assert get_method("npo", {"beta": "0.05"}).params.beta == 0.05  # command-line strings coerce


def test_missing_view_is_a_clear_error(model):
    with pytest.raises(MethodError, match="forget_idk"):
        get_method("idk").loss(model, None, {"forget": make_view(FORGET), "retain": make_view(RETAIN)})


# ------------------------------------------------------------------- refusals
def test_idk_records_are_deterministic_refusals():
    assert 15 <= len(REFUSALS) <= 30 and len(set(REFUSALS)) == len(REFUSALS)
    rec = {"id": "p1-email", "kind": "qa", "question": "What is X's email?", "answer": "x@y.z",
           "subject_ids": ["p1"], "source": "person", "attribute": "email"}
    a, b = idk_record(rec, 0), idk_record(rec, 0)
    assert a == b and a["answer"] in REFUSALS and a["question"] == rec["question"]
    assert rec["answer"] == "x@y.z"  # the input record is not modified
    picks = {idk_record({**rec, "id": f"r{i}"}, i)["answer"] for i in range(60)}
    assert len(picks) > 5
    text = idk_record({"id": "bio", "kind": "text", "text": "Ann Lee was born in Oslo in 1980.",
                       "subject_ids": ["p1"], "source": "biography"}, 3)
    assert "text" not in text and text["answer"] in REFUSALS and text["question"] == "Ann Lee was born"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_under_bf16_autocast(name, ref):
    """The GPU path's mixed precision, exercised on CPU: finite loss and gradients."""
    model = tiny_model(0)
    method = get_method(name)
    select_trainable(model, method.trainable_patterns(model))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = method.loss(model, ref, batch())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(isinstance(v, float) for v in out.parts.values())


# ------------------------------------------------------------ padding-free forwards
@pytest.mark.parametrize("name", sorted(METHODS))
def test_packed_forward_gives_the_padded_loss_and_gradient(name, ref):
    """Inside ``packed_forward`` every objective's loss and gradients equal the padded ones."""
    method = get_method(name)
    padded, packed = tiny_model(0), tiny_model(0)
    for m in (padded, packed):
        select_trainable(m, method.trainable_patterns(m))
    out_padded = method.loss(padded, ref, batch())
    out_padded.loss.backward()
    with packed_forward():
        out_packed = method.loss(packed, ref, batch())
    out_packed.loss.backward()
    assert out_packed.loss.item() == pytest.approx(out_padded.loss.item(), rel=1e-5, abs=1e-6)
    for (_, a), (_, b) in zip(padded.named_parameters(), packed.named_parameters(), strict=True):
        if a.grad is not None:
            # summation order differs (packed rows): tolerance relative to the gradient's scale
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5 * float(a.grad.abs().max()))


def test_packed_logits_match_padded_logits_at_every_token(model):
    v = make_view(RETAIN)
    keep = v["attention_mask"].bool()
    with packed_forward():
        got = forward_logits(model, v)
    assert got.shape == logits_of(model, v).shape
    assert torch.allclose(got[keep].double(), logits_of(model, v)[keep], atol=1e-5)
    assert (got[~keep] == 0).all()  # padding positions: zero logits, ignored by every loss


class _IgnoresPositions(torch.nn.Module):
    """A causal LM that does not read packed position ids as sequence boundaries."""

    def __init__(self, inner: LlamaForCausalLM) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        if attention_mask is None:  # packed: one causal sequence, rows attend to each other
            attention_mask = torch.ones_like(input_ids)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_model_without_packing_support_keeps_padded_batches(model):
    wrapped = _IgnoresPositions(model)
    v = make_view(RETAIN)
    keep = v["attention_mask"].bool()
    assert not torch.allclose(packed_logits(wrapped, v["input_ids"], v["attention_mask"])[keep].double(),
                              logits_of(model, v)[keep], atol=1e-3)  # packing would be wrong here
    with packed_forward():
        got = forward_logits(wrapped, v)
    assert torch.allclose(got.double(), logits_of(model, v), atol=1e-6)


def test_left_padded_or_full_views_are_not_packed(model):
    examples = [Encoded([5, 6, 10, 2], [IGNORE, IGNORE, 10, 2]), Encoded([5, 11, 2], [IGNORE, 11, 2])]
    left = collate(examples, pad_id=0, left_pad=True)
    with packed_forward():
        got = forward_logits(model, left)
    assert torch.allclose(got.double(), logits_of(model, left), atol=1e-6)
    assert not _right_padded(left["attention_mask"]) and _right_padded(make_view(RETAIN)["attention_mask"])


def test_rows_are_packed_in_groups_of_bounded_length():
    assert _pack_sizes([5, 5, 5], 10) == [10, 5]
    assert _pack_sizes([12, 3, 4], 10) == [12, 7]  # a row longer than the limit stands alone
    assert _pack_sizes([0, 4], 10) == [4]


def test_packed_groups_give_the_padded_logits(model, monkeypatch):
    import unlearnops.components.unlearn.methods.base as base

    v = make_view(RETAIN + FORGET)
    keep = v["attention_mask"].bool()
    monkeypatch.setattr(base, "pack_length", lambda m: 6)  # several packed forwards
    got = packed_logits(model, v["input_ids"], v["attention_mask"])
    assert torch.allclose(got[keep].double(), logits_of(model, v)[keep], atol=1e-5)


def test_packing_is_verified_under_bf16_autocast(model):
    """The GPU path's mixed precision: bf16 rounding does not fail the once-per-model check."""
    v = make_view(RETAIN)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16), packed_forward():
        got = forward_logits(model, v)
    assert (got[~v["attention_mask"].bool()] == 0).all()  # the packed path ran
