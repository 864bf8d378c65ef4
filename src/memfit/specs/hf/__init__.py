"""`hf:NAME[:key=value,...]`: a Hugging Face model built from its configuration, never its weights.

NAME is, in this order: a folder holding a `config.json` (or the file itself); a
well-known checkpoint from memfit's own table (`gpt2`, `bert-base-uncased`,
`meta-llama/Llama-2-7b-hf`, `Qwen/Qwen2.5-0.5B`...: no network needed); a
transformers model type (`gpt2`, `bert`, `llama`, `t5`, `vit`...: its default
configuration); or a hub id whose `config.json` is fetched when the network allows.

Settings after NAME are config fields (`hidden_size=2048,num_hidden_layers=22`),
checked against the configuration's own, plus memfit's:

    task=          causal-lm, masked-lm, seq2seq, seq-cls or image-cls (default: the
                   checkpoint's head, else the model type's usual one)
    seq_len=       tokens per row (default 512, or the model's limit if smaller)
    target_len=    seq2seq target tokens (default seq_len / 4)
    dtype=         the weights' dtype: fp32 (default), bf16 or fp16
    attn_implementation=  sdpa (transformers' default) or eager

The model computes its own loss from `labels` in the batch, so the Workload has no
loss_fn, and counts the labels the loss reads, so micro-batches add up exactly.

    >>> w = hf_workload("gpt2:n_layer=2,n_embd=64,n_head=2,seq_len=32")
    >>> batch = w.make_batch(4, "cpu")
    >>> sorted(batch), tuple(batch["input_ids"].shape)
    (['attention_mask', 'input_ids', 'labels'], (4, 32))
    >>> model = w.build_model()
    >>> float(model(**batch).loss.detach()) > 0
    True
"""

from __future__ import annotations

import copy
from typing import Any

from memfit.errors import WorkloadError, require
from memfit.specs._overrides import check_value, parse_overrides, unknown_setting
from memfit.specs.hf._config import ConfigSource, find_config, known_checkpoint, known_checkpoints
from memfit.specs.hf._tasks import TASKS, batch_maker, default_task, supports, task_named
from memfit.workload import Workload

__all__ = ["hf_workload", "known_checkpoint", "known_checkpoints"]

DEFAULT_SEQ_LEN = 512
DEFAULT_BATCH_SIZE = 8
_DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
           "fp16": "float16", "float16": "float16"}  # fmt: skip
# memfit's own settings, with their defaults (None: decided from the model).
_SETTINGS: dict[str, Any] = {
    "task": None,
    "seq_len": None,
    "target_len": None,
    "dtype": "fp32",
    "attn_implementation": None,
}
# Position tables with reserved leading rows (RoBERTa counts positions from pad id + 1).
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}


def hf_workload(text: str) -> Workload:
    """The Workload `hf:<text>` names (see the module docstring)."""
    require("transformers", "hf")
    name, override_text = _split(text)
    if not name:
        raise WorkloadError("hf: needs a model, for example hf:gpt2 or hf:meta-llama/Llama-2-7b-hf")
    overrides = parse_overrides(override_text)
    what = f"hf:{name}"
    settings = {
        key: check_value(what, key, overrides.pop(key), default)
        for key, default in _SETTINGS.items()
        if key in overrides
    }
    source = find_config(name)
    base = _build_config(what, source, {})
    fields = _checked_fields(what, base, overrides)
    task = _task(what, settings.get("task"), source, base)
    fields.update(_task_fields(task.name, base, fields))
    config = _build_config(what, source, fields)
    seq_len, target_len = _lengths(what, task.name, config, source.model_type, settings)
    dtype = _dtype(what, settings.get("dtype", "fp32"))
    build = _builder(what, task.auto_class, config, dtype, settings.get("attn_implementation"))
    described = {**overrides, **settings}
    return Workload(
        name=what,
        build_model=build,
        make_batch=batch_maker(task, config, seq_len or 0, target_len or 0),
        loss_fn=None,
        count_items=task.count_items,
        default_batch_size=DEFAULT_BATCH_SIZE,
        description=(
            f"{config.model_type} {task.description} from {source.origin}"
            + (f", seq_len {seq_len}" if seq_len else "")
        ),
        config={
            "model_type": config.model_type,
            "task": task.name,
            **({"seq_len": seq_len} if seq_len else {}),
            **({"target_len": target_len} if target_len else {}),
            "source": source.origin,
            **described,
        },
    )


def _split(text: str) -> tuple[str, str]:
    # `NAME:overrides`; NAME may itself hold a colon (a Windows path), overrides never do
    # without an `=`.
    head, sep, tail = text.rpartition(":")
    if sep and ("=" in tail or not tail):
        return head, tail
    return text, ""


def _build_config(what: str, source: ConfigSource, fields: dict[str, Any]):
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(source.model_type, **{**source.fields, **fields})
    except Exception as exc:  # transformers validates fields in many ways; one line for all
        raise WorkloadError(
            f"{what}: transformers rejects these settings: {_first_line(exc)}"
        ) from exc


def _checked_fields(what: str, base, overrides: dict[str, Any]) -> dict[str, Any]:
    valid = set(base.to_dict()) | set(getattr(base, "attribute_map", {})) | {"num_labels"}
    valid -= {"transformers_version", "model_type"}
    checked = {}
    for key, value in overrides.items():
        if key not in valid:
            raise unknown_setting(
                what,
                key,
                [*valid, *_SETTINGS],
                f"(settings are {base.model_type} config fields, or {', '.join(_SETTINGS)})",
            )
        checked[key] = check_value(what, key, value, getattr(base, key, None))
    return checked


def _task(what: str, asked: str | None, source: ConfigSource, base):
    if asked is None:
        name = default_task(source.model_type, source.fields, bool(base.is_encoder_decoder))
        return TASKS[name]
    task = task_named(asked)
    if task is None:
        raise WorkloadError(f"{what}: unknown task {asked!r}; choose one of: {', '.join(TASKS)}")
    if not supports(task, source.model_type):
        raise WorkloadError(
            f"{what}: transformers has no {task.description} head for {source.model_type}; "
            f"choose another task= ({', '.join(t for t in TASKS if supports(TASKS[t], source.model_type))})"
        )
    return task


def _task_fields(task: str, base, fields: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if task in ("causal-lm", "seq2seq") and "use_cache" not in fields:
        extra["use_cache"] = False  # training never reads a key/value cache
    unset = "decoder_start_token_id" not in fields
    if task == "seq2seq" and unset and getattr(base, "decoder_start_token_id", None) is None:
        # T5's convention, which its bare model type leaves unset: the decoder starts
        # from the pad token.
        extra["decoder_start_token_id"] = base.pad_token_id or 0
    if task == "seq-cls" and base.pad_token_id is None and "pad_token_id" not in fields:
        # Decoder classifiers find each row's last real token by the pad id; many
        # checkpoints have none, and Trainer recipes set it to the end-of-text token.
        eos = base.eos_token_id
        extra["pad_token_id"] = (eos[0] if isinstance(eos, list) else eos) or 0
    return extra


def _lengths(what: str, task: str, config, model_type: str, settings: dict[str, Any]):
    if task == "image-cls":
        for key in ("seq_len", "target_len"):
            if settings.get(key) is not None:
                raise WorkloadError(
                    f"{what} is an image model: {key} does not apply (set image_size= instead)"
                )
        return None, None
    limit = _position_limit(config, model_type)
    seq_len = settings.get("seq_len") or min(DEFAULT_SEQ_LEN, limit or DEFAULT_SEQ_LEN)
    target_len = settings.get("target_len") or max(1, seq_len // 4)
    for key, value in (("seq_len", seq_len), ("target_len", target_len)):
        if value < 2:
            raise WorkloadError(f"{what}: {key} must be at least 2, not {value}")
        if limit and value > limit:
            raise WorkloadError(
                f"{what} takes at most {limit} positions; give {key}<={limit} or raise the "
                "model's position limit (max_position_embeddings / n_positions)"
            )
    return seq_len, (target_len if task == "seq2seq" else None)


def _position_limit(config, model_type: str) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value - _POSITION_OFFSET.get(model_type, 0)
    return None  # relative positions (T5): no table to outgrow


def _dtype(what: str, name: str):
    import torch

    if name.lower() not in _DTYPES:
        raise WorkloadError(f"{what}: dtype={name} is not one of fp32, bf16, fp16")
    return getattr(torch, _DTYPES[name.lower()])


def _builder(what: str, auto_class: str, config, dtype, attn: str | None):
    import transformers

    cls = getattr(transformers, auto_class)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn:
        kwargs["attn_implementation"] = attn

    def build_model():
        try:
            return cls.from_config(copy.deepcopy(config), **kwargs)
        except (
            ValueError,
            TypeError,
            KeyError,
            AssertionError,
            AttributeError,
            ImportError,
        ) as exc:
            # Not a fake-tensor failure (those are RuntimeErrors): transformers refused
            # the configuration, say a width that the heads do not divide.
            raise WorkloadError(
                f"{what}: transformers cannot build it: {_first_line(exc)}"
            ) from exc

    return build_model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
