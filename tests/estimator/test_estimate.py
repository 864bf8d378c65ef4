"""Estimates on fake tensors against real measurements and known layouts."""

import pytest
import torch
from torch import nn

from memfit import zoo
from memfit.errors import EstimateError
from memfit.estimator import estimate
from memfit.estimator.lowbit import low_bit_state_bytes
from memfit.measure.profile import profile
from memfit.workload import Workload

SMALL = [
    ("mlp", {"depth": 3, "width": 256, "inputs": 128}, 32),
    ("cnn", {}, 32),
    ("wrn-28-2", {"depth": 10}, 4),
    ("transformer", {"layers": 2, "d_model": 64, "heads": 4, "seq_len": 32, "vocab": 500}, 4),
    (
        "llama",
        {"layers": 2, "d_model": 64, "heads": 4, "hidden": 172, "seq_len": 32, "vocab": 500},
        4,
    ),
]


@pytest.mark.parametrize("name,kwargs,batch", SMALL)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_estimate_matches_the_measured_step(name, kwargs, batch, optimizer):
    w = zoo.get(name, **kwargs)
    est = estimate(w, batch, optimizer)
    real = profile(w, batch, optimizer)
    assert est.method == "estimated" and real.method == "measured"
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.03)
    assert est.peak_phase == real.peak_phase
    for category in ("parameters", "gradients", "optimizer"):
        assert est.categories[category] == pytest.approx(real.categories[category], rel=0.03)
    assert sum(est.categories.values()) == est.peak_bytes


def test_estimate_allocates_nothing_of_the_model_size():
    import psutil

    rss_before = psutil.Process().memory_info().rss
    est = estimate(zoo.get("mlp", depth=16, width=4096), 64)  # ~1 GB of parameters
    grown = psutil.Process().memory_info().rss - rss_before
    assert est.categories["parameters"] > 1e9
    assert grown < 0.2 * est.categories["parameters"]


def test_bf16_autocast_halves_activations_not_master_weights():
    w = zoo.get("transformer", layers=2, d_model=128, heads=4, seq_len=64, vocab=500)
    fp32 = estimate(w, 8, precision="fp32")
    bf16 = estimate(w, 8, precision="bf16")
    assert bf16.categories["parameters"] == fp32.categories["parameters"]
    fp32_acts = sum(r.activations for r in fp32.modules)
    bf16_acts = sum(r.activations for r in bf16.modules)
    assert bf16_acts < 0.8 * fp32_acts


def test_seq_len_override_scales_activations():
    short = estimate("zoo:transformer:layers=2,d_model=64,heads=4,seq_len=32,vocab=500", 4)
    long = estimate("zoo:transformer:layers=2,d_model=64,heads=4,seq_len=128,vocab=500", 4)
    ratio = sum(r.activations for r in long.modules) / sum(r.activations for r in short.modules)
    assert 3.5 < ratio < 4.5


def test_low_bit_state_matches_torchao_layout():
    torchao_optim = pytest.importorskip("torchao.optim")
    model = zoo.get("mlp", depth=2, width=512, inputs=100).build_model()
    params = list(model.parameters())
    from memfit.measure.bytes import tensors_bytes

    for name, cls in (("adam8bit", torchao_optim.AdamW8bit), ("adam4bit", torchao_optim.AdamW4bit)):
        opt = cls(params)
        # torchao's own constructor of each state tensor, as its first step calls it
        states = [opt._new_buffer(p, signed) for p in params for signed in (True, False)]
        real = tensors_bytes(states) + 4 * len(params)  # plus the fp32 step counters
        assert low_bit_state_bytes(params, name) == real


def test_low_bit_optimizers_shrink_the_estimate():
    w = zoo.get("mlp", depth=4, width=1024, inputs=1024)
    adam = estimate(w, 8, "adam")
    eight = estimate(w, 8, "adam8bit")
    four = estimate(w, 8, "adam4bit")
    assert eight.categories["optimizer"] < 0.3 * adam.categories["optimizer"]
    assert four.categories["optimizer"] < eight.categories["optimizer"]
    assert (
        adam.peak_bytes - eight.peak_bytes
        == adam.categories["optimizer"] - eight.categories["optimizer"]
    )


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        return h[h > 0].sum()  # output size depends on the values


def test_data_dependent_models_get_a_clear_error():
    w = Workload(
        name="dd",
        build_model=DataDependent,
        make_batch=lambda b, d="cpu": (torch.randn(b, 4), None),
        loss_fn=lambda out, _t: out,
    )
    with pytest.raises(EstimateError, match="memfit profile"):
        estimate(w, 2)


def test_unknown_optimizer_is_refused():
    with pytest.raises(EstimateError, match="adam8bit"):
        estimate(zoo.get("cnn"), 2, "lion")
