"""`memfit compress MODEL`: prune, quantize or cluster a model and report bytes and accuracy."""

from __future__ import annotations

from memfit.cli._common import add_json_flag, print_json
from memfit.cli._model_args import non_negative_int, positive_int

METHODS = ("prune", "quantize", "cluster", "all")


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "compress",
        help="prune, quantize or cluster a model; bytes and accuracy before/after",
        description="Compress a model so it holds less memory, and measure the accuracy cost. "
        "A workload with real data (zoo:cnn, zoo:mlp:inputs=64) is first trained "
        "briefly on its training split, so the accuracies mean something.",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="zoo:NAME[:k=v,...], file.py:function or package.module:function",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="all",
        help="all = prune, then cluster (or quantize with --bits), as Deep "
        "Compression does (default)",
    )
    parser.add_argument(
        "--amount",
        type=float,
        default=None,
        help="fraction of weights (or channels with --structured) to remove "
        "(default 0.8, or 0.5 with --structured)",
    )
    parser.add_argument(
        "--structured",
        action="store_true",
        help="remove whole channels/neurons and rebuild smaller layers",
    )
    parser.add_argument(
        "--scope",
        choices=("global", "layer"),
        default="global",
        help="global: one magnitude threshold over all layers (default); layer: the same "
        "fraction removed from each layer",
    )
    parser.add_argument(
        "--bits",
        type=int,
        choices=(8, 4),
        default=None,
        help="quantization bits, 8 or 4 (quantize default 8; with --method all, "
        "quantize instead of cluster)",
    )
    parser.add_argument(
        "--clusters", type=positive_int, default=16, help="shared values per layer (16)"
    )
    parser.add_argument(
        "--index-bits",
        type=positive_int,
        default=4,
        help="bits per packed sparse index gap with --method all (default 4)",
    )
    parser.add_argument(
        "--train-steps",
        type=non_negative_int,
        default=150,
        help="training steps before compressing, when the workload has data",
    )
    parser.add_argument(
        "--finetune-steps",
        type=non_negative_int,
        default=100,
        help="fine-tuning steps after each compression step (mask kept fixed)",
    )
    parser.add_argument(
        "-o", "--output", default=None, help="write the compressed model to this .safetensors file"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="LAYER",
        help="leave this layer (and what is inside it) as it is; repeatable",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for initialisation and training (default 0)"
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from memfit import compress as mc
    from memfit.workload import load_workload

    torch.manual_seed(args.seed)
    workload = load_workload(args.model)
    model = workload.build_model()
    from memfit.compress._targets import check_skip

    check_skip(model, args.skip)  # before minutes of training, not after
    data = mc.workload_data(workload)
    train = validation = None
    trained_note = (
        "no data for this workload: the model is randomly initialised, accuracy not measured"
    )
    if data is not None:
        x_train, y_train, x_test, y_test = data
        train, validation = (x_train, y_train), (x_test, y_test)
        mc.finetune(model, train, steps=args.train_steps, seed=args.seed)
        trained_note = (
            f"trained {args.train_steps} steps on the training split "
            f"({len(y_train)} examples) before compressing; accuracy is on the "
            f"held-out split ({len(y_test)} examples)"
        )
    tune = {
        "skip": args.skip,
        "validation": validation,
        "finetune_data": train,
        "finetune_steps": args.finetune_steps if train is not None else 0,
    }
    amount = args.amount if args.amount is not None else (0.5 if args.structured else 0.8)
    if args.method == "prune":
        model, report = mc.prune(
            model, amount, structured=args.structured, scope=args.scope, inplace=True, **tune
        )
    elif args.method == "quantize":
        model, report = mc.quantize(model, args.bits or 8, inplace=True, **tune)
    elif args.method == "cluster":
        model, report = mc.cluster(model, args.clusters, inplace=True, **tune)
    else:
        model, report = mc.compress(
            model,
            amount,
            k=args.clusters,
            bits=args.bits,
            index_bits=args.index_bits,
            structured=args.structured,
            scope=args.scope,
            inplace=True,
            **tune,
        )
    report.notes.insert(0, trained_note)
    saved = str(mc.save(model, args.output)) if args.output else None
    if args.json:
        print_json({"model": args.model, **report.to_dict(), "output": saved})
    else:
        _print_text(report, saved)
    return 0


def _print_text(report, saved: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"memfit compress: {report.method}")
    for column in ("layer", "kind", "before bytes", "after bytes", "kept", "stored as"):
        table.add_column(
            column, justify="right" if "bytes" in column or column == "kept" else "left"
        )
    for layer in report.layers:
        table.add_row(
            layer.name,
            layer.kind,
            f"{layer.before_bytes:,}",
            f"{layer.after_bytes:,}",
            f"{layer.density:.0%}",
            layer.encoding,
        )
    console = Console()
    console.print(table)
    console.print(str(report))
    for note in report.notes:
        console.print(f"- {note}")
    if saved:
        console.print(f"saved to {saved}")
