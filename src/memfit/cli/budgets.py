"""`memfit budgets`: the preset budgets and their sizes."""

from __future__ import annotations

from memfit.cli._common import add_json_flag, print_json


def add_parser(sub) -> None:
    parser = sub.add_parser("budgets", help="list the preset budgets (colab, kaggle-gpu, t4, ...)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.budget import PRESETS, format_bytes

    presets = sorted(PRESETS.values(), key=lambda b: (b.device, b.bytes))
    if args.json:
        print_json(
            {
                "budgets": [
                    {
                        "name": b.name,
                        "bytes": b.bytes,
                        "device": b.device,
                        "description": b.description,
                    }
                    for b in presets
                ]
            }
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="budget presets (use with --budget NAME, or give a size: 12GB, 12GiB)")
    for col, justify in (
        ("name", "left"),
        ("size", "right"),
        ("bytes", "right"),
        ("memory", "left"),
        ("what", "left"),
    ):
        table.add_column(col, justify=justify)
    for b in presets:
        table.add_row(
            b.name,
            format_bytes(b.bytes),
            f"{b.bytes:,}",
            "GPU" if b.device == "gpu" else "RAM",
            b.description,
        )
    Console().print(table)
    return 0
