"""Micro-batching: the accumulated gradient is the full batch's gradient."""

import copy

import pytest
import torch
import torch.nn.functional as F

from memfit import zoo
from memfit.errors import TechniqueError
from memfit.techniques.accumulation import split_batch
from memfit.train import PlannedStep


def _deltas(micro: int | None, batch_size: int = 12):
    torch.manual_seed(0)
    model = zoo.get("mlp", depth=3, width=32, inputs=16).build_model()
    start = copy.deepcopy(model.state_dict())
    x = torch.randn(batch_size, 16)
    y = torch.randint(0, 10, (batch_size,))
    # SGD with lr 1 and no momentum: the parameter change is exactly minus the gradient.
    step = PlannedStep(
        model, torch.optim.SGD(model.parameters(), lr=1.0), F.cross_entropy, micro_batch_size=micro
    )
    loss = step((x, y))
    return loss, {k: start[k] - v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("micro", [1, 3, 4, 5])
def test_accumulated_gradient_equals_full_batch(micro):
    full_loss, full = _deltas(None)
    loss, accumulated = _deltas(micro)
    assert loss == pytest.approx(full_loss, rel=1e-5)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], rtol=1e-4, atol=1e-6)


def test_split_batch_handles_nested_batches_and_uneven_tails():
    batch = ({"a": torch.arange(10), "b": torch.ones(10, 2)}, torch.arange(10))
    parts = split_batch(batch, 4)
    assert [n for _, n in parts] == [4, 4, 2]
    assert torch.equal(parts[2][0][0]["a"], torch.tensor([8, 9]))


def test_split_batch_refuses_disagreeing_batch_dimensions():
    with pytest.raises(TechniqueError, match="batch dimension"):
        split_batch((torch.ones(4, 2), torch.ones(5)), 2)


def test_micro_batches_use_less_memory_than_the_full_batch():
    w = zoo.get("mlp", depth=4, width=512, inputs=512)
    peaks = {}
    for micro in (None, 128):
        torch.manual_seed(0)
        model = w.build_model()
        step = PlannedStep(model, torch.optim.Adam(model.parameters()), w.loss_fn, micro)
        step(w.make_batch(2048, "cpu"))  # optimizer state exists from here on
        peaks[micro] = step.measure(w.make_batch(2048, "cpu"))[1]
    assert peaks[128] < 0.7 * peaks[None]
