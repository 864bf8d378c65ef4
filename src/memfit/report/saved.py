"""Reading a saved `--json` result back: which command made it, and its dictionary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from memfit.errors import ReportError

PLAN_KEYS = ("budget_bytes", "baseline_peak_bytes", "predicted_peak_bytes")
PROFILE_KEYS = ("method", "peak_bytes", "categories")


def result_kind(data: Any) -> str:
    """`plan`, `profile` or `estimate`, from the keys the JSON contract names.

    >>> result_kind({"method": "estimated", "peak_bytes": 1, "categories": {}})
    'estimate'
    """
    if isinstance(data, dict):
        if all(k in data for k in PLAN_KEYS):
            return "plan"
        if all(k in data for k in PROFILE_KEYS):
            return "profile" if data["method"] == "measured" else "estimate"
    raise ReportError(
        "this JSON is not the output of `memfit profile`, `estimate` or `plan` with --json "
        f"(a profile has {', '.join(PROFILE_KEYS)}; a plan has {', '.join(PLAN_KEYS)})"
    )


def read_result(source: str) -> tuple[dict[str, Any], str]:
    """The dictionary in `source` (a path, or `-` for standard input) and its kind."""
    name = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(
            f"{source}: no such file; save a result first, e.g. "
            "`memfit profile zoo:cnn --json > result.json`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {name}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{name} is not JSON (line {exc.lineno}: {exc.msg}); save only what --json prints, "
            "e.g. `memfit estimate MODEL --json > result.json`"
        ) from None
    return data, result_kind(data)
