"""A memfit plan as TrainingArguments, and a real Trainer run checked against its budget."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from transformers.training_args import OptimizerNames  # noqa: E402

from memfit.errors import OutOfBudgetError, PlanError  # noqa: E402
from memfit.integrations.transformers import (  # noqa: E402
    MemoryBudgetCallback,
    checkpointing_field,
    training_arguments,
    training_arguments_code,
)

PLAN = {
    "micro_batch_size": 4,
    "accumulation_steps": 8,
    "batch_size": 32,
    "checkpointed": ["transformer.h.0", "transformer.h.1"],
    "precision": "fp32",
    "optimizer": "adam",
    "optimizer_state": "fp32",
    "budget_bytes": 16 * 2**30,
    "reserve_bytes": 600_000_000,
    "fits": True,
    "predicted_peak_bytes": 9_000_000_000,
}


@pytest.mark.parametrize(
    "change,expected",
    [
        ({}, {"optim": "adamw_torch", "checkpointing": True}),
        ({"precision": "bf16"}, {"bf16": True}),
        ({"precision": "fp16"}, {"fp16": True}),
        ({"optimizer_state": "8bit"}, {"optim": "adamw_torch_8bit"}),
        ({"optimizer_state": "4bit"}, {"optim": "adamw_torch_4bit"}),
        ({"checkpointed": []}, {"checkpointing": False}),
        ({"optimizer": "sgd"}, {"optim": "sgd"}),
        ({"nodes": 2}, {"fsdp": "full_shard"}),
    ],
)
def test_plan_settings_become_training_arguments(change, expected):
    fields = training_arguments({**PLAN, **change})
    assert fields["per_device_train_batch_size"] == 4
    assert fields["gradient_accumulation_steps"] == 8
    for key, value in expected.items():
        assert fields[checkpointing_field() if key == "checkpointing" else key] == value
    # Every optim name is one the installed transformers knows.
    assert fields["optim"] in {member.value for member in OptimizerNames}
    from transformers import TrainingArguments

    TrainingArguments(
        output_dir="unused", use_cpu=True, **{k: v for k, v in fields.items() if k != "fp16"}
    )


def test_an_offloading_plan_is_refused_with_what_to_do():
    with pytest.raises(PlanError, match="--no-offload"):
        training_arguments({**PLAN, "optimizer_state": "offload"})


def test_the_emitted_code_builds_those_arguments(tmp_path):
    code = training_arguments_code({**PLAN, "precision": "bf16", "budget_device": "cpu"}, "hf:gpt2")
    namespace = {}
    exec(compile(code.split("trainer = Trainer(")[0], "emitted", "exec"), namespace)
    args = namespace["args"]
    assert args.per_device_train_batch_size == 4 and args.gradient_accumulation_steps == 8
    assert getattr(args, checkpointing_field()) and args.bf16
    assert namespace["budget_check"].watch.budget_bytes == PLAN["budget_bytes"]


def test_raise_mode_raises_out_of_budget():
    callback = MemoryBudgetCallback(budget=1, on_over_budget="raise")
    callback.watch.begin("cpu")
    with pytest.raises(OutOfBudgetError, match="over the"):
        callback.watch.step_ended()


@pytest.mark.slow
def test_a_real_trainer_run_stays_inside_the_plans_budget(tmp_path):
    script = Path(__file__).with_name("trainer_run.py")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The plan needed techniques, and the Trainer took them from TrainingArguments.
    assert result["fields"]["gradient_accumulation_steps"] > 1 and result["fields"]["use_cpu"]
    assert result["steps"] == 3 and result["steps_measured"] == 3
    # The OS's reading of the process's peak (RSS) during those steps is inside the budget,
    # and above what the process held before it had a model (its runtime).
    assert result["runtime_bytes"] < result["measured_peak_bytes"] <= result["budget_bytes"]
    assert not result["over_budget"]
    # A budget below what the process already holds: the run stops after the first step.
    assert result["tight_over"] and result["tight_stopped_at"] == 1
