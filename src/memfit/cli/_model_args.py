"""MODEL and the flags every model-taking subcommand shares."""

from __future__ import annotations

import argparse
import re

from memfit.errors import WorkloadError

ZOO_HELP = (
    "zoo:NAME[:key=value,...] (mlp, cnn, resnet18, wrn-28-2, transformer, llama, llama-7b), "
    "hf:NAME[:key=value,...] (a Hugging Face model type, checkpoint name such as gpt2 or "
    "meta-llama/Llama-2-7b-hf, or a folder with config.json; built from its config, no "
    "weights), timm:NAME, path/to/file.py:function or package.module:function"
)
OPTIMIZER_HELP = {
    "sgd": "SGD with momentum (one buffer per parameter)",
    "adam": "Adam (two fp32 moments per parameter)",
    "adamw": "AdamW (as adam)",
    "adam8bit": "torchao's 8-bit AdamW state",
    "adam4bit": "torchao's 4-bit AdamW state",
}


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def add_model_args(parser, optimizers=("sgd", "adam", "adamw")) -> None:
    """MODEL, --batch-size, --optimizer, --precision, --input-shape, --seq-len."""
    parser.add_argument("model", metavar="MODEL", help=ZOO_HELP)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="batch size (default: the workload's own)",
    )
    parser.add_argument(
        "--optimizer",
        default=None,
        choices=list(optimizers),
        help="optimizer whose state is counted (default: the workload's own, else adam): "
        + "; ".join(f"{name}: {OPTIMIZER_HELP[name]}" for name in optimizers),
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="fp32 (default), or bf16/fp16 autocast for the forward pass (fp16 needs CUDA)",
    )
    parser.add_argument(
        "--input-shape",
        default=None,
        metavar="SHAPE",
        help="for a function returning an nn.Module: input shape without the batch, e.g. 3,32,32",
    )
    parser.add_argument(
        "--seq-len",
        type=positive_int,
        default=None,
        help="sequence length, for models that take one (same as :seq_len=N)",
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """`3,32,32` or `3x32x32` as a tuple of positive integers; anything else is refused.

    >>> parse_shape("3x32x32")
    (3, 32, 32)
    """
    parts = re.split(r"[,x]", text.strip())
    if not all(re.fullmatch(r"\s*[0-9]+\s*", part) and int(part) > 0 for part in parts):
        raise WorkloadError(
            f"cannot read --input-shape {text!r}: write positive integers such as 3,32,32"
        )
    return tuple(int(part) for part in parts)


def resolve_workload(args):
    from memfit.workload import load_workload

    shape = parse_shape(args.input_shape) if args.input_shape else None
    spec = args.model
    if getattr(args, "seq_len", None):
        spec = with_override(spec, f"seq_len={args.seq_len}")
    return load_workload(spec, input_shape=shape)


def with_override(spec: str, override: str) -> str:
    """Add `key=value` to a model spec's overrides (the part after the second colon)."""
    return f"{spec},{override}" if spec.count(":") >= 2 else f"{spec}:{override}"
