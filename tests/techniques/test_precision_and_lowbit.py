import pytest
import torch

from memfit import zoo
from memfit.errors import TechniqueError
from memfit.techniques import lowbit, precision


def test_bf16_autocast_keeps_fp32_master_weights_and_gradients():
    w = zoo.get("mlp", depth=2, width=64, inputs=32)
    model = w.build_model()
    with precision.autocast("bf16", "cpu"):
        out = model(torch.randn(4, 32))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters()
    )


def test_fp16_needs_cuda():
    with pytest.raises(TechniqueError, match="CUDA"):
        precision.autocast("fp16", "cpu")


def test_slowdown_is_measured_not_assumed():
    assert precision.measured_slowdown("fp32") == 1.0
    ratio = precision.measured_slowdown("bf16", "cpu")
    assert ratio > 0.1 and ratio == precision.measured_slowdown("bf16", "cpu")  # cached


def test_low_bit_apply_keeps_groups_and_hyperparameters():
    pytest.importorskip("torchao.optim")
    model = zoo.get("mlp", depth=2, width=64, inputs=32).build_model()
    opt = torch.optim.AdamW(
        [
            {"params": model.blocks.parameters(), "lr": 0.01},
            {"params": model.head.parameters(), "lr": 0.001},
        ],
        weight_decay=0.1,
    )
    low = lowbit.apply(opt, "8bit")
    assert type(low).__name__ == "AdamW8bit"
    assert [float(g["lr"]) for g in low.param_groups] == pytest.approx([0.01, 0.001])
    assert all(g["weight_decay"] == 0.1 for g in low.param_groups)
    assert lowbit.apply(opt, "fp32") is opt


def test_low_bit_refuses_optimizers_without_a_low_bit_twin():
    model = torch.nn.Linear(4, 4)
    with pytest.raises(TechniqueError, match="Adam"):
        lowbit.apply(torch.optim.SGD(model.parameters(), lr=0.1), "8bit")
