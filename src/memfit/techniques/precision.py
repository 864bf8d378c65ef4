"""Mixed precision: bf16 autocast (CPU and CUDA) or fp16 with a gradient scaler (CUDA).

Effect: activations saved in 16 bits, plus 16-bit copies of the weights made
during forward; master weights, gradients and optimizer state stay fp32
(Micikevicius et al. 2018). The planner measures the memory on fake tensors and
the time on this device: CPUs without bf16 instructions run autocast several
times slower, so the slowdown is timed, never assumed.
"""

from __future__ import annotations

import functools
import time
from contextlib import nullcontext

import torch

from memfit.errors import TechniqueError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        with ctx:
            work()  # warm-up: kernel selection, autocast weight cache
            if dev.type == "cuda":
                torch.cuda.synchronize()
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(3):
                    work()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
        return best

    with torch.no_grad():
        base = timed(nullcontext())
        low = timed(autocast(precision, device))
    return max(low / base, 0.1)
