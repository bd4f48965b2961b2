"""NPO unlearning step on a ~1B-parameter Llama on one GPU, through the engine's own loop.

Standalone: ``python benchmarks/gpu_npo_bench.py --out FILE.json`` (GPU machine; finishes in a
few minutes) or ``--dry-run`` (a tiny config on CPU, so CPU-only tests exercise the same path).

Model: Llama config (hidden 2048, 16 layers, 32 heads, intermediate 5632, vocab 32000), random
init, bf16 weights, SDPA attention; data: synthetic question/answer records of ~``--seq`` tokens
over a word-level tokenizer. The loop is :func:`unlearnops.components.unlearn.loop.train_local`
with fused AdamW, cached reference log-likelihoods (the frozen reference is freed after caching),
and optionally ``torch.compile``. Reported: tokens/s over the steady-state steps, and model FLOPs
utilisation = achieved FLOP/s (6·N·tokens/s, N = parameters without the input embedding; plus the
attention term 6·L·s·h per token, reported separately) against (a) a large bf16 matmul measured
in the same run and (b) the H100/H200 SXM spec peak of 989 TFLOP/s (dense bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

SPEC_PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16

FULL = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "intermediate_size": 5632,
        "vocab_size": 32000, "seq": 512, "batch": 16, "steps": 24, "warmup": 4}
DRY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
       "vocab_size": 1000, "seq": 48, "batch": 4, "steps": 4, "warmup": 1}


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer over ``w0 … wN`` plus specials (no training, no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"w{i}": len(specials) + i for i in range(vocab_size - len(specials))})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def records(n: int, seq: int, vocab: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """QA records whose prompt + answer + EOS is about ``seq`` tokens (answer = 60% of it)."""
    import random

    rng = random.Random(seed)
    n_answer = int(seq * 0.6)
    n_question = seq - n_answer - 5  # "Question:", "\nAnswer:" words and EOS
    words = [f"w{i}" for i in range(vocab - 4)]
    return [{"id": f"{prefix}{i}", "kind": "qa", "question": " ".join(rng.choices(words, k=n_question)),
             "answer": " ".join(rng.choices(words, k=n_answer)), "subject_ids": [], "source": "person"}
            for i in range(n)]


def matmul_peak(device: Any, dtype: Any, n: int, repeats: int = 20) -> float:
    """Measured dense matmul FLOP/s (median over ``repeats``) at this dtype on this device."""
    import statistics

    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            tick = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - tick)
    return 2 * n**3 / statistics.median(times)


def run_bench(dry_run: bool = False, compile_model: bool = False, steps: int | None = None) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from unlearnops.components.unlearn.job import Preloaded, TrainJob
    from unlearnops.components.unlearn.loop import train_local

    from unlearnops.settings import apply_runtime_env
    from unlearnops.types import UnlearnSpec

    apply_runtime_env()
    cfg = dict(DRY if dry_run else FULL)
    if steps:
        cfg["steps"] = steps
    use_gpu = torch.cuda.is_available() and not dry_run
    device = torch.device("cuda" if use_gpu else "cpu")
    dtype = torch.bfloat16  # the dry run exercises the same bf16 weights on CPU
    started = time.perf_counter()
    peak = matmul_peak(device, dtype, 8192 if use_gpu else 256)
    tok = word_tokenizer(cfg["vocab_size"])
    config = LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"], max_position_embeddings=2 * cfg["seq"],
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
    n_params = sum(p.numel() for p in model.parameters())
    n_matmul = n_params - model.get_input_embeddings().weight.numel()
    batch = cfg["batch"]
    data = {"forget": records(4 * batch, cfg["seq"], cfg["vocab_size"], 1, "f"),
            "retain": records(4 * batch, cfg["seq"], cfg["vocab_size"], 2, "r")}
    train = {"steps": cfg["steps"], "batch_size": batch, "lr": 1e-5, "probe_every": 0, "probe_size": 0,
             "max_grad_norm": 1.0, "dtype": "bfloat16", "autocast": "off",
             "compile": compile_model, "eval_batch_size": batch}
    spec = UnlearnSpec(method="npo", params={"train": train},
                       compute={"use_gpu": use_gpu, "torch_threads": 1})
    if use_gpu:
        torch.cuda.reset_peak_memory_stats()
    meta = train_local(TrainJob(spec=spec, quiet=True), Preloaded(model, tok, data), device=str(device))
    steady = meta["curve"][cfg["warmup"]:] or meta["curve"]
    tokens = sum(c["tokens"] for c in steady)
    seconds = sum(c["step_s"] for c in steady)
    tps = tokens / seconds
    flops = 6 * n_matmul * tps
    attn = 6 * cfg["num_hidden_layers"] * cfg["seq"] * cfg["hidden_size"] * tps
    return {
        "device": torch.cuda.get_device_name(0) if use_gpu else "cpu (dry run)",
        "dry_run": dry_run, "compile": compile_model, "config": cfg, "parameters": n_params,
        "matmul_parameters": n_matmul, "dtype": str(dtype), "steps": meta["steps"],
        "steady_steps": len(steady), "tokens_per_step": tokens / len(steady), "tokens_per_s": tps,
        "step_s_median": sorted(c["step_s"] for c in steady)[len(steady) // 2],
        "achieved_flops": flops, "achieved_flops_with_attention": flops + attn,
        "measured_matmul_peak_flops": peak,
        "mfu_vs_measured": flops / peak, "mfu_vs_measured_with_attention": (flops + attn) / peak,
        "mfu_vs_spec_989": flops / SPEC_PEAK_BF16 if use_gpu else None,
        "mfu_vs_spec_989_with_attention": (flops + attn) / SPEC_PEAK_BF16 if use_gpu else None,
        "peak_memory_mb": meta["peak_memory_mb"], "compute_seconds": meta["compute_seconds"],
        "loss_first_last": [meta["curve"][0]["loss"], meta["curve"][-1]["loss"]],
        "wall_seconds": time.perf_counter() - started,
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0],
                     "cuda": torch.version.cuda if use_gpu else None},
        "target_mfu": 0.40,
    }


RESULT = Path(__file__).resolve().parent / "results" / "gpu_npo.json"


def run() -> dict[str, Any]:
    """For ``benchmarks.run_all``: plain and ``torch.compile`` runs on a GPU; without one, the last
    GPU result is kept (``reused``), or the CPU dry run when there is none."""
    import torch

    if torch.cuda.is_available():
        from benchmarks import harness  # here: the script form (``python benchmarks/...``) sets sys.path late

        measured = harness.run_rounds({"plain": run_bench, "compile": partial(run_bench, compile_model=True)},
                                      label="gpu_npo")
        plain, compiled = (harness.median_run(measured, k, "tokens_per_s") for k in ("plain", "compile"))
        return {"device": plain["device"], "plain": plain, "compile": compiled,
                "repeats": measured["repeats"], "load_note": harness.load_note(measured),
                "loaded_rounds": measured["loaded_rounds"]}
    if RESULT.exists():
        return {**json.loads(RESULT.read_text()), "reused": True}
    dry = run_bench(dry_run=True)
    return {"device": dry["device"], "plain": dry, "compile": None}


def summary_markdown(result: dict[str, Any]) -> str:
    lines = ["## NPO step on a ~1B-parameter Llama, one GPU (bf16)\n"]
    plain = result["plain"]
    cfg = plain["config"]
    lines.append(
        f"Device: **{result['device']}**. Llama {plain['parameters'] / 1e9:.2f}B parameters (hidden "
        f"{cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']} heads, vocab "
        f"{cfg['vocab_size']}), random init, bf16 weights, SDPA attention, fused AdamW; NPO + retain NLL "
        f"with {cfg['batch']} forget + {cfg['batch']} retain sequences of ~{cfg['seq']} tokens per step; "
        "cached reference log-likelihoods (reference freed after caching). Through the engine's own loop "
        "(`benchmarks/gpu_npo_bench.py`). MFU = 6·N·tokens/s (N without the input embedding).\n")
    lines += ["| variant | tokens/s | step s (median) | MFU vs measured bf16 matmul | MFU vs 989 TFLOP/s "
              "spec | peak GPU memory GB |", "|---|---|---|---|---|---|"]
    for name in ("plain", "compile"):
        r = result.get(name)
        if not r:
            continue
        spec = f"{r['mfu_vs_spec_989']:.1%}" if r.get("mfu_vs_spec_989") is not None else "n/a"
        lines.append(f"| {'torch.compile' if name == 'compile' else 'eager'} | {r['tokens_per_s']:,.0f} | "
                     f"{r['step_s_median']:.3f} | {r['mfu_vs_measured']:.1%} | {spec} | "
                     f"{r['peak_memory_mb'] / 1024:.1f} |")
    lines.append(f"\nMeasured dense bf16 matmul (8192³) in the same run: "
                 f"{plain['measured_matmul_peak_flops'] / 1e12:.0f} TFLOP/s. Target MFU >= 40%.")
    if result.get("load_note"):
        lines.append(f"Median run of each variant (by tokens/s). {result['load_note']}")
    if result.get("reused"):
        lines.append("_(No GPU in the last `make bench`: the GPU result above is kept from its own run.)_")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    parser.add_argument("--dry-run", action="store_true", help="tiny config on CPU (tests)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the policy model")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    result = run_bench(dry_run=args.dry_run, compile_model=args.compile, steps=args.steps)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
