"""Mixed precision: bf16 autocast (CPU and CUDA) or fp16 with a gradient scaler (CUDA).

Effect: activations saved in 16 bits, plus 16-bit copies of the weights made
during forward; master weights, gradients and optimizer state stay fp32
(Micikevicius et al. 2018). The planner measures the memory on fake tensors and
the time on this device: CPUs without bf16 instructions run autocast several
times slower, so the slowdown is timed, never assumed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from memfit.errors import TechniqueError
from memfit.measure.stopwatch import best_time
from memfit.techniques.base import LOSSY, Prediction, Technique, TechniqueConfig, Training

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, kw_only=True, slots=True)
class PrecisionConfig(TechniqueConfig):
    """Run the forward pass under 16-bit autocast (`bf16`, or `fp16` with loss scaling)."""

    technique = "precision"
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise TechniqueError(f"unknown precision {self.dtype!r}; use bf16 or fp16")

    def label(self) -> str:
        return self.dtype


class Precision(Technique):
    name = "precision"
    config_type = PrecisionConfig
    kind = LOSSY
    order = 30

    def supports(self, ctx: PlanContext) -> str | None:
        if not ctx.measurements.precision_slowdown:
            return "its slowdown on this device was not measured"
        return None

    def candidates(self, ctx: PlanContext) -> Sequence[PrecisionConfig]:
        return [PrecisionConfig(dtype=d) for d in ctx.measurements.precision_slowdown]

    def effect(self, config: PrecisionConfig, prediction: Prediction, ctx: PlanContext):
        slowdown = ctx.measurements.precision_slowdown.get(config.dtype, 1.0)
        return prediction.with_time(compute_factor=prediction.time.compute_factor * slowdown)

    def apply(self, config: PrecisionConfig, training: Training) -> None:
        device = training.settings.device
        if config.dtype == "fp16" and not str(device).startswith("cuda"):
            raise TechniqueError("fp16 training needs a CUDA device; on CPU use bf16")
        training.settings.precision = config.dtype
        if not training.fake:
            training.settings.grad_scaler = grad_scaler(config.dtype, device)
        training.applied.append(self.name)

    def notes(self, config: PrecisionConfig, ctx: PlanContext) -> list[str]:
        slowdown = ctx.measurements.precision_slowdown.get(config.dtype, 1.0)
        return [f"{config.dtype} autocast measured {slowdown:.1f}x the fp32 time on this device"]

    def contract_fields(self, config: PrecisionConfig | None, batch_size: int) -> dict[str, Any]:
        return {"precision": config.dtype if config else "fp32"}

    def plan_name(self, config: PrecisionConfig) -> str:
        return f"{config.dtype}-autocast"


def autocast(precision: str, device: str):
    if precision == "fp32":
        return nullcontext()
    if precision not in DTYPES:
        raise TechniqueError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if precision == "fp16" and device_type != "cuda":
        raise TechniqueError("fp16 training needs a CUDA device; on CPU use bf16")
    return torch.autocast(device_type=device_type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: str):
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    if precision == "fp16":
        return torch.amp.GradScaler("cuda")
    return None


@functools.lru_cache(maxsize=8)
def measured_slowdown(precision: str, device: str = "cpu", size: int = 384) -> float:
    """Time of a matmul-and-activation workload under autocast over its fp32 time, here."""
    if precision == "fp32":
        return 1.0
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev)
    b = torch.randn(size, size, device=dev)
    lin = torch.nn.Linear(size, size).to(dev)

    def work():
        x = a @ b
        return torch.nn.functional.gelu(lin(x)).sum()

    def timed(ctx) -> float:
        with ctx:  # the warm-up fills autocast's weight cache too
            return best_time(work, dev)

    with torch.no_grad():
        base = timed(nullcontext())
        low = timed(autocast(precision, device))
    return max(low / base, 0.1)
