"""`memfit plan`: the JSON contract, --verify, and the over-budget exit code."""

import dataclasses
import json

import pytest

from memfit.cli import main
from memfit.cli import plan as plan_cli

MODEL = "zoo:transformer:layers=2,d_model=128,heads=4,seq_len=64,vocab=300"


def test_plan_json_has_the_contract_keys_and_verify_measures(capsys):
    rc = main(
        [
            "plan",
            MODEL,
            "--budget",
            "40MB",
            "--reserve",
            "0",
            "--batch-size",
            "32",
            "--exact",
            "--verify",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    for key in (
        "budget_bytes",
        "fits",
        "baseline_peak_bytes",
        "predicted_peak_bytes",
        "micro_batch_size",
        "accumulation_steps",
        "checkpointed",
        "precision",
        "optimizer_state",
        "predicted_time_overhead",
        "techniques",
        "measured_peak_bytes",
    ):
        assert key in data
    assert data["fits"] and data["budget_bytes"] == 40 * 10**6
    assert data["baseline_peak_bytes"] > data["budget_bytes"]
    assert data["measured_peak_bytes"] <= data["budget_bytes"]
    assert data["precision"] == "fp32"


def test_verify_exits_3_when_the_measured_peak_is_over_budget(monkeypatch, capsys):
    from memfit import verification

    real = verification.verify

    def over_budget(the_plan, workload, **kwargs):
        # The real measurement, with the process's peak then read as a terabyte.
        measured = real(the_plan, workload, steps=1)
        return dataclasses.replace(measured, process_peak_bytes=10**12)

    monkeypatch.setattr(verification, "verify", over_budget)
    rc = main(["plan", MODEL, "--budget", "1GB", "--reserve", "0", "--batch-size", "4", "--verify"])
    assert rc == plan_cli.EXIT_OVER_BUDGET
    assert "OVER" in capsys.readouterr().out


def test_nodes_shard_model_states_per_rank(capsys):
    args = [
        "plan",
        "zoo:mlp:depth=16,width=1024,inputs=1024",
        "--budget",
        "220MB",
        "--reserve",
        "0",
        "--batch-size",
        "8",
        "--exact",
        "--no-offload",
        "--json",
    ]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert main([*args, "--nodes", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert not one["fits"] and one["min_nodes"] == 2
    assert two["fits"] and two["nodes"] == 2
    # Model states dominate this MLP: two ranks hold a little over half of the plain step.
    assert two["predicted_peak_bytes"] < 0.6 * one["baseline_peak_bytes"]


def test_precision_is_the_planners_choice():
    with pytest.raises(SystemExit):
        main(["plan", MODEL])  # --budget is required
    assert main(["plan", MODEL, "--budget", "1GB", "--precision", "bf16"]) == 2
