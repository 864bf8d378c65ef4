"""Flags and output helpers shared by several subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any


def add_json_flag(parser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout and nothing else"
    )


def add_html_report_flag(parser) -> None:
    parser.add_argument(
        "--report",
        metavar="FILE.html",
        type=report_path,
        default=None,
        help="also write a self-contained HTML report (charts, timeline, tables; opens offline)",
    )


def report_path(text: str) -> str:
    """An argparse type: an .html file in a folder that exists, checked before the work starts."""
    import argparse
    from pathlib import Path

    target = Path(text)
    if target.suffix.lower() not in (".html", ".htm"):
        raise argparse.ArgumentTypeError(f"{text!r}: name the report something.html")
    if not target.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: the folder {target.parent} does not exist")
    return text


def add_report_args(parser) -> None:
    """--plot, --report, --top and --json: how a profile or an estimate is shown."""
    from memfit.cli._model_args import non_negative_int

    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="write a stacked-bar chart of the categories",
    )
    add_html_report_flag(parser)
    parser.add_argument(
        "--top", type=non_negative_int, default=10, help="modules to list (default 10)"
    )
    add_json_flag(parser)


def said_report(args, path) -> None:
    """Where the report went: on stdout with the tables, on stderr under --json."""
    print(f"report written to {path}", file=sys.stderr if args.json else sys.stdout)


_COMPACT_KEYS = ("timeline",)
"""Top-level keys written on one line: thousands of samples one per line would bury the rest."""


def print_json(obj: dict[str, Any]) -> None:
    placeholders = {}
    shown = dict(obj)
    for key in _COMPACT_KEYS:
        if key in shown:
            placeholders[key] = json.dumps(shown[key], separators=(",", ":"), default=_default)
            shown[key] = f"\x00{key}\x00"
    text = json.dumps(shown, indent=2, sort_keys=False, default=_default)
    for key, compact in placeholders.items():
        text = text.replace(json.dumps(f"\x00{key}\x00"), compact, 1)
    sys.stdout.write(text + "\n")


def _default(value: Any) -> Any:
    # numpy scalars and paths reach the JSON from reports; keep them plain.
    if hasattr(value, "item"):
        return value.item()
    return str(value)
