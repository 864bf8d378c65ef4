"""MODEL and the flags every model-taking subcommand shares."""

from __future__ import annotations

from memfit.errors import WorkloadError

ZOO_HELP = (
    "zoo:NAME[:key=value,...] (mlp, cnn, resnet18, wrn-28-2, transformer, llama, llama-7b), "
    "hf:NAME[:key=value,...] (a Hugging Face model type, checkpoint name such as gpt2 or "
    "meta-llama/Llama-2-7b-hf, or a folder with config.json; built from its config, no "
    "weights), timm:NAME, path/to/file.py:function or package.module:function"
)


def add_model_args(parser, optimizers=("sgd", "adam", "adamw")) -> None:
    """MODEL, --batch-size, --optimizer, --precision, --input-shape, --seq-len."""
    parser.add_argument("model", metavar="MODEL", help=ZOO_HELP)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="batch size (default: the workload's own)"
    )
    parser.add_argument(
        "--optimizer",
        default=None,
        choices=list(optimizers),
        help="the optimizer whose state is counted (default: the workload's own, else adam)",
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument(
        "--input-shape",
        default=None,
        help="for a function returning an nn.Module: input shape without the batch, e.g. 3,32,32",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="sequence length, for models that take one (same as :seq_len=N)",
    )


def resolve_workload(args):
    from memfit.workload import load_workload

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(x) for x in args.input_shape.replace("x", ",").split(",") if x)
        except ValueError as exc:
            raise WorkloadError(
                f"cannot read --input-shape {args.input_shape!r}: write integers such as 3,32,32"
            ) from exc
    if args.batch_size is not None and args.batch_size < 1:
        raise WorkloadError("--batch-size must be at least 1")
    spec = args.model
    if getattr(args, "seq_len", None):
        spec = with_override(spec, f"seq_len={args.seq_len}")
    return load_workload(spec, input_shape=shape)


def with_override(spec: str, override: str) -> str:
    """Add `key=value` to a model spec's overrides (the part after the second colon)."""
    return f"{spec},{override}" if spec.count(":") >= 2 else f"{spec}:{override}"
