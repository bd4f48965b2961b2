"""The shared passes: one teacher-forced forward pass and one batched greedy generation per
(set, model, question variant), cached, and read by every metric that needs them.

A teacher-forced pass keeps, for each example and each answer position t (textformat labels:
answer tokens + EOS), everything the metrics need from the same logits:
``logp`` = log p(x_t | x_<t) (probability, LOSS/zlib/Min-K% scores), ``correct`` = argmax == x_t
(exact memorization, extraction strength), and ``mu``/``sigma`` = mean and standard deviation
of log p(v) under the next-token distribution (Min-K%++, Zhang et al. 2024). Metrics defined on
the answer's own tokens (exact memorization, extraction strength, Min-K%, Min-K%++) read
:meth:`TFResult.answer`, which drops the EOS position appended by textformat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unlearnops import textformat

Pair = tuple[str, str]
Progress = Callable[[str, int], Callable[[int], None]]


@dataclass
class TFResult:
    """Per-example answer-position arrays of one teacher-forced pass (original order)."""

    logp: list[np.ndarray]
    correct: list[np.ndarray]
    mu: list[np.ndarray]
    sigma: list[np.ndarray]
    eos: bool = False  # whether every example's last scored position is the appended EOS

    def answer(self, name: str) -> list[np.ndarray]:
        """Per-example arrays of ``name`` (logp, correct, mu, sigma) over answer tokens only."""
        arrays: list[np.ndarray] = getattr(self, name)
        return [a[:-1] for a in arrays] if self.eos else list(arrays)

    def __len__(self) -> int:
        return len(self.logp)

    @property
    def nll_mean(self) -> np.ndarray:
        """Mean answer NLL per example (length-normalised)."""
        return np.array([-float(x.mean()) if x.size else 0.0 for x in self.logp])

    @property
    def nll_sum(self) -> np.ndarray:
        return np.array([-float(x.sum()) for x in self.logp])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([x.size for x in self.logp])

    def subset(self, idx: Sequence[int]) -> TFResult:
        return TFResult([self.logp[i] for i in idx], [self.correct[i] for i in idx],
                        [self.mu[i] for i in idx], [self.sigma[i] for i in idx], self.eos)


def _key(kind: str, items: Sequence[Any]) -> str:
    h = hashlib.sha256(kind.encode())
    for item in items:
        h.update(repr(item).encode())
        h.update(b"\0")
    return h.hexdigest()


def _no_progress(_label: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass
class ModelScorer:
    """A loaded model + tokenizer with cached teacher-forced and generation passes."""

    model: Any
    tokenizer: Any
    device: str = "cpu"
    batch_size: int = 64
    progress: Progress = _no_progress
    name: str = "model"
    cache: dict[str, Any] = field(default_factory=dict)
    max_length: int | None = None

    def __post_init__(self) -> None:
        self.model.eval()
        if self.max_length is None:
            self.max_length = getattr(self.model.config, "max_position_embeddings", None)

    # ---------------------------------------------------------------- teacher forcing
    def teacher_forced(self, pairs: Sequence[Pair], label: str = "") -> TFResult:
        """One forward pass over ``(prompt, target)`` pairs in length-sorted padded batches."""
        key = _key("tf", pairs)
        if key not in self.cache:
            self.cache[key] = self._teacher_forced(pairs, label)
        return self.cache[key]

    @torch.inference_mode()
    def _teacher_forced(self, pairs: Sequence[Pair], label: str) -> TFResult:
        enc = [textformat.encode(self.tokenizer, p, t, self.max_length) for p, t in pairs]
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].input_ids))
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(enc)
        tick = self.progress(f"{self.name}: score {label}", len(enc))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = textformat.collate([enc[i] for i in rows], pad)
            logits = self.model(input_ids=batch["input_ids"].to(self.device),
                                attention_mask=batch["attention_mask"].to(self.device)).logits
            labels = batch["labels"][:, 1:].to(self.device)
            mask = labels != textformat.IGNORE
            picked = logits[:, :-1][mask].float()          # (answer positions, vocab)
            logp_all = torch.log_softmax(picked, dim=-1)
            target = labels[mask]
            logp = logp_all.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            correct = logp_all.argmax(-1) == target
            probs = logp_all.exp()
            mu = (probs * logp_all).sum(-1)
            var = (probs * logp_all.square()).sum(-1) - mu.square()
            sigma = var.clamp(min=1e-12).sqrt()
            counts = mask.sum(-1).tolist()
            parts = [t.cpu().numpy() for t in (logp, correct, mu, sigma)]
            offset = 0
            for row, n in zip(rows, counts, strict=True):
                out[row] = tuple(p[offset:offset + n] for p in parts)  # type: ignore[assignment]
                offset += n
            tick(len(rows))
        done = [o for o in out if o is not None]
        return TFResult([o[0] for o in done], [o[1] for o in done], [o[2] for o in done],
                        [o[3] for o in done], eos=self.tokenizer.eos_token_id is not None)

    # ---------------------------------------------------------------- gradients
    def grad_norms(self, pairs: Sequence[Pair], label: str = "") -> np.ndarray:
        """Per-example L2 norm of the gradient of the mean answer NLL over all weights (cached)."""
        key = _key("gradnorm", pairs)
        if key not in self.cache:
            self.cache[key] = self._grad_norms(pairs, label)
        return self.cache[key]

    def _grad_norms(self, pairs: Sequence[Pair], label: str) -> np.ndarray:
        params = [p for p in self.model.parameters() if p.is_floating_point()]
        flags = [p.requires_grad for p in params]
        tick = self.progress(f"{self.name}: gradients {label}", len(pairs))
        out = []
        try:
            for p in params:
                p.requires_grad_(True)
            with torch.enable_grad():
                for prompt, target in pairs:
                    enc = textformat.encode(self.tokenizer, prompt, target, self.max_length)
                    batch = textformat.collate([enc], self.tokenizer.pad_token_id or 0)
                    logits = self.model(input_ids=batch["input_ids"].to(self.device)).logits
                    logp, mask = textformat.token_logprobs(logits, batch["labels"].to(self.device))
                    loss = -logp.sum() / mask.sum().clamp(min=1)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                    squares = [(g.float() ** 2).sum() for g in grads if g is not None]
                    out.append(float(torch.sqrt(torch.stack(squares).sum())) if squares else 0.0)
                    tick(1)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
        return np.array(out)

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: Sequence[str], max_new_tokens: int, label: str = "") -> list[str]:
        """Greedy answers (KV cache, left padding, length-sorted batches)."""
        key = _key(f"gen{max_new_tokens}", prompts)
        if key not in self.cache:
            self.cache[key] = self._generate(prompts, max_new_tokens, label)
        return self.cache[key]

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[str], max_new_tokens: int, label: str) -> list[str]:
        enc = [textformat.encode(self.tokenizer, p, "", add_eos=False) for p in prompts]
        order = sorted(range(len(enc)), key=lambda i: len(enc[i].input_ids))
        out = [""] * len(enc)
        tick = self.progress(f"{self.name}: generate {label}", len(enc))
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = textformat.collate([enc[i] for i in rows], pad, left_pad=True)
            width = batch["input_ids"].shape[1]
            new = max_new_tokens
            if self.max_length:
                new = max(1, min(new, self.max_length - width))
            gen = self.model.generate(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
                max_new_tokens=new, do_sample=False, num_beams=1, use_cache=True,
                pad_token_id=pad, eos_token_id=eos,
            )
            texts = self.tokenizer.batch_decode(gen[:, width:].cpu(), skip_special_tokens=True)
            for row, text in zip(rows, texts, strict=True):
                out[row] = text.strip()
            tick(len(rows))
        return out


def target_tokens(tokenizer: Any, targets: Sequence[str]) -> int:
    """Longest target in tokens (answer + EOS), to size generation."""
    if not targets:
        return 1
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets) + 1
