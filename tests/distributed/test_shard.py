"""FSDP2 sharding over two CPU ranks matches one process and halves model states per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from memfit.distributed import min_ranks, per_rank_bytes, setup, shard, step
from memfit.distributed.check import CONFIGS, make_model, single_process_losses
from memfit.errors import DistributedError

STEPS = 4


@pytest.fixture(scope="module")
def two_rank_reports(tmp_path_factory) -> list[dict]:
    """One torchrun launch of the self-check on two gloo ranks; its per-rank reports."""
    out = tmp_path_factory.mktemp("ranks")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", "-m", "memfit.distributed.check", "--steps", str(STEPS)]
    done = subprocess.run(
        [*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "checkpoint_accumulate"])
def test_sharded_losses_match_one_process(two_rank_reports, name):
    expected, _ = single_process_losses(CONFIGS[name], STEPS)
    for report in two_rank_reports:
        assert report["world_size"] == 2
        assert report["configs"][name]["losses"] == pytest.approx(expected, rel=1e-5)
    assert len(set(expected)) == STEPS  # the losses move: a constant would not test much


@pytest.mark.slow
def test_bf16_compute_is_in_effect_and_close(two_rank_reports):
    expected, _ = single_process_losses(CONFIGS["bf16"], STEPS)
    losses = two_rank_reports[0]["configs"]["bf16"]["losses"]
    assert losses == pytest.approx(expected, abs=0.03)
    assert max(abs(a - b) for a, b in zip(losses, expected, strict=True)) > 1e-4


@pytest.mark.slow
def test_blocks_are_checkpointed_then_sharded(two_rank_reports):
    configs = two_rank_reports[0]["configs"]
    assert configs["checkpoint_accumulate"]["checkpointed_blocks"] == 4
    assert configs["plain"]["checkpointed_blocks"] == 0
    assert all(c["sharded_modules"] == 5 for c in configs.values())  # 4 blocks + the root


@pytest.mark.slow
def test_each_rank_holds_half_the_model_states(two_rank_reports):
    _, single_bytes = single_process_losses(CONFIGS["plain"], STEPS)
    model = make_model()
    parameter_bytes = sum(p.numel() * 4 for p in model.parameters())
    predicted = per_rank_bytes(parameter_bytes, 0, 2 * parameter_bytes, 2)
    for report in two_rank_reports:
        measured = report["configs"]["plain"]["model_state_bytes"]
        assert measured == pytest.approx(single_bytes / 2, rel=0.02)
        assert measured == pytest.approx(predicted.parameters + predicted.optimizer, rel=0.02)


def test_per_rank_bytes_divides_states_and_adds_the_gathered_block():
    one = per_rank_bytes(4000, 4000, 8000, 1, largest_block_parameter_bytes=300)
    assert one.total == 16000 and one.gathered == 0
    three = per_rank_bytes(
        4000, 4000, 8000, 3, largest_block_parameter_bytes=300, largest_block_gradient_bytes=300
    )
    assert (three.parameters, three.optimizer, three.gathered) == (1334, 2667, 600)
    with pytest.raises(DistributedError):
        per_rank_bytes(1, 1, 1, 0)


def test_min_ranks_is_the_smallest_that_fits():
    sizes = dict(parameter_bytes=10**9, gradient_bytes=10**9, optimizer_bytes=2 * 10**9)
    block = dict(largest_block_parameter_bytes=5 * 10**7, largest_block_gradient_bytes=5 * 10**7)
    budget = 10**9
    n = min_ranks(**sizes, budget_bytes=budget, **block)
    assert n is not None and n > 1
    assert per_rank_bytes(**sizes, ranks=n, **block).total <= budget
    assert per_rank_bytes(**sizes, ranks=n - 1, **block).total > budget
    assert min_ranks(**sizes, budget_bytes=4 * 10**9) == 1
    # The gathered block and the unsharded bytes alone exceed the budget: no N helps.
    assert min_ranks(**sizes, budget_bytes=budget, unsharded_bytes=budget, **block) is None


def test_setup_outside_torchrun_says_how_to_launch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DistributedError, match="torchrun"):
        setup("cpu")


def test_shard_needs_a_process_group():
    with pytest.raises(DistributedError, match="setup"):
        shard(make_model())


def test_step_accumulates_to_the_full_batch_gradient_without_a_group():
    whole, split = make_model(), make_model()
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    for model, steps in ((whole, 1), (split, 4)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        step(model, opt, x, y, torch.nn.functional.cross_entropy, accumulation_steps=steps)
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(DistributedError, match="equal"):
        step(whole, opt, x, y, torch.nn.functional.cross_entropy, accumulation_steps=3)
