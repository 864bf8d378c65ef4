"""memfit: make deep-learning training fit in the memory you have.

    profile   measure a real training step, by category and by module
    estimate  the same on fake tensors: nothing of the model's size is allocated
    plan      what makes a step fit a budget, with predicted memory and time
    verify    apply a plan to a fresh model, run real steps, hold the prediction to them
    fit       train under a plan and check the measured peak
    show      draw a result's report in a notebook (the `--report` HTML, inline)

Names are imported on first use, so `import memfit` is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Budget": "memfit.budget",
    "Workload": "memfit.workload",
    "load_workload": "memfit.specs",
    "MemoryProfile": "memfit.memory_profile",
    "ModuleRow": "memfit.memory_profile",
    "profile": "memfit.measure.profile",
    "estimate": "memfit.estimator",
    "max_batch_size": "memfit.estimator",
    "FitVerdict": "memfit.estimator",
    "BatchSizeFit": "memfit.estimator",
    "plan": "memfit.planning",
    "Plan": "memfit.planning",
    "verify": "memfit.verification",
    "Verification": "memfit.verification",
    "fit": "memfit.train",
    "FitResult": "memfit.train",
    "MemoryTracker": "memfit.measure.tracker",
    "make_optimizer": "memfit.optim",
    "show": "memfit.report.notebook",
}
_MODULES = {"zoo": "memfit.zoo", "data": "memfit.data", "errors": "memfit.errors"}

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'memfit' has no attribute {name!r}")
    # Cache it: a later import of a submodule of the same name must not shadow the function.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
