"""Unit tests of weight selection: regex trainable sets and LoRA apply/merge (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from unlearnops.components.unlearn.methods import MethodError, get_method
from unlearnops.components.unlearn.weights import (
    WeightSelectionError,
    apply_lora,
    merge_lora,
    select_trainable,
)

from unlearnops.textformat import IGNORE, Encoded, collate
from unlearnops.types import LoraSpec

torch.set_num_threads(1)


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def batch() -> dict[str, dict[str, torch.Tensor]]:
    examples = [Encoded([5, 6, 7, 10, 11, 2], [IGNORE] * 3 + [10, 11, 2]),
                Encoded([5, 8, 12, 2], [IGNORE] * 2 + [12, 2])]
    return {"forget": collate(examples, pad_id=0)}


def step(model, lr: float = 0.5) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    get_method("finetune").loss(model, None, batch()).loss.backward()
    opt.step()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_select_trainable_freezes_the_rest():
    model = tiny_model()
    before = snapshot(model)
    trained = select_trainable(model, [r"layers\.1\.mlp\.", r"lm_head"])
    assert trained == [n for n, _ in model.named_parameters() if "layers.1.mlp." in n or "lm_head" in n]
    assert len(trained) == 4
    step(model)
    moved = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert moved == set(trained)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trained)


def test_empty_patterns_train_everything():
    model = tiny_model()
    select_trainable(model, ["lm_head"])
    trained = select_trainable(model, [])
    assert trained == [n for n, _ in model.named_parameters()]
    assert all(p.requires_grad for p in model.parameters())


def test_nothing_matching_is_an_error_showing_names():
    model = tiny_model()
    with pytest.raises(WeightSelectionError) as err:
        select_trainable(model, [r"transformer\.h\.0"])
    assert "model.layers.0" in str(err.value) and isinstance(err.value, MethodError)
    with pytest.raises(WeightSelectionError, match="bad trainable pattern"):
        select_trainable(model, ["("])
    assert all(p.requires_grad for p in model.parameters())  # untouched after an error


def test_lora_apply_train_merge_changes_only_adapted_weights():
    model = tiny_model()
    before = snapshot(model)
    wrapped = apply_lora(model, LoraSpec(r=2, alpha=4, target_modules=["q_proj", "v_proj"]))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert select_trainable(wrapped, []) == trainable  # [] keeps peft's adapter selection
    for _ in range(2):  # B starts at zero: the second step moves the product B·A
        wrapped.zero_grad()
        step(wrapped)
    merged = merge_lora(wrapped)
    assert type(merged) is LlamaForCausalLM
    after = merged.state_dict()
    assert set(after) == set(before)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {f"model.layers.{i}.self_attn.{m}.weight" for i in range(2) for m in ("q_proj", "v_proj")}
    assert merge_lora(merged) is merged  # a plain model passes through


def test_lora_unknown_target_is_an_error():
    with pytest.raises(WeightSelectionError, match="query_key_value"):
        apply_lora(tiny_model(), LoraSpec(target_modules=["query_key_value"]))
