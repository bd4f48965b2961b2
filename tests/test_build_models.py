"""The benchmark's models: the pieces (fast) and ``unlearnops benchmark build-models`` (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from unlearnops.components.unlearn import benchmark_models as bm

from unlearnops.types import ForgetRequest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cli = str(Path(sys.executable).parent / "unlearnops")
    return subprocess.run([cli, "benchmark", "build-models", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=900)


def test_tokenizer_round_trips_through_save_pretrained(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    records = [{"id": "a", "kind": "qa", "question": "Where was Ada born?", "answer": "Lyon"},
               {"id": "b", "kind": "text", "text": "Ada works as a chemist."}]
    tok = bm.train_tokenizer(records, vocab_size=300)
    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "Question: Where was Ada born?\nAnswer: Lyon"
    assert again.decode(again(text)["input_ids"]) == text
    assert again.eos_token == "</s>" and again.pad_token == "<pad>"


def test_forget_split_is_seeded_and_model_shapes() -> None:
    people = [{"subject_id": f"p{i:04d}", "name": f"P {i}"} for i in range(40)]
    a, b = bm.forget_split(people, 0.1, seed=0), bm.forget_split(people, 0.1, seed=0)
    assert a == b and len(a) == 4 and a != bm.forget_split(people, 0.1, seed=1)
    with pytest.raises(ValueError, match="forget_share"):
        bm.forget_split(people, 1.5, seed=0)
    tok = bm.train_tokenizer([{"id": "a", "kind": "text", "text": "hello world"}], vocab_size=300)
    model = bm.new_model(tok, "tiny", seed=0)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert bm.exact_accuracy(model, tok, [{"id": "q", "kind": "qa", "question": "x?", "answer": "y"}]) == 0.0
    assert set(bm.UNLEARN_DEFAULTS["tiny"]) >= {"npo", "grad_diff", "rmu"}


@pytest.mark.slow
def test_tiny_models_memorise_and_reference_does_not_know_the_forget_split(tiny_models: Path) -> None:
    build = json.loads((tiny_models / "build.json").read_text())
    assert build["base"]["accuracy"] >= 0.95 and build["reference"]["accuracy"] >= 0.95
    assert build["base"]["forget_accuracy"] >= 0.95 and build["reference"]["forget_accuracy"] <= 0.5
    request = ForgetRequest.model_validate_json((tiny_models / "forget-request.json").read_text())
    assert request.kind == "subject" and sorted(request.selectors.subject_ids) == build["forget_subject_ids"]
    assert len(request.selectors.subject_ids) == 4 and len(request.selectors.names) == 4


@pytest.mark.slow
def test_build_models_cli_as_a_user_would(tmp_path: Path) -> None:
    from unlearnops.data.generate import generate_benchmark

    generate_benchmark(str(tmp_path / "corpus"), people=12, holdout=2, seed=3, shards=2)
    bad = run_cli("--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "m"), "--preset", "huge")
    assert bad.returncode == 2 and "tiny" in bad.stderr
    bad = run_cli("--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "m"))
    assert bad.returncode == 2 and "no training shards" in bad.stderr
    done = run_cli("--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "m"), "--forget-share", "0.25")
    assert done.returncode == 0, done.stderr[-3000:]
    build = json.loads(done.stdout)
    assert build["base"]["reached_target"] and len(build["forget_subject_ids"]) == 3
    for sub in ("base", "reference"):
        assert (tmp_path / "m" / sub / "model.safetensors").is_file()
        assert (tmp_path / "m" / sub / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "m" / "build.json").read_text())["preset"] == "tiny"
