"""Evaluation metrics: hand-computed values on tiny inputs, and independent computations
(scipy, sklearn, unbatched forward passes) on a real tiny random Llama."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import roc_auc_score
from unlearnops.components.evaluate import metrics as M
from unlearnops.components.evaluate.evaluate import build_contexts, load_scope
from unlearnops.components.evaluate.metrics import forget, privacy, robustness, utility
from unlearnops.components.evaluate.scoring import ModelScorer

from tests.eval_helpers import tiny_model, word_tokenizer, write_scope
from unlearnops import textformat

torch.set_num_threads(1)


# ------------------------------------------------------------------ pure functions, by hand
def test_answer_prob() -> None:
    assert np.allclose(forget.answer_prob(np.array([0.0, math.log(2)])), [1.0, 0.5])


def test_rouge_l_recall() -> None:
    # LCS("the cat sat", "cat sat on mat") = "cat sat": recall 2/4
    got = forget.rouge_l_recall(["the cat sat", "", "Paris"], ["cat sat on mat", "Paris", "Paris"])
    assert np.allclose(got, [0.5, 0.0, 1.0])


def test_truth_ratio_and_aggregates() -> None:
    r = forget.truth_ratio(np.array([1.0]), [np.array([2.0, 4.0])])
    assert r[0] == pytest.approx(math.exp(1.0 - 3.0))
    assert forget.truth_ratio_forget_score(np.array([2.0, 0.5])) == pytest.approx(0.5)
    assert utility.truth_ratio_utility_score(np.array([0.25, 2.0])) == pytest.approx(0.375)
    assert forget.truth_ratio_forget_score(np.array([])) is None


def test_extraction_strength_and_exact_memorization() -> None:
    T, F = True, False
    assert forget.extraction_strength(np.array([T, T, T, T])) == 1.0
    assert forget.extraction_strength(np.array([F, T, T, T])) == 0.75
    assert forget.extraction_strength(np.array([T, F, T, T])) == 0.5
    assert forget.extraction_strength(np.array([T, T, T, F])) == 0.0
    assert forget.exact_memorization(np.array([T, F, T, T])) == 0.75


def test_forget_quality_by_hand() -> None:
    # two fully separated samples of 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert forget.forget_quality(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])) == pytest.approx(0.1)
    assert forget.forget_quality(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(1.0)


def test_utility_helpers() -> None:
    assert utility.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert utility.harmonic_mean([1.0, 0.0]) == 0.0
    assert utility.harmonic_mean([]) is None
    assert utility.perplexity([2.0, 4.0], [2, 2]) == pytest.approx(math.exp(1.5))
    assert utility.ratio(0.45, 0.9) == pytest.approx(0.5) and utility.ratio(1.0, 0.0) is None


@pytest.mark.parametrize(("text", "bad"), [("", True), ("  ", True), ("a a a a", True),
                                           ("x y z x y z x y z", True), ("Paris", False),
                                           ("the cat the cat", False)])
def test_degenerate(text: str, bad: bool) -> None:
    assert utility.is_degenerate(text) is bad


def test_mia_scores_by_hand() -> None:
    logp = np.array([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert privacy.loss_score(np.array([-1.0, -3.0])) == -2.0
    entropy = len(zlib.compress(b"abc"))
    assert privacy.zlib_score(np.array([-1.0, -3.0]), "abc") == pytest.approx(-2.0 / entropy)
    assert privacy.min_k_score(logp) == pytest.approx(-4.5)  # lowest 40% of 5 = 2 tokens
    z = privacy.min_k_pp_score(logp, np.full(5, -1.0), np.full(5, 2.0))  # z = 0, -.5, -1, -1.5, -2
    assert z == pytest.approx(-1.75)
    assert privacy.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert privacy.auc([1.0, 3.0], [2.0]) == 0.5
    # MUSE: holdout-positive AUC 1 − 0.75 = 0.25 against 0.5 -> (0.25 − 0.5)/0.5 × 100 = −50
    assert privacy.privleak(0.75) == pytest.approx(-50.0)
    assert privacy.privleak(1.0) == pytest.approx(-100.0)  # a memorising model
    assert privacy.privleak(0.6, 0.6) == 0.0


def test_quantize_weight_by_hand() -> None:
    w = torch.tensor([[1.4, -0.45, 0.7, 0.1]])
    sym = robustness.quantize_weight(w, bits=4, group=2, symmetric=True)
    # group [1.4, -.45]: s = 1.4/7 = .2, -.45/s = -2.25 -> -2 -> -.4; group [.7, .1]: s = .1, exact
    assert torch.allclose(sym, torch.tensor([[1.4, -0.4, 0.7, 0.1]]), atol=1e-6)
    asym = robustness.quantize_weight(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), bits=2, group=4)
    assert torch.allclose(asym, torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    rnd = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))
    q = robustness.quantize_weight(rnd, bits=4, group=64)
    for row in q.reshape(-1, 64):
        assert len(torch.unique(row)) <= 16
    assert (q - rnd).abs().max() < (rnd.max() - rnd.min()) / 15


def test_recovery_and_split() -> None:
    assert robustness.recovery(0.5, 0.1, 0.9)[0] == pytest.approx(0.5)
    value, note = robustness.recovery(0.5, 0.4, 0.4)
    assert value == 0.0 and note
    train, held = robustness.split_half(9, seed=0)
    assert sorted(train + held) == list(range(9)) and len(train) == 4
    assert robustness.split_half(9, seed=0) == (train, held)


def test_registry_declares_dependencies() -> None:
    names = M.reported_metrics()
    assert {M.REGISTRY[n].facet for n in names} == {"forget", "utility", "privacy", "robustness", "cost"}
    assert "forget.truth_ratio.values" in M.REGISTRY["forget.forget_quality"].depends
    assert M.REGISTRY["forget.forget_quality"].needs_reference
    assert "privacy.mia_auc.min_k" in M.REGISTRY["privacy.privleak"].depends
    passes = M.plan(["forget.prob", "forget.exact_memorization", "privacy.mia_auc", "forget.forget_quality"])
    assert len(passes) == len(set(passes))
    assert M.Pass("tf", "forget") in passes and M.Pass("tf", "forget", "perturbed") in passes


# ------------------------------------------------------------------ a real tiny model, independently
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tok = word_tokenizer()
    data, _ = load_scope(str(write_scope(tmp_path_factory.mktemp("scope"))))
    models = {role: tiny_model(tok, seed) for role, seed in (("candidate", 1), ("base", 2), ("reference", 3))}

    class Loaded:
        def __init__(self, role: str) -> None:
            self.role, self.path, self.training = role, None, None
            self.scorer = ModelScorer(models[role], tok, "cpu", batch_size=5, name=role)

    contexts = build_contexts({r: Loaded(r) for r in models}, data)  # type: ignore[arg-type]
    return {"tok": tok, "data": data, "models": models, "ctx": contexts}


def _nll_mean(model, tok, prompt: str, target: str) -> float:
    """Independent: one unpadded forward pass, plain log-softmax, mean over answer + EOS tokens."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    t_ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + t_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    scored = [(len(p_ids) + j, t) for j, t in enumerate(t_ids) if len(p_ids) + j > 0]  # 1st token: no context
    return -float(sum(logp[i - 1, t] for i, t in scored) / len(scored))


def test_teacher_forced_matches_unbatched(tiny: dict) -> None:
    ctx = tiny["ctx"]["candidate"]
    pairs = M.pairs_for(tiny["data"].sets["forget"], "main")
    tf = ctx.tf("forget")
    expect = [_nll_mean(tiny["models"]["candidate"], tiny["tok"], p, t) for p, t in pairs]
    assert np.allclose(tf.nll_mean, expect, atol=1e-5)


def _independent_truth_ratios(tiny: dict, role: str, set_name: str) -> np.ndarray:
    model, tok = tiny["models"][role], tiny["tok"]
    out = []
    for r in tiny["data"].qa(set_name):
        prompt = textformat.prompt_of(r["paraphrased_question"])
        true = _nll_mean(model, tok, prompt, " " + r["answer"])
        wrong = [_nll_mean(model, tok, prompt, " " + a) for a in r["perturbed_answers"]]
        out.append(math.exp(-float(np.mean(wrong))) / math.exp(-true))
    return np.array(out)


def test_truth_ratio_and_forget_quality_independent(tiny: dict) -> None:
    cand = tiny["ctx"]["candidate"]
    tr_c = _independent_truth_ratios(tiny, "candidate", "forget")
    tr_r = _independent_truth_ratios(tiny, "reference", "forget")
    assert np.allclose(cand.get("forget.truth_ratio.values"), tr_c, rtol=1e-4)
    assert cand.get("forget.truth_ratio") == pytest.approx(np.mean(np.minimum(tr_c, 1 / tr_c)), rel=1e-4)
    assert cand.get("forget.forget_quality") == pytest.approx(ks_2samp(tr_c, tr_r).pvalue, rel=1e-4)


def test_model_utility_independent(tiny: dict) -> None:
    ctx = tiny["ctx"]["base"]
    model, tok = tiny["models"]["base"], tiny["tok"]
    parts = []
    for set_name in ("retain_person", "retain_general"):
        qa = tiny["data"].qa(set_name)
        probs = [math.exp(-_nll_mean(model, tok, textformat.prompt_of(r["question"]), " " + r["answer"]))
                 for r in qa]
        gens = ctx.gen(set_name)
        rouge = forget.rouge_l_recall(gens, [r["answer"] for r in qa])
        tr = _independent_truth_ratios(tiny, "base", set_name)
        parts += [float(np.mean(probs)), float(np.mean(rouge)), float(np.mean(np.maximum(0, 1 - tr)))]
    positive = [p for p in parts if p > 0]
    expect = hmean(parts) if len(positive) == len(parts) else 0.0
    assert ctx.get("utility.model_utility") == pytest.approx(expect, rel=1e-4)


def test_mia_auc_independent(tiny: dict) -> None:
    ctx = tiny["ctx"]["candidate"]
    model, tok = tiny["models"]["candidate"], tiny["tok"]
    scores, labels = [], []
    for set_name, label in (("forget", 1), ("holdout", 0)):
        for r in tiny["data"].sets[set_name]:
            scores.append(-_nll_mean(model, tok, *textformat.prompt_and_target(r)))
            labels.append(label)
    assert ctx.get("privacy.mia_auc.loss") == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    ref_auc = tiny["ctx"]["reference"].get("privacy.mia_auc.min_k")
    mine = 1 - ctx.get("privacy.mia_auc.min_k")  # MUSE: holdout as the positive class
    assert ctx.get("privacy.privleak") == pytest.approx((mine - (1 - ref_auc)) / (1 - ref_auc) * 100)


def test_min_k_pp_stats_independent(tiny: dict) -> None:
    """μ and σ of log p(·) under the next-token distribution, from the same pass."""
    ctx, model, tok = tiny["ctx"]["base"], tiny["models"]["base"], tiny["tok"]
    r = tiny["data"].sets["holdout"][0]
    enc = textformat.encode_record(tok, r)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([enc.input_ids])).logits[0].double(), -1)
    pos = [i - 1 for i, lab in enumerate(enc.labels) if lab != textformat.IGNORE]
    mu = (logp.exp() * logp).sum(-1)[pos]
    sd = ((logp.exp() * logp.square()).sum(-1)[pos] - mu.square()).sqrt()
    tf = ctx.tf("holdout")
    assert np.allclose(tf.mu[0], mu.numpy(), atol=1e-4) and np.allclose(tf.sigma[0], sd.numpy(), atol=1e-4)


def test_batched_generation_matches_unbatched_greedy(tiny: dict) -> None:
    ctx, model, tok = tiny["ctx"]["reference"], tiny["models"]["reference"], tiny["tok"]
    gens = ctx.gen("neighbor")
    for r, got in zip(tiny["data"].qa("neighbor"), gens, strict=True):
        ids = tok(textformat.prompt_of(r["question"]), add_special_tokens=False)["input_ids"]
        new: list[int] = []
        for _ in range(len(tok(" " + r["answer"])["input_ids"]) + 5):
            with torch.no_grad():
                nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
        assert got == tok.decode(new, skip_special_tokens=True).strip()


def test_quantized_model_scores(tiny: dict) -> None:
    q = robustness.quantize_model(tiny["models"]["base"], bits=4, group=8)
    assert q is not tiny["models"]["base"]
    assert torch.equal(q.lm_head.weight, tiny["models"]["base"].lm_head.weight)
    layer = q.model.layers[0].self_attn.q_proj.weight
    assert len(torch.unique(layer.reshape(-1, 8)[0])) <= 16


def test_scope_loading_splits_retain(tmp_path: Path) -> None:
    data, manifest = load_scope(str(write_scope(tmp_path / "s")))
    assert all(r["source"] == "general" for r in data.sets["retain_general"])
    assert data.sets["retain_general"] and data.sets["retain_person"]
    assert len(manifest.sha256) == 64


# ------------------------------------------------------------------ MUSE metrics and attacks

def test_muse_metrics_independent(tiny: dict) -> None:
    ctx, model, tok = tiny["ctx"]["candidate"], tiny["models"]["candidate"], tiny["tok"]
    bio = [r for r in tiny["data"].sets["forget"] if r["kind"] == "text"]
    gens = ctx.gen("forget", "continue")
    assert len(gens) == len(bio) == 1
    prefix, cont = "Person0 lives in Paris", " and keeps a cat ."
    assert M.pairs_for(bio, "continue") == [(prefix, cont)]
    assert ctx.get("forget.verbmem") == pytest.approx(float(forget.rouge_l_f1(gens, [cont.strip()])[0]))
    assert ctx.get("forget.knowmem") == ctx.get("forget.rouge_l")
    # gradient-norm attack: −‖∇ mean answer NLL‖ per record, by hand for the first forget record
    r = tiny["data"].sets["forget"][0]
    prompt, target = textformat.prompt_and_target(r)
    enc = textformat.encode(tok, prompt, target)
    model.zero_grad()
    logits = model(input_ids=torch.tensor([enc.input_ids])).logits
    logp, mask = textformat.token_logprobs(logits, torch.tensor([enc.labels]))
    (-logp.sum() / mask.sum()).backward()
    norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None)))
    model.zero_grad()
    assert ctx.scorer.grad_norms([(prompt, target)])[0] == pytest.approx(norm, rel=1e-4)
    mean_logp = float(ctx.tf("forget").logp[0].mean())
    assert -_nll_mean(model, tok, prompt, target) == pytest.approx(mean_logp, abs=1e-5)
    auc = ctx.get("privacy.mia_auc.grad_norm")
    assert auc is not None and 0.0 <= auc <= 1.0
    # reference attack: per-record mean log-likelihood minus the reference model's
    ref = tiny["ctx"]["reference"]
    scores = {s: [privacy.loss_score(a) - privacy.loss_score(b)
                  for a, b in zip(ctx.tf(s).logp, ref.tf(s).logp, strict=True)]
              for s in ("forget", "holdout")}
    want = privacy.auc(scores["forget"], scores["holdout"])
    assert ctx.get("privacy.mia_auc.reference") == pytest.approx(want)
    assert ref.get("privacy.mia_auc.reference") is None
