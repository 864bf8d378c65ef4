"""Data that does not fit: shrink tables, convert big files, stream, learn online, load lazily.

Names are imported on first use so that `import memfit.data` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "shrink": "memfit.data.shrink",
    "fit_shrink": "memfit.data.shrink",
    "ShrinkPlan": "memfit.data.shrink",
    "ShrinkResult": "memfit.data.shrink",
    "convert": "memfit.data.convert",
    "ConvertResult": "memfit.data.convert",
    "TableStream": "memfit.data.stream",
    "StreamLoader": "memfit.data.stream",
    "learn_online": "memfit.data.online",
    "OnlineResult": "memfit.data.online",
    "ImageFolder": "memfit.data.datasets",
    "ArrayStore": "memfit.data.datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'memfit.data' has no attribute {name!r}")
