"""The tracker's bookkeeping on small, hand-checkable steps."""

import numpy as np
import pytest
import torch
from torch import nn

from memfit import zoo
from memfit.measure.bytes import module_bytes, tensors_bytes
from memfit.measure.profile import profile
from memfit.measure.tracker import MemoryTracker


def _exact_param_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("name,batch", [("mlp", 16), ("cnn", 8), ("wrn-28-2", 2)])
def test_parameter_bytes_are_numel_times_element_size(name, batch):
    w = zoo.get(name, **({"depth": 3, "width": 64} if name == "mlp" else {}))
    p = profile(w, batch)
    expected = _exact_param_bytes(w.build_model())
    assert p.categories["parameters"] == expected
    assert p.parameter_bytes == expected


def test_adam_state_is_twice_the_parameters_and_momentum_sgd_once():
    w = zoo.get("mlp", depth=3, width=64, inputs=32)
    params = _exact_param_bytes(w.build_model())
    adam = profile(w, 16, "adam")
    sgd = profile(w, 16, "sgd")
    # Adam also keeps one 4-byte step counter per parameter tensor.
    n_tensors = len(list(w.build_model().parameters()))
    assert adam.categories["optimizer"] == 2 * params + 4 * n_tensors
    assert sgd.categories["optimizer"] == params


def test_gradients_equal_parameters_when_the_step_peaks():
    # An MLP's peak is at the optimizer step, when every gradient is alive.
    p = profile(zoo.get("mlp", depth=4, width=256, inputs=256), 8, "adam")
    assert p.peak_phase == "optimizer_step"
    assert p.categories["gradients"] == p.categories["parameters"]


def test_activations_grow_linearly_with_batch_size():
    w = zoo.get("cnn", channels=16)
    sizes = [8, 16, 32, 64]
    acts = [sum(r.activations for r in profile(w, b).modules) for b in sizes]
    slope, intercept = np.polyfit(sizes, acts, 1)
    predicted = np.polyval([slope, intercept], sizes)
    r2 = 1 - np.sum((np.array(acts) - predicted) ** 2) / np.sum((acts - np.mean(acts)) ** 2)
    assert slope > 0 and r2 > 0.99


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_categories_add_up_to_the_peak(name):
    kwargs = (
        {"layers": 1, "d_model": 64, "heads": 2, "seq_len": 32, "vocab": 100}
        if name == "transformer"
        else {}
    )
    p = profile(zoo.get(name, **kwargs), 4)
    assert sum(p.categories.values()) == p.peak_bytes
    assert all(v >= 0 for v in p.categories.values())
    assert p.peak_bytes == max(p.phase_peaks.values())


def test_shared_storages_are_counted_once():
    base = torch.zeros(1000)
    views = [base[:500], base[500:], base.view(10, 100)]
    assert tensors_bytes([base, *views]) == 4000
    tracker = MemoryTracker()
    tracker.register([base, *views], "other")
    assert tracker.current_bytes == 4000

    # tied weights: the transformer's embedding and output share one storage
    model = zoo.get("transformer", layers=1, d_model=32, heads=2, seq_len=8, vocab=50).build_model()
    p = profile(zoo.get("transformer", layers=1, d_model=32, heads=2, seq_len=8, vocab=50), 2)
    assert p.categories["parameters"] == module_bytes(model)
    assert module_bytes(model) < sum(t.numel() * 4 for t in model.state_dict().values())


def test_in_place_ops_and_views_allocate_nothing_new():
    x = torch.ones(256, 256)
    tracker = MemoryTracker()
    tracker.register([x], "other")
    with tracker.track():
        x.add_(1)
        x.mul_(2)
        y = x.t()
        z = x[:10]
        w = x + 1  # a real new tensor
    assert tracker.result().peak_bytes == 2 * x.numel() * 4
    del y, z, w


def test_freed_storages_leave_the_count():
    tracker = MemoryTracker()
    with tracker.track():
        a = torch.ones(1000)
        b = a * 2
        del a
    assert tracker.current_bytes == 4000
    assert tracker.result().peak_bytes == 8000
    del b
    assert tracker.current_bytes == 0


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        return {"logits": self.b(h), "hidden": h}, h


def test_models_returning_tuples_and_dicts_are_profiled():
    from memfit.workload import Workload

    w = Workload(
        name="tuple",
        build_model=TupleModel,
        make_batch=lambda b, d="cpu": (torch.randn(b, 8), torch.randint(0, 3, (b,))),
        loss_fn=lambda out, y: nn.functional.cross_entropy(out[0]["logits"], y),
    )
    p = profile(w, 4)
    assert p.categories["parameters"] == _exact_param_bytes(TupleModel())
    assert {r.name for r in p.modules} >= {"a", "b"}


def test_activations_are_attributed_to_the_module_that_saved_them():
    p = profile(zoo.get("mlp", depth=2, width=512, inputs=512), 64)
    rows = {r.name: r for r in p.modules}
    # ReLU saves its 64x512 fp32 output for backward
    assert rows["blocks.0.act"].activations == 64 * 512 * 4
    assert rows["blocks.0.linear"].parameters == (512 * 512 + 512) * 4
