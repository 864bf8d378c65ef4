"""Flags and output helpers shared by several subcommands."""

from __future__ import annotations

import json
import sys
from typing import Any


def add_json_flag(parser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout and nothing else"
    )


def print_json(obj: dict[str, Any]) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=_default)
    sys.stdout.write("\n")


def _default(value: Any) -> Any:
    # numpy scalars and paths reach the JSON from reports; keep them plain.
    if hasattr(value, "item"):
        return value.item()
    return str(value)
