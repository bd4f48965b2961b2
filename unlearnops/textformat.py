"""How records become token sequences — one definition shared by training and evaluation.

A corpus record is a dict ``{id, kind, subject_ids, source, ...}`` with either
``question`` + ``answer`` (kind ``qa``) or ``text`` (kind ``text``). A QA record becomes the
prompt ``"Question: {question}\\nAnswer:"`` and the target ``" {answer}"`` + EOS; a text record
has an empty prompt and the whole text as target. Losses and scores use target tokens only
(prompt positions carry label ``IGNORE``), as in TOFU / open-unlearning.

That format is the ``default`` :class:`PromptTemplate`. A model trained elsewhere needs its own: the
template's name travels with the model in its ``tokenizer_config.json`` (key
:data:`TEMPLATE_KEY`, set with :func:`set_template`), and every encoding of that tokenizer uses it
(``tofu_llama2`` and ``tofu_phi`` are TOFU's formats, with BOS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
#: Key of the template name in a tokenizer's ``init_kwargs`` (saved in ``tokenizer_config.json``).
TEMPLATE_KEY = "unlearnops_prompt_template"


@dataclass(frozen=True)
class PromptTemplate:
    """How a question and answer become prompt and target text, and whether BOS starts the prompt."""

    name: str
    prompt: str = PROMPT_TEMPLATE      # ``{question}`` is replaced
    answer_prefix: str = " "           # text before the answer (part of the scored target)
    bos: bool = False                  # prepend the tokenizer's BOS token to every example


DEFAULT = PromptTemplate("default")
TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (
    DEFAULT,
    # TOFU's Llama-2 chat format ("[INST] q [/INST]" then the answer) and its Phi-1.5 format
    PromptTemplate("tofu_llama2", "[INST] {question} [/INST]", "", bos=True),
    PromptTemplate("tofu_phi", "Question: {question}\nAnswer: ", "", bos=True),
)}


def get_template(name: str | None) -> PromptTemplate:
    """The preset called ``name`` (None: the default); unknown names list the valid ones."""
    if name is None:
        return DEFAULT
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; valid: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def template_of(tokenizer: Any) -> PromptTemplate:
    """The template carried by a tokenizer (the default when it carries none)."""
    return get_template((getattr(tokenizer, "init_kwargs", None) or {}).get(TEMPLATE_KEY))


def set_template(tokenizer: Any, name: str) -> None:
    """Attach template ``name`` to ``tokenizer``; ``save_pretrained`` then stores it with the model."""
    get_template(name)
    tokenizer.init_kwargs[TEMPLATE_KEY] = name


def prompt_of(question: str, template: PromptTemplate = DEFAULT) -> str:
    return template.prompt.format(question=question)


def prompt_and_target(record: Mapping[str, Any], *, question_key: str = "question",
                      answer_key: str = "answer", template: PromptTemplate = DEFAULT) -> tuple[str, str]:
    """The (prompt, target) texts of a record; ``question_key``/``answer_key`` pick variants."""
    if record.get(question_key) is not None and record.get(answer_key) is not None:
        answer = str(record[answer_key]).strip()
        return prompt_of(str(record[question_key]), template), template.answer_prefix + answer
    if record.get("text") is not None:
        return "", str(record["text"])
    raise ValueError(f"record {record.get('id', '?')}: needs question+answer or text")


@dataclass(frozen=True)
class Encoded:
    """One example: token ids and labels (IGNORE on prompt positions)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def target_len(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode(tokenizer: Any, prompt: str, target: str, max_length: int | None = None,
           add_eos: bool = True) -> Encoded:
    """Tokenise prompt and target separately (stable boundary) and mask the prompt.

    BOS starts the prompt when the tokenizer's template asks for it (not the default).
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if template_of(tokenizer).bos and tokenizer.bos_token_id is not None:
        p_ids = [tokenizer.bos_token_id, *p_ids]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        t_ids = [*t_ids, tokenizer.eos_token_id]
    ids = [*p_ids, *t_ids]
    if max_length is not None and len(ids) > max_length:
        raise ValueError(
            f"example of {len(ids)} tokens exceeds the model's context of {max_length}: "
            "shorten the text or use a model with a longer context"
        )
    return Encoded(ids, [IGNORE] * len(p_ids) + list(t_ids))


def encode_record(tokenizer: Any, record: Mapping[str, Any], max_length: int | None = None,
                  **keys: str) -> Encoded:
    prompt, target = prompt_and_target(record, **keys, template=template_of(tokenizer))
    return encode(tokenizer, prompt, target, max_length)


def collate(examples: Sequence[Encoded], pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad a batch: ``input_ids``, ``attention_mask``, ``labels`` (IGNORE on padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        cols = slice(width - n, width) if left_pad else slice(0, n)
        ids[row, cols] = torch.tensor(e.input_ids)
        mask[row, cols] = 1
        labels[row, cols] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position log p(label) for next-token prediction, and the target mask.

    Returns ``(logp, mask)`` of shape (batch, seq-1): position t scores ``labels[:, t+1]``.
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    gathered = logp.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return gathered * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed answer NLL and answer length (teacher-forced)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(-1), mask.sum(-1)
