"""A plan made for two ranks, applied with plan.apply under torchrun, trains like one process."""

from __future__ import annotations

import textwrap

import pytest
import torch

from memfit import zoo
from memfit.errors import PlanError
from memfit.optim import make_optimizer
from memfit.planner import Plan, PlanSettings, plan

RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from memfit import zoo
    from memfit.distributed import setup, teardown
    from memfit.optim import make_optimizer
    from memfit.planner import plan
    from memfit.techniques.accumulation import MicroBatchConfig
    from memfit.techniques.checkpointing import CheckpointConfig

    setup("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    workload = zoo.get("mlp", depth=4, width=64, inputs=32)
    # Plan on rank 0 and share it: every rank must apply the same plan.
    box = [plan(workload, "2GB", batch_size=8, reserve_bytes=0, nodes=world)
           if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    the_plan = box[0]
    # Force micro-batches and checkpointing on top of the sharding the plan chose.
    the_plan = the_plan.with_settings(the_plan.settings.replace(
        MicroBatchConfig(micro_batch_size=4), CheckpointConfig(modules=("blocks.1", "blocks.2"))))
    torch.manual_seed(0)
    model = workload.build_model()
    step = the_plan.apply(model, make_optimizer("sgd", model.parameters()), workload.loss_fn)
    losses = []
    for i in range(3):
        torch.manual_seed(100 + i)
        x, y = workload.make_batch(8 * world, "cpu")
        local = (x[rank * 8:(rank + 1) * 8], y[rank * 8:(rank + 1) * 8])
        loss = torch.tensor(float(step(local)))
        dist.all_reduce(loss)
        losses.append(float(loss) / world)
    if rank == 0:
        json.dump({"losses": losses, "nodes": the_plan.nodes}, open(sys.argv[1], "w"))
    teardown()
""")


@pytest.mark.slow
def test_two_rank_plan_matches_one_process(two_ranks):
    report = two_ranks(RANK_SCRIPT)

    workload = zoo.get("mlp", depth=4, width=64, inputs=32)
    torch.manual_seed(0)
    model = workload.build_model()
    opt = make_optimizer("sgd", model.parameters())
    expected = []
    for i in range(3):
        torch.manual_seed(100 + i)
        x, y = workload.make_batch(16, "cpu")
        loss = workload.loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        expected.append(loss.item())
    assert report["nodes"] == 2
    assert report["losses"] == pytest.approx(expected, rel=1e-4)


def test_a_sharded_plan_needs_the_process_group():
    w = zoo.get("mlp", depth=2, width=16, inputs=8)
    p = plan(w, "1GB", batch_size=4, reserve_bytes=0, nodes=2)
    model = w.build_model()
    with pytest.raises(PlanError, match="torchrun"):
        p.apply(model, make_optimizer("adam", model.parameters()))
    assert isinstance(p, Plan) and isinstance(p.settings, PlanSettings)
