"""memfit plans inside Lightning: a callback that applies a plan and measures the peak.

`MemoryPlanCallback(plan)` sets the Trainer's gradient accumulation and mixed
precision to the plan's, checkpoints the modules the plan names (found inside the
LightningModule, for example `model.transformer.h.0` for the plan's
`transformer.h.0`), checks that the DataLoader yields the plan's micro-batches,
and measures the peak of the first optimizer steps against the budget (RSS on
CPU, the CUDA allocator on GPU). `trainer_kwargs(plan)` gives the same settings as
`Trainer(...)` arguments, `trainer_code(plan)` as Python to paste.

Lightning weighs every micro-batch equally; with a token-level loss and ragged
padding that differs slightly from the full batch's mean (memfit's own step and
Hugging Face's Trainer count the tokens).

    >>> plan = {"micro_batch_size": 8, "accumulation_steps": 4, "checkpointed": [],
    ...         "precision": "bf16", "optimizer_state": "fp32", "budget_bytes": 12 * 10**9}
    >>> trainer_kwargs(plan)
    {'accumulate_grad_batches': 4, 'precision': 'bf16-mixed'}
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from memfit.budget import format_bytes
from memfit.errors import PlanError, require
from memfit.integrations._code import python_value
from memfit.integrations._peak import PeakWatch, WatchedPeak, plan_fields
from memfit.techniques import checkpointing as ckpt
from memfit.techniques.accumulation import batch_size_of

_lightning = require("lightning", "lightning")

__all__ = ["MemoryPlanCallback", "trainer_code", "trainer_kwargs"]

_PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed"}


def trainer_kwargs(plan: Any) -> dict[str, Any]:
    """`lightning.Trainer` arguments that carry out `plan` (a Plan or its dictionary)."""
    data = plan_fields(plan)
    kwargs: dict[str, Any] = {"accumulate_grad_batches": int(data["accumulation_steps"])}
    if data.get("precision") in _PRECISION:
        kwargs["precision"] = _PRECISION[data["precision"]]
    if int(data.get("nodes") or 1) > 1:
        kwargs["strategy"] = "fsdp"  # model states sharded over the plan's ranks
    return kwargs


def trainer_code(plan: Any, model: str = "") -> str:
    """Python that sets up a Lightning Trainer for the plan, its callback included."""
    data = plan_fields(plan)
    settings = {
        key: data.get(key)
        for key in ("micro_batch_size", "accumulation_steps", "checkpointed", "precision",
                    "optimizer_state", "budget_bytes", "reserve_bytes")
    }  # fmt: skip
    lines = [
        f"# memfit plan{f' for {model}' if model else ''}: micro-batches of "
        f"{data['micro_batch_size']} x {data['accumulation_steps']}, "
        f"budget {format_bytes(data['budget_bytes'])}",
        "import lightning as L",
        "from torch.utils.data import DataLoader",
        "",
        "from memfit.integrations.lightning import MemoryPlanCallback",
        "",
        f"plan = {python_value(settings)}",
        f"loader = DataLoader(train_dataset, batch_size={data['micro_batch_size']}, shuffle=True)",
        "# The callback sets accumulation and precision, checkpoints the plan's modules and",
        "# warns when the first steps' measured peak is over the budget.",
        f"trainer = L.Trainer({_kwargs_text(data)}callbacks=[MemoryPlanCallback(plan)])",
        "trainer.fit(lightning_module, loader)",
    ]
    if data.get("optimizer_state") in ("8bit", "4bit"):
        lines.append(
            f"# The plan keeps {data['optimizer_state']} Adam state: return "
            f"torchao.optim.AdamW{data['optimizer_state']} from configure_optimizers."
        )
    return "\n".join(lines) + "\n"


def _kwargs_text(data: dict[str, Any]) -> str:
    # What the callback cannot set once the Trainer exists: how it spreads over ranks.
    nodes = int(data.get("nodes") or 1)
    return f'strategy="fsdp", devices={nodes}, ' if nodes > 1 else ""


class MemoryPlanCallback(_lightning.Callback, WatchedPeak):
    """Applies a memfit plan to a Lightning run and measures its first steps' peak.

    `model_attr` names the LightningModule attribute that holds the planned model,
    when the plan's module names are ambiguous inside the LightningModule.
    `on_over_budget`: `"warn"`, `"stop"` (the Trainer stops after that step) or `"raise"`.
    """

    def __init__(
        self,
        plan: Any,
        *,
        steps: int = 3,
        on_over_budget: str = "warn",
        model_attr: str | None = None,
    ):
        self.plan = plan_fields(plan)
        self.watch = PeakWatch.from_settings(self.plan, steps=steps, on_over_budget=on_over_budget)
        self.model_attr = model_attr
        self.checkpointed: list[str] = []
        """The LightningModule's module names that were checkpointed."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        trainer.accumulate_grad_batches = int(self.plan["accumulation_steps"])
        wanted = _PRECISION.get(self.plan.get("precision", "fp32"))
        if wanted and str(trainer.precision) != wanted:
            # The precision plugin is read when the strategy is set up, after this hook.
            from lightning.pytorch.plugins.precision import MixedPrecision

            device = "cuda" if trainer.strategy.root_device.type == "cuda" else "cpu"
            trainer.strategy.precision_plugin = MixedPrecision(wanted, device=device)
        state = self.plan.get("optimizer_state", "fp32")
        if state != "fp32":
            warnings.warn(
                f"the plan keeps {state} optimizer state, which a callback cannot set: "
                + (
                    f"return torchao.optim.AdamW{state} from configure_optimizers"
                    if state in ("8bit", "4bit")
                    else "plan with --no-offload"
                ),
                stacklevel=2,
            )

    def on_fit_start(self, trainer, pl_module) -> None:
        # After configure_model: the modules a LightningModule builds late exist now.
        names = [self._resolve(pl_module, name) for name in self.plan.get("checkpointed") or []]
        segments = self.plan.get("checkpoint_segments")
        if segments:
            for name in names:
                ckpt.checkpoint_segments(pl_module, name, segments)
        elif names:
            ckpt.checkpoint_modules(pl_module, names)
        self.checkpointed = names

    def on_train_start(self, trainer, pl_module) -> None:
        self.watch.begin(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx != 0:
            return
        micro = int(self.plan["micro_batch_size"])
        try:
            size = batch_size_of(batch)
        except Exception:  # a batch memfit cannot size (a custom object): nothing to check
            return
        if size > micro:
            warnings.warn(
                f"the DataLoader yields batches of {size}, the plan's micro-batches are "
                f"{micro}: build it with DataLoader(..., batch_size={micro})",
                stacklevel=2,
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # still accumulating: no optimizer step yet
        message = self.watch.step_ended()
        if message and self.watch.on_over_budget == "stop":
            trainer.should_stop = True

    def _resolve(self, pl_module: nn.Module, name: str) -> str:
        names = [n for n, _ in pl_module.named_modules()]
        if self.model_attr:
            full = f"{self.model_attr}.{name}"
            if full in names:
                return full
        if name in names:
            return name
        matches = [n for n in names if n.endswith("." + name)]
        if len(matches) == 1:
            return matches[0]
        raise PlanError(
            f"the plan checkpoints {name!r}, which this LightningModule "
            + ("has more than once" if matches else "does not have")
            + ": pass MemoryPlanCallback(plan, model_attr='<attribute holding the model>')"
        )
