"""Python literals for the code a plan is written out as."""

from __future__ import annotations

import json
from typing import Any


def python_value(value: Any) -> str:
    """A Python literal in the usual formatter's style (double-quoted strings).

    >>> python_value({"checkpointed": ["h.0"], "fits": True, "segments": None})
    '{"checkpointed": ["h.0"], "fits": True, "segments": None}'
    """
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{python_value(k)}: {python_value(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_value(v) for v in value) + "]"
    return repr(value)
