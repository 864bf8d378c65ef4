"""The optimizer a user passes to `plan.apply` survives: its parameter groups, their
hyper-parameters, and a learning-rate scheduler built on it, whatever the plan replaces."""

from __future__ import annotations

import importlib.util
import textwrap
import warnings

import pytest
import torch

from memfit import zoo
from memfit.planning import PlanSettings, plan
from memfit.techniques.bf16_weights import BF16WeightsConfig
from memfit.techniques.lowbit import LowBitStateConfig
from memfit.techniques.offload import OffloadStateConfig
from memfit.techniques.optimizer_in_backward import OptimizerInBackwardConfig

WORKLOAD = zoo.get("mlp", depth=2, width=128, inputs=64)
BATCH = 16
CONFIGS = {
    "8bit": LowBitStateConfig(bits=8),
    "4bit": LowBitStateConfig(bits=4),
    "offload": OffloadStateConfig(max_resident_bytes=8 * 2**20),
    "in-backward": OptimizerInBackwardConfig(),
    "bf16-weights": (BF16WeightsConfig(),),
    "bf16-weights+8bit": (LowBitStateConfig(bits=8), BF16WeightsConfig()),
    "bf16-weights+4bit+in-backward": (
        LowBitStateConfig(bits=4),
        BF16WeightsConfig(),
        OptimizerInBackwardConfig(),
    ),
    "plain": None,
}


def _optimizer(model):
    # Two groups with their own learning rates and weight decay, as fine-tuning scripts do.
    return torch.optim.AdamW(
        [
            {"params": model.blocks.parameters(), "lr": 1e-2, "weight_decay": 0.1},
            {"params": model.head.parameters(), "lr": 1e-3, "weight_decay": 0.0},
        ]
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_groups_hyperparameters_and_scheduler_survive_apply(name):
    if ("bit" in name or "bf16" in name) and importlib.util.find_spec("torchao") is None:
        pytest.skip("low-bit state and bf16 weights need torchao")
    base = plan(WORKLOAD, "1TB", batch_size=BATCH, reserve_bytes=0)
    config = CONFIGS[name]
    configs = config if isinstance(config, tuple) else (config,) if config else ()
    the_plan = base.with_settings(PlanSettings(BATCH, configs))
    torch.manual_seed(0)
    model = WORKLOAD.build_model()
    optimizer = _optimizer(model)
    # Full rate for the first update, then zero: a replacement optimizer that did not read
    # the user's groups would keep moving the weights.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1.0 if epoch < 1 else 0.0
    )
    step = the_plan.apply(model, optimizer)

    assert [float(g["lr"]) for g in optimizer.param_groups] == pytest.approx([1e-2, 1e-3])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    if configs:
        assert step.optimizer is not optimizer  # replaced, sharing the user's groups
        assert step.optimizer.param_groups[0] is optimizer.param_groups[0]

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
        step(WORKLOAD.make_batch(BATCH, "cpu"))
        scheduler.step()
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(before[k], moved[k]) for k in before)
    assert [float(g["lr"]) for g in step.optimizer.param_groups] == [0.0, 0.0]
    step(WORKLOAD.make_batch(BATCH, "cpu"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, moved[key], rtol=0, atol=0, msg=key)


RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from memfit import zoo
    from memfit.distributed import setup, teardown
    from memfit.planning import plan

    setup("cpu")
    rank = dist.get_rank()
    workload = zoo.get("mlp", depth=2, width=128, inputs=64)
    the_plan = plan(workload, "1TB", batch_size=8, reserve_bytes=0, nodes=2)
    torch.manual_seed(0)
    model = workload.build_model()
    opt = torch.optim.AdamW([
        {"params": model.blocks.parameters(), "lr": 1e-2, "weight_decay": 0.1},
        {"params": model.head.parameters(), "lr": 1e-3, "weight_decay": 0.0},
    ])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 if e < 1 else 0.0)
    step = the_plan.apply(model, opt)
    torch.manual_seed(1)
    step(workload.make_batch(8, "cpu"))
    sched.step()
    after_first = [p.detach().to_local().clone() for p in model.parameters()]
    step(workload.make_batch(8, "cpu"))
    unchanged = all(torch.equal(a, p.detach().to_local()) for a, p in zip(after_first, model.parameters()))
    sharded = all(type(p).__name__ == "DTensor" for g in opt.param_groups for p in g["params"])
    if rank == 0:
        json.dump({
            "groups": len(opt.param_groups),
            "lr": [float(g["lr"]) for g in opt.param_groups],
            "weight_decay": [g["weight_decay"] for g in opt.param_groups],
            "unchanged_at_lr_0": unchanged,
            "groups_hold_shards": sharded,
            "same_optimizer": step.optimizer is opt,
        }, open(sys.argv[1], "w"))
    teardown()
""")


@pytest.mark.slow
def test_the_users_optimizer_survives_sharding(two_ranks):
    report = two_ranks(RANK_SCRIPT)
    assert report == {
        "groups": 2,
        "lr": [0.0, 0.0],
        "weight_decay": [0.1, 0.0],
        "unchanged_at_lr_0": True,
        "groups_hold_shards": True,
        "same_optimizer": True,
    }
