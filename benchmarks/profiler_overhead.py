"""Claim: profiling a step costs little time, and the tracker's peak matches the process's.

For each zoo workload: the plain step time (median of 3 untracked steps) vs the tracked step
time, and the tracker's peak vs the process's own peak over the same step (RSS high-water mark
minus the process's memory before the model existed, or the CUDA allocator's peak).
"""

from __future__ import annotations

import statistics
import time

import torch

from memfit import zoo
from memfit.measure.profile import profile
from memfit.measure.step import training_step
from memfit.optim import make_optimizer

CASES = [
    ("mlp", {}, 256),
    ("cnn", {}, 256),
    ("resnet18", {}, 64),
    ("wrn-28-2", {}, 128),
    ("transformer", {}, 8),
    ("llama", {}, 2),
]


def plain_step_s(workload, batch_size: int) -> float:
    torch.manual_seed(0)
    model = workload.build_model()
    opt = make_optimizer("adam", model.parameters())
    times = []
    for i in range(4):
        batch = workload.make_batch(batch_size, "cpu")
        start = time.perf_counter()
        training_step(workload, model, opt, batch)
        if i:  # the first step creates optimizer state
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    header = (
        f"{'workload':<12} {'batch':>5} {'tracker MB':>10} {'process MB':>10} "
        f"{'proc/trk':>8} {'plain s':>8} {'tracked s':>9} {'overhead':>8}"
    )
    print(header)
    print("-" * len(header))
    ratios, overheads = [], []
    for name, kwargs, batch in CASES:
        workload = zoo.get(name, **kwargs)
        plain = plain_step_s(workload, batch)
        p = profile(workload, batch)
        ratio = p.process_step_bytes / p.peak_bytes
        overhead = p.step_time_s / plain
        ratios.append(ratio)
        overheads.append(overhead)
        print(
            f"{name:<12} {batch:>5} {p.peak_bytes / 1e6:>10.1f} {p.process_step_bytes / 1e6:>10.1f} "
            f"{ratio:>8.2f} {plain:>8.3f} {p.step_time_s:>9.3f} {overhead:>7.2f}x"
        )
    print(
        f"\nmedian process/tracker ratio {statistics.median(ratios):.2f}; "
        f"median tracked/plain time {statistics.median(overheads):.2f}x"
    )


if __name__ == "__main__":
    main()
