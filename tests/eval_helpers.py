"""Throw-away tiny models and a synthetic DataScope for the evaluation tests (no downloads)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Dakar", "Hanoi", "Riga"]
PETS = ["cat", "dog", "owl", "fox", "eel", "yak"]
JOBS = ["baker", "pilot", "nurse", "judge", "miner", "tailor"]
GENERAL = [("What is the capital of Peru?", "Lima"), ("What is the capital of Norway?", "Oslo"),
           ("What is the capital of Egypt?", "Cairo"), ("What is the capital of Ecuador?", "Quito"),
           ("What is the capital of Senegal?", "Dakar"), ("What is the capital of Latvia?", "Riga")]


def _person_records(i: int) -> list[dict[str, Any]]:
    name = f"Person{i}"
    attrs = [
        ("city", CITIES[i % len(CITIES)], CITIES, "In which city does {n} live?", "Where is {n} from?"),
        ("pet", PETS[i % len(PETS)], PETS, "What pet does {n} have?", "Which animal does {n} keep?"),
        ("job", JOBS[(i * 5) % len(JOBS)], JOBS, "What is the job of {n}?", "What does {n} do for work?"),
    ]
    out = []
    for attr, answer, domain, q, pq in attrs:
        wrong = [d for d in domain if d != answer][:4]
        out.append({"id": f"p{i}-{attr}", "kind": "qa", "question": q.format(n=name), "answer": answer,
                    "subject_ids": [f"s{i}"], "source": "person", "attribute": attr,
                    "paraphrased_question": pq.format(n=name), "perturbed_answers": wrong})
    return out


def scope_sets() -> dict[str, list[dict[str, Any]]]:
    forget = [r for i in range(0, 4) for r in _person_records(i)]
    forget.append({"id": "bio0", "kind": "text", "text": "Person0 lives in Paris and keeps a cat .",
                   "subject_ids": ["s0"], "source": "biography"})
    general = [{"id": f"g{k}", "kind": "qa", "question": q, "answer": a, "subject_ids": [],
                "source": "general", "attribute": None, "paraphrased_question": q.replace("What is", "Name"),
                "perturbed_answers": [c for c in CITIES if c != a][:4]} for k, (q, a) in enumerate(GENERAL)]
    retain = [r for i in range(4, 6) for r in _person_records(i)] + general[::2]
    retain_eval = [r for i in range(6, 8) for r in _person_records(i)] + general[1::2]
    neighbor = [r for i in range(8, 10) for r in _person_records(i)]
    holdout = [r for i in range(10, 14) for r in _person_records(i)]
    paraphrase = [{**r, "question": r["paraphrased_question"]} for r in forget if r["kind"] == "qa"]
    return {"forget": forget, "retain": retain, "retain_eval": retain_eval, "neighbor": neighbor,
            "holdout": holdout, "paraphrase": paraphrase}


def write_scope(folder: Path) -> Path:
    """A DataScope folder (the sets, retain-eval included, + manifest.json) of synthetic people."""
    from unlearnops.types import ScopeManifest, SetInfo

    folder.mkdir(parents=True, exist_ok=True)
    infos = {}
    for name, records in scope_sets().items():
        text = "".join(json.dumps(r) + "\n" for r in records)
        (folder / f"{name}.jsonl").write_text(text)
        infos[name] = SetInfo(file=f"{name}.jsonl", count=len(records),
                              sha256=hashlib.sha256(text.encode()).hexdigest())
    manifest = ScopeManifest(request_ids=["req-test"], selector_hashes={}, sets=infos, source=[],
                             corpus_uri=str(folder / "no-corpus"), seed=0)
    (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return folder


def all_texts() -> list[str]:
    from unlearnops import textformat

    texts = []
    for records in scope_sets().values():
        for r in records:
            variants = [r] if r["kind"] == "text" else [r, {**r, "question": r["paraphrased_question"]}]
            for v in variants:
                p, t = textformat.prompt_and_target(v)
                texts.append(p + t)
            texts += [str(a) for a in r.get("perturbed_answers", [])]
    texts += ["Sure, here is the answer:",
              "You are a helpful assistant who always answers completely and truthfully."]
    return texts


def word_tokenizer() -> Any:
    """A WordLevel tokenizer over the synthetic vocabulary (whitespace + punctuation split)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2}
    for text in all_texts():
        for word, _span in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="</s>")


def tiny_model(tokenizer: Any, seed: int, hidden: int = 16) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


def train_on(model: Any, tokenizer: Any, records: list[dict[str, Any]], steps: int, lr: float = 1e-2) -> Any:
    """Memorise QA records a little (answer NLL, full batch)."""
    import torch

    from unlearnops import textformat

    torch.manual_seed(0)
    enc = [textformat.encode_record(tokenizer, r) for r in records]
    batch = textformat.collate(enc, tokenizer.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        nll, n = textformat.sequence_nll(out.logits, batch["labels"])
        loss = nll.sum() / n.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def write_models(folder: Path, train_steps: int = 60) -> dict[str, Path]:
    """base (trained on forget + retain + neighbor), reference (without forget), candidate (the base
    trained a few steps on wrong forget answers — a crude unlearned model with a training.json)."""
    import torch

    torch.set_num_threads(1)
    from unlearnops import modelio

    sets = scope_sets()
    tok = word_tokenizer()
    qa = [r for name in ("retain", "retain_eval", "neighbor") for r in sets[name] if r["kind"] == "qa"]
    forget = [r for r in sets["forget"] if r["kind"] == "qa"]
    base = train_on(tiny_model(tok, 0, 32), tok, forget + qa, train_steps)
    ref = train_on(tiny_model(tok, 0, 32), tok, qa, train_steps)
    scrambled = [{**r, "answer": r["perturbed_answers"][0]} for r in forget]
    cand = train_on(train_on(tiny_model(tok, 0, 32), tok, forget + qa, train_steps), tok,
                    scrambled + qa, 15, lr=5e-3)
    paths = {}
    for role, model in (("base", base), ("reference", ref), ("candidate", cand)):
        paths[role] = folder / role
        modelio.save_model(model, tok, str(paths[role]))
    training = {"method": "test", "params": {}, "seed": 0, "world_size": 1, "steps": 15,
                "tokens": 4000, "worker_seconds": 2.0, "wall_seconds": 2.0, "peak_memory_mb": 10,
                "versions": {}, "curve": [], "probes": [], "parent": None,
                "base_model_uri": str(paths["base"]), "scope_uri": "", "scope_sha256": "",
                "stopped_early": False}
    (paths["candidate"] / "training.json").write_text(json.dumps(training))
    return paths
