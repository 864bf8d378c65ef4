"""Task heads and the batches they train on, shaped as real fine-tuning batches are.

Text batches are padded to `seq_len`: each row is a random length between half and
all of it, the rest is padding (`attention_mask` 0, the pad token, label -100). Labels
follow each head's own convention, so the model computes its loss itself:

- causal LM: labels are the input ids, -100 on padding (the model shifts them by one);
- masked LM: 15% of the real tokens carry a label (at least one per row), the rest -100;
- seq2seq: a padded target of `target_len` tokens, -100 on its padding;
- sequence / image classification: one class per row.

`count_items` counts what the loss averages over: for the token heads, the labels the
loss really reads (a causal LM reads `labels[:, 1:]`), so micro-batches are weighted by
it and the accumulated gradient is the full batch's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100
"""The label Hugging Face losses skip."""
MASKED_SHARE = 0.15
"""Share of real tokens masked for masked-LM training (BERT's recipe)."""


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str
    """The transformers Auto class that builds this head from a config."""
    text: bool
    count_items: Callable[[Any], int] | None
    description: str


def _count_shifted(batch: dict) -> int:
    # The causal LM loss predicts token t+1 from tokens up to t: it reads labels[:, 1:].
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def _count_labels(batch: dict) -> int:
    return int((batch["labels"] != IGNORE).sum())


TASKS = {
    "causal-lm": Task("causal-lm", "AutoModelForCausalLM", True, _count_shifted, "causal LM"),
    "masked-lm": Task("masked-lm", "AutoModelForMaskedLM", True, _count_labels, "masked LM"),
    "seq2seq": Task("seq2seq", "AutoModelForSeq2SeqLM", True, _count_labels, "seq2seq LM"),
    "seq-cls": Task(
        "seq-cls", "AutoModelForSequenceClassification", True, None, "sequence classification"
    ),
    "image-cls": Task(
        "image-cls", "AutoModelForImageClassification", False, None, "image classification"
    ),
}
ALIASES = {
    "causal": "causal-lm",
    "clm": "causal-lm",
    "lm": "causal-lm",
    "text-generation": "causal-lm",
    "mlm": "masked-lm",
    "fill-mask": "masked-lm",
    "seq2seq-lm": "seq2seq",
    "text2text": "seq2seq",
    "translation": "seq2seq",
    "summarization": "seq2seq",
    "sequence-classification": "seq-cls",
    "text-classification": "seq-cls",
    "classification": "seq-cls",
    "image-classification": "image-cls",
}

_BY_ARCHITECTURE = (
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForMaskedLM", "masked-lm"),
    ("ForConditionalGeneration", "seq2seq"),
    ("ForSequenceClassification", "seq-cls"),
    ("ForImageClassification", "image-cls"),
)


def task_named(name: str) -> Task | None:
    return TASKS.get(ALIASES.get(name.lower(), name.lower()))


def default_task(model_type: str, fields: dict[str, Any], is_encoder_decoder: bool) -> str:
    """The head a checkpoint was trained with (its `architectures`), else the model type's own."""
    from transformers.models.auto import modeling_auto as auto

    for arch in fields.get("architectures") or ():
        for suffix, task in _BY_ARCHITECTURE:
            if arch.endswith(suffix) and (task != "seq2seq" or is_encoder_decoder):
                return task
    ordered = (
        ("seq2seq", auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES),
        # Encoders (BERT) also have a causal head; masked LM is what they are trained as.
        ("masked-lm", auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
        ("causal-lm", auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        ("image-cls", auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
    )
    for task, mapping in ordered:
        if model_type in mapping and (task != "seq2seq" or is_encoder_decoder):
            return task
    return "seq-cls"


def supports(task: Task, model_type: str) -> bool:
    from transformers.models.auto import modeling_auto as auto

    mapping = {
        "causal-lm": auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "masked-lm": auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        "seq2seq": auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        "seq-cls": auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        "image-cls": auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    }[task.name]
    return model_type in mapping


def _padded_rows(batch_size: int, seq_len: int, device) -> torch.Tensor:
    """attention_mask: each row real for a random length in [seq_len/2, seq_len], then padding."""
    low = max(2, seq_len // 2)
    lengths = torch.randint(min(low, seq_len), seq_len + 1, (batch_size, 1), device=device)
    return (torch.arange(seq_len, device=device) < lengths).long()


def _tokens(batch_size: int, seq_len: int, vocab: int, pad_id: int, device):
    mask = _padded_rows(batch_size, seq_len, device)
    ids = torch.randint(0, vocab, (batch_size, seq_len), device=device)
    return torch.where(mask.bool(), ids, torch.full_like(ids, pad_id)), mask


def batch_maker(task: Task, config, seq_len: int, target_len: int):
    """`make_batch(batch_size, device)` for `task` on a model built from `config`."""
    if task.name == "image-cls":
        channels = getattr(config, "num_channels", 3)
        size = config.image_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)

        def make_image_batch(batch_size: int, device: torch.device | str = "cpu") -> dict:
            return {
                "pixel_values": torch.randn(batch_size, channels, *size, device=device),
                "labels": torch.randint(0, config.num_labels, (batch_size,), device=device),
            }

        return make_image_batch

    vocab = config.vocab_size
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0

    def make_text_batch(batch_size: int, device: torch.device | str = "cpu") -> dict:
        input_ids, mask = _tokens(batch_size, seq_len, vocab, pad_id, device)
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if task.name == "causal-lm":
            batch["labels"] = input_ids.masked_fill(mask == 0, IGNORE)
        elif task.name == "masked-lm":
            chosen = (torch.rand(batch_size, seq_len, device=device) < MASKED_SHARE) & mask.bool()
            chosen[:, 1] = True  # every row has at least one label (position 1 is always real)
            batch["labels"] = input_ids.masked_fill(~chosen, IGNORE)
        elif task.name == "seq2seq":
            target, target_mask = _tokens(batch_size, target_len, vocab, pad_id, device)
            batch["labels"] = target.masked_fill(target_mask == 0, IGNORE)
        else:
            batch["labels"] = torch.randint(0, config.num_labels, (batch_size,), device=device)
        return batch

    return make_text_batch
