"""Building on fake tensors: value-reading init made harmless, real failures explained."""

import textwrap

import pytest
import torch
from torch import nn

from memfit import estimate, profile
from memfit.errors import EstimateError
from memfit.estimator.fake_build import harmless_init
from memfit.workload import Workload


class TruncNormalNet(nn.Module):
    """Init as vision transformers do it: trunc_normal_ redraws until no value is out of range."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Parameter(torch.empty(1, 16, 32))
        self.body = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 10))
        nn.init.trunc_normal_(self.embed, std=0.02)
        for layer in self.body:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)

    def forward(self, x):
        return self.body(x + self.embed).mean(1)


def _workload(build) -> Workload:
    return Workload(
        name="net",
        build_model=build,
        make_batch=lambda b, d="cpu": (
            torch.randn(b, 16, 32, device=d),
            torch.randint(0, 10, (b,), device=d),
        ),
        loss_fn=lambda out, y: nn.functional.cross_entropy(out, y),
    )


def test_value_reading_init_does_not_stop_an_estimate():
    workload = _workload(TruncNormalNet)
    estimated = estimate(workload, batch_size=8, optimizer="sgd")
    measured = profile(workload, batch_size=8, optimizer="sgd")
    numel = 16 * 32 + (32 * 64 + 64) + (64 * 10 + 10)
    assert estimated.categories["parameters"] == numel * 4
    assert estimated.peak_bytes == measured.peak_bytes


def test_harmless_init_is_undone_and_leaves_real_init_alone():
    original = nn.init.trunc_normal_
    with harmless_init():
        assert nn.init.trunc_normal_ is not original
    assert nn.init.trunc_normal_ is original
    torch.manual_seed(0)
    layer = TruncNormalNet()
    assert layer.embed.abs().max() <= 2.0 and layer.embed.std() > 0.01  # really initialised


class ReadsAValueWhileBuilding(nn.Module):
    def __init__(self):
        super().__init__()
        widths = torch.linspace(8, 32, 3)
        # A width computed from tensor values: fake tensors have none to give.
        self.layer = nn.Linear(int(widths[1].item()), 4)

    def forward(self, x):
        return self.layer(x)


def test_a_model_that_cannot_build_on_fake_tensors_names_the_cause():
    with pytest.raises(EstimateError) as info:
        estimate(_workload(ReadsAValueWhileBuilding), batch_size=2)
    message = str(info.value)
    assert "building the model" in message
    assert "_local_scalar_dense" in message and "reads a tensor's value" in message
    assert "test_fake_build.py" in message and "__init__" in message
    assert "\n" not in message


def test_memfit_debug_prints_the_traceback(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "bad.py"
    path.write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        def net():
            width = int(torch.tensor([8.0]).sum().item())
            return nn.Linear(width, 4)

        class Late(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = nn.Linear(8, 4)
                self.width = int(torch.ones(1).sum().item())

            def forward(self, x):
                return self.inner(x)

        def late():
            return Late()
    """)
    )
    command = [sys.executable, "-m", "memfit", "estimate", f"{path}:late", "--input-shape", "8"]
    quiet = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "MEMFIT_DEBUG": ""}
    )
    assert quiet.returncode == 2
    assert quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    assert "building the model" in quiet.stderr and "bad.py" in quiet.stderr
    loud = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "MEMFIT_DEBUG": "1"}
    )
    assert loud.returncode == 2 and "Traceback" in loud.stderr
