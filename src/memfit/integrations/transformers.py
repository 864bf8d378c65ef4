"""memfit plans inside Hugging Face `Trainer`: the `TrainingArguments` a plan implies, and a check.

`training_arguments(plan)` gives the fields (per-device batch, accumulation,
gradient checkpointing, bf16/fp16, `optim` for compact optimizer state, spelled as
the installed transformers spells it); `training_arguments_code(plan)` writes them
as Python to paste. `MemoryBudgetCallback` measures the peak of the first steps of a
real run and warns, stops the run, or raises when it is over the budget.

A plan is read through its JSON dictionary (`plan.to_dict()`, or the output of
`memfit plan ... --json`), so a plan made elsewhere works as well.

    >>> plan = {"micro_batch_size": 4, "accumulation_steps": 8, "checkpointed": ["h.0"],
    ...         "precision": "bf16", "optimizer_state": "fp32", "optimizer": "adamw",
    ...         "budget_bytes": 16 * 2**30, "batch_size": 32}
    >>> fields = training_arguments(plan)
    >>> fields["per_device_train_batch_size"], fields["gradient_accumulation_steps"]
    (4, 8)
    >>> fields[checkpointing_field()], fields["bf16"], fields["optim"]
    (True, True, 'adamw_torch')
"""

from __future__ import annotations

from typing import Any

from memfit.budget import Budget, format_bytes
from memfit.errors import PlanError, require
from memfit.integrations._code import python_value
from memfit.integrations._peak import PeakWatch, WatchedPeak, plan_fields

_transformers = require("transformers", "hf")

__all__ = [
    "MemoryBudgetCallback",
    "training_arguments",
    "training_arguments_code",
    "checkpointing_field",
]

# `optim` names, in order of preference, for each optimizer-state setting. memfit's
# low-bit states follow torchao's layout, so its names come first; bitsandbytes' after.
_OPTIM_NAMES = {
    "8bit": ("adamw_torch_8bit", "adamw_bnb_8bit", "adamw_8bit"),
    "4bit": ("adamw_torch_4bit",),
}
_PLAIN_OPTIM = {"adam": "adamw_torch", "adamw": "adamw_torch", "sgd": "sgd"}


def training_arguments(plan: Any) -> dict[str, Any]:
    """The `TrainingArguments` fields that carry out `plan` (a Plan or its dictionary)."""
    data = plan_fields(plan)
    checkpointing = checkpointing_field()
    fields: dict[str, Any] = {
        "per_device_train_batch_size": int(data["micro_batch_size"]),
        "gradient_accumulation_steps": int(data["accumulation_steps"]),
        checkpointing: bool(data.get("checkpointed")),
    }
    if data.get("budget_device") == "cpu":
        fields["use_cpu"] = True  # a budget of RAM: train on the CPU even where a GPU is
    if fields[checkpointing]:
        # memfit checkpoints without the reentrant variant (which saves nothing when a
        # block's input needs no gradient); Trainer's default differs between versions.
        fields[f"{checkpointing}_kwargs"] = {"use_reentrant": False}
    precision = data.get("precision", "fp32")
    if precision == "bf16":
        fields["bf16"] = True
    elif precision == "fp16":
        fields["fp16"] = True
    if int(data.get("nodes") or 1) > 1:
        # The plan shards model states over its ranks (FSDP2 in memfit); Trainer's FSDP
        # full_shard is the same split. Launch with torchrun, one process per rank.
        fields["fsdp"] = "full_shard"
    state = data.get("optimizer_state", "fp32")
    if state == "offload":
        raise PlanError(
            "this plan offloads optimizer state to disk, which TrainingArguments cannot say; "
            "plan with --no-offload, or give a larger budget"
        )
    if data.get("activation_offload"):
        raise PlanError(
            "this plan keeps activations in host memory, which TrainingArguments cannot say; "
            "run it with plan.apply (memfit's own step), or give a larger budget"
        )
    if data.get("optimizer_in_backward"):
        raise PlanError(
            "this plan updates each parameter inside backward, which TrainingArguments cannot "
            "say; run it with plan.apply (memfit's own step), or give a larger budget"
        )
    fields["optim"] = (
        optim_name(state)
        if state in _OPTIM_NAMES
        else _PLAIN_OPTIM.get(data.get("optimizer"), "adamw_torch")
    )
    return fields


def checkpointing_field() -> str:
    """`activation_checkpointing` where the installed transformers has it (5.x), else
    `gradient_checkpointing`: the same setting, renamed."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )


def optim_name(state: str) -> str:
    """The `optim` value for `8bit` / `4bit` state in the installed transformers."""
    preferred = _OPTIM_NAMES[state]
    from transformers.training_args import OptimizerNames

    known = {member.value for member in OptimizerNames}
    for name in preferred:
        if name in known:
            return name
    raise PlanError(
        f"the installed transformers has no {state} AdamW ({', '.join(preferred)}); "
        "upgrade transformers, or plan with --exact"
    )


def training_arguments_code(plan: Any, model: str = "") -> str:
    """Python that builds the plan's `TrainingArguments` and its budget check, to paste."""
    data = plan_fields(plan)
    fields = training_arguments(data)
    lines = [*_header(data, model), "from transformers import Trainer, TrainingArguments", ""]
    lines.append("from memfit.integrations.transformers import MemoryBudgetCallback")
    lines.append("")
    lines.append("args = TrainingArguments(")
    lines.append('    output_dir="out",')
    for key, value in fields.items():
        lines.append(f"    {key}={python_value(value)},")
    lines.append(")")
    lines.append(
        "# Warns (or stops, on_over_budget='stop') when the first steps' measured peak "
        "is over the budget."
    )
    lines.append(
        f"budget_check = MemoryBudgetCallback(budget={int(data['budget_bytes'])}, "
        f"reserve_bytes={int(data.get('reserve_bytes') or 0)})"
    )
    lines.append("# model and train_dataset are yours:")
    lines.append(
        "trainer = Trainer(model=model, args=args, train_dataset=train_dataset, "
        "callbacks=[budget_check])"
    )
    lines += _notes(data, fields)
    return "\n".join(lines) + "\n"


def _header(data: dict[str, Any], model: str) -> list[str]:
    fits = "fits" if data.get("fits", True) else "does NOT fit"
    peak = data.get("predicted_peak_bytes")
    head = f"# memfit plan{f' for {model}' if model else ''}: {fits} {format_bytes(data['budget_bytes'])}"
    if peak:
        head += f", predicted peak {format_bytes(peak)}"
    overhead = data.get("predicted_time_overhead")
    if overhead:
        head += f", about {overhead:+.0%} step time"
    return [head]


def _notes(data: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    notes = []
    effective = fields["per_device_train_batch_size"] * fields["gradient_accumulation_steps"]
    if data.get("batch_size") and effective != data["batch_size"]:
        notes.append(
            f"# Trainer's batch is {effective} (equal micro-batches), the plan's {data['batch_size']}."
        )
    if data.get("checkpointed"):
        notes.append(
            f"# The plan checkpoints {len(data['checkpointed'])} module(s); Trainer checkpoints "
            "every layer: less memory, a little more time."
        )
    if "fsdp" in fields:
        notes.append(
            f"# Sharded over {data['nodes']} ranks: launch with "
            f"`torchrun --nproc-per-node {data['nodes']} train.py` (or --nnodes for machines)."
        )
    if data.get("optimizer") == "sgd" and fields["optim"] == "sgd":
        notes.append("# Trainer's sgd keeps no momentum: less memory than the plan counted.")
    return notes


class MemoryBudgetCallback(_transformers.TrainerCallback, WatchedPeak):
    """A `TrainerCallback` that measures the first steps' peak and acts when it is over budget.

    `MemoryBudgetCallback(plan)` takes the budget from a plan (or its dictionary);
    `MemoryBudgetCallback(budget="12GB")` from a size or preset. `on_over_budget` is
    `"warn"` (a warning, training goes on), `"stop"` (the run stops after that step,
    with the message logged) or `"raise"` (OutOfBudgetError). After training,
    `measured_peak_bytes` and `summary()` say what was measured.
    """

    def __init__(
        self,
        plan: Any = None,
        *,
        budget: Budget | str | int | None = None,
        reserve_bytes: int = 0,
        steps: int = 3,
        on_over_budget: str = "warn",
    ):
        self.watch = PeakWatch.from_settings(
            plan, budget, steps=steps, on_over_budget=on_over_budget
        )
        if plan is None:
            self.watch.reserve_bytes = reserve_bytes

    def on_train_begin(self, args, state, control, **kwargs):
        self.watch.begin(args.device)

    def on_step_end(self, args, state, control, **kwargs):
        message = self.watch.step_ended()
        if message and self.watch.on_over_budget == "stop":
            control.should_training_stop = True
        return control
