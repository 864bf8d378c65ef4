"""memfit inside other people's trainers: Hugging Face `Trainer` and Lightning.

Import the one you use (each needs its library): `memfit.integrations.transformers`
(`pip install 'memfit[hf]'`) or `memfit.integrations.lightning`
(`pip install 'memfit[lightning]'`).
"""

from __future__ import annotations

from typing import Any

EMIT_TARGETS = ("hf-trainer", "lightning")


def emit_code(target: str, plan: Any, model: str = "") -> str:
    """The plan as Python for `target` (`hf-trainer` or `lightning`); `plan` may be its dict."""
    if target == "hf-trainer":
        from memfit.integrations.transformers import training_arguments_code

        return training_arguments_code(plan, model)
    if target == "lightning":
        from memfit.integrations.lightning import trainer_code

        return trainer_code(plan, model)
    from memfit.errors import PlanError

    raise PlanError(f"cannot emit {target!r}; choose one of: {', '.join(EMIT_TARGETS)}")
