"""Metric definitions as the community computes them (issue 10), each on hand-made numbers: the
prompt template carried with the model, TOFU's truth-ratio pairs, answer-token-only memorisation
and Min-K scores, MUSE's PrivLeak sign and denominator, and TOFU's 9-number model utility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer
from unlearnops.components.evaluate.metrics import forget, pairs_for, privacy, utility
from unlearnops.components.evaluate.scoring import TFResult

from tests.eval_helpers import word_tokenizer
from unlearnops import textformat

T, F = True, False
QA = {"id": "a", "kind": "qa", "question": "Where was Ada born?", "answer": "Westbrook",
      "paraphrased_question": "What is the birthplace of Ada?", "perturbed_answers": ["Rome", "Oslo"]}
TOFU_QA = {**QA, "paraphrased_answer": "Ada was born in Westbrook.",
           "perturbed_answer": ["Ada was born in Rome.", "Ada was born in Oslo.", "Ada was born in Lima."]}


# ------------------------------------------------------------------ (a) prompt template
def test_default_template_is_the_fixed_format() -> None:
    tok = word_tokenizer()
    assert textformat.template_of(tok) is textformat.DEFAULT
    assert textformat.prompt_and_target(QA) == ("Question: Where was Ada born?\nAnswer:", " Westbrook")
    enc = textformat.encode_record(tok, QA)
    plain = tok("Question: Where was Ada born?\nAnswer:", add_special_tokens=False)["input_ids"]
    assert enc.input_ids[:len(plain)] == plain  # no BOS


def test_tofu_template_travels_with_the_tokenizer(tmp_path: Path) -> None:
    tok = word_tokenizer()
    tok.add_special_tokens({"bos_token": "<s>"})
    textformat.set_template(tok, "tofu_llama2")
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    tpl = textformat.template_of(loaded)
    assert tpl.name == "tofu_llama2" and tpl.bos
    prompt, target = textformat.prompt_and_target(QA, template=tpl)
    assert (prompt, target) == ("[INST] Where was Ada born? [/INST]", "Westbrook")
    enc = textformat.encode_record(loaded, QA)
    assert enc.input_ids[0] == loaded.bos_token_id and enc.labels[0] == textformat.IGNORE
    assert pairs_for([QA], "main", tpl) == [(prompt, target)]
    with pytest.raises(ValueError, match="tofu_phi"):
        textformat.get_template("tofu")


# ------------------------------------------------------------------ (b) truth ratio pairs
def test_truth_ratio_pairs_follow_tofu() -> None:
    q = "Question: Where was Ada born?\nAnswer:"
    assert pairs_for([TOFU_QA], "para") == [(q, " Ada was born in Westbrook.")]
    assert pairs_for([TOFU_QA], "perturbed") == [(q, " Ada was born in Rome."), (q, " Ada was born in Oslo."),
                                                 (q, " Ada was born in Lima.")]
    # without TOFU's fields: the paraphrased question with the answer and eval/perturbed.jsonl answers
    pq = "Question: What is the birthplace of Ada?\nAnswer:"
    assert pairs_for([QA], "para") == [(pq, " Westbrook")]
    assert pairs_for([QA], "perturbed") == [(pq, " Rome"), (pq, " Oslo")]


# ------------------------------------------------------------------ (c) answer tokens only
def test_scores_drop_the_eos_position() -> None:
    # 3 answer tokens then EOS; the model gets every answer token right and misses EOS
    tf = TFResult([np.array([-0.1, -0.2, -0.3, -9.0])], [np.array([T, T, T, F])],
                  [np.array([-1.0, -1.0, -1.0, -1.0])], [np.array([1.0, 1.0, 1.0, 1.0])], eos=True)
    correct = tf.answer("correct")[0]
    assert forget.exact_memorization(correct) == 1.0          # 4 positions would give 0.75
    assert forget.extraction_strength(correct) == 1.0         # with EOS it would be 0.0
    assert privacy.min_k_score(tf.answer("logp")[0], k=0.4) == pytest.approx(-0.3)   # 1 of 3 tokens
    z = privacy.min_k_pp_score(tf.answer("logp")[0], tf.answer("mu")[0], tf.answer("sigma")[0], k=0.4)
    assert z == pytest.approx(0.7)                            # (−0.3 − (−1)) / 1
    assert tf.subset([0]).answer("logp")[0].size == 3
    assert TFResult([np.array([-1.0])], [np.array([T])], [np.array([0.0])], [np.array([1.0])]).answer(
        "logp")[0].size == 1  # no EOS appended (tokenizer without one): nothing dropped


class _Ctx:
    def __init__(self, values: dict, ref: dict | None = None) -> None:
        self.values, self.ref = values, ref

    def get(self, name: str):
        return self.values.get(name)

    def peer(self, role: str):
        return _Ctx(self.ref) if role == "reference" and self.ref is not None else None


# ------------------------------------------------------------------ (d) PrivLeak
def test_privleak_as_muse_defines_it() -> None:
    # member-positive AUC 0.9 → holdout-positive 0.1; reference 0.5 → (0.1 − 0.5) / 0.5 × 100
    assert privacy.privleak(0.9, 0.5) == pytest.approx(-80.0)
    assert privacy.privleak(1.0) == pytest.approx(-100.0)
    assert privacy.privleak(0.3, 0.4) == pytest.approx((0.7 - 0.6) / 0.6 * 100)
    assert privacy.privleak(0.5, 1.0) is None  # holdout-positive reference AUC 0: undefined
    # a reference AUC of exactly 0.0 is a value, not a missing one
    ctx = _Ctx({"privacy.mia_auc.min_k": 0.2}, {"privacy.mia_auc.min_k": 0.0})
    assert privacy.privacy_privleak(ctx) == pytest.approx((0.8 - 1.0) / 1.0 * 100)
    assert privacy.privacy_privleak(_Ctx({"privacy.mia_auc.min_k": 0.2})) == pytest.approx(60.0)


# ------------------------------------------------------------------ (e) model utility
def test_model_utility_is_tofus_harmonic_mean_of_nine() -> None:
    nine = [0.9, 0.6, 0.5, 0.8, 0.4, 0.7, 0.3, 0.6, 0.9]
    assert utility.harmonic_mean(nine) == pytest.approx(9 / sum(1 / v for v in nine))
    assert utility.utility_sets(["retain_person", "retain_general", "real_authors", "world_facts"]) == [
        "retain_person", "real_authors", "world_facts"]
    assert utility.utility_sets(["retain_person", "retain_general"]) == ["retain_person", "retain_general"]
    # probability with options on real authors / world facts: P(a) / (P(a) + Σ P(ã))
    p = utility.prob_with_options(np.array([-np.log(0.6)]), [np.array([-np.log(0.2), -np.log(0.1)])])
    assert p[0] == pytest.approx(0.6 / 0.9)


# ------------------------------------------------------------------ MUSE metrics, on a real tiny model
def test_continuation_split() -> None:
    from unlearnops.components.evaluate.metrics import continuation_split

    assert continuation_split({"text": "a b c d e"}) == ("a b", " c d e")
    assert continuation_split({"text": "xy", "prompt": "x", "continuation": "y"}) == ("x", "y")

