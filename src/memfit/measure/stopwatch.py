"""The best of a few timed repeats of a small piece of work, on CPU or CUDA.

Probes that compare two ways of running the same work (autocast against fp32, a frozen
layer against a trained one) time each the same way: one warm-up call (kernel selection,
caches), then the fastest of `repeats` rounds of `inner` calls, CUDA synchronised around
each round so queued kernels are counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_time(
    work: Callable[[], object], device: str | torch.device, *, repeats: int = 5, inner: int = 3
) -> float:
    on_cuda = torch.device(device).type == "cuda"
    work()
    best = float("inf")
    for _ in range(repeats):
        if on_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(inner):
            work()
        if on_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best
