"""Flags and output helpers shared by several subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any


def add_json_flag(parser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout and nothing else"
    )


def add_report_args(parser) -> None:
    """--plot, --top and --json: how a profile or an estimate is shown."""
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="write a stacked-bar chart of the categories",
    )
    parser.add_argument("--top", type=int, default=10, help="modules to list (default 10)")
    add_json_flag(parser)


def print_json(obj: dict[str, Any]) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=_default)
    sys.stdout.write("\n")


def _default(value: Any) -> Any:
    # numpy scalars and paths reach the JSON from reports; keep them plain.
    if hasattr(value, "item"):
        return value.item()
    return str(value)
