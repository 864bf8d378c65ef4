"""Claim: sqrt(n)-segment checkpointing makes an n-block MLP's activation memory grow like
n^0.5 instead of n, for about one extra forward pass of time.

Method. `zoo.get("mlp", depth=n, width=128, inputs=128)` at batch 8192 (activations dominate:
one block keeps 4 MiB of activations and 256 KiB of model states), Adam, for n = 16 ... 256.
Each depth runs twice on fresh models: plain, and with
`memfit.techniques.checkpointing.checkpoint_segments(model, "blocks")` (round(sqrt(n))
segments, torch's non-reentrant `checkpoint_sequential`). One warm-up step creates Adam
state; one step runs under memfit's tracker, whose peak is split into model states
(parameters + gradients + optimizer state live at the peak) and the working part
(activations + temporaries = peak minus model states); then steps are timed, best of N, plain and checkpointed
steps alternating so that load from other processes falls on both.
The exponent is the slope of a least-squares line through log(working bytes) vs log(n).
"""

from __future__ import annotations

import argparse
import gc
import math
import time

import torch

from memfit import zoo
from memfit.measure.process import stabilize_allocator
from memfit.measure.profile import run_tracked_step
from memfit.measure.step import training_step
from memfit.optim import make_optimizer
from memfit.techniques.checkpointing import checkpoint_segments

WIDTH = 128
BATCH = 8192
DEPTHS = (16, 32, 64, 128, 256)


def build(depth: int, checkpointed: bool):
    workload = zoo.get("mlp", depth=depth, width=WIDTH, inputs=WIDTH)
    torch.manual_seed(0)
    model = workload.build_model()
    model.train()
    segments = checkpoint_segments(model, "blocks") if checkpointed else None
    optimizer = make_optimizer("adam", model.parameters())
    batch = workload.make_batch(BATCH, "cpu")
    training_step(workload, model, optimizer, batch)  # creates Adam state
    result, _ = run_tracked_step(workload, model, optimizer, batch)
    states = sum(result.categories[c] for c in ("parameters", "gradients", "optimizer"))
    row = {
        "peak": result.peak_bytes,
        "states": states,
        "working": result.peak_bytes - states,
        "phase": result.peak_phase,
        "segments": segments,
        "step_s": float("inf"),
    }
    return row, (workload, model, optimizer, batch)


def measure(depth: int, timed_steps: int) -> tuple[dict, dict]:
    """Plain and checkpointed runs; their timed steps alternate so load changes hit both."""
    base, run_b = build(depth, False)
    ckpt, run_c = build(depth, True)
    for _ in range(timed_steps):
        for row, run in ((base, run_b), (ckpt, run_c)):
            gc.collect()
            start = time.perf_counter()
            training_step(*run)
            row["step_s"] = min(row["step_s"], time.perf_counter() - start)
    return base, ckpt


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths up to 64, one timed step")
    args = parser.parse_args()
    stabilize_allocator()
    depths = DEPTHS[:3] if args.quick else DEPTHS
    timed = 1 if args.quick else 3
    rows = []
    for n in depths:
        base, ckpt = measure(n, timed)
        rows.append((n, base, ckpt))
        print(f"  depth {n} done", flush=True)

    print(f"\nMLP of n blocks Linear({WIDTH})+ReLU, batch {BATCH}, Adam (MiB = 2^20 bytes)")
    print(
        "| n | segments | model states MiB | plain peak MiB | plain working MiB "
        "| ckpt peak MiB | ckpt working MiB | working plain/ckpt | ckpt peak phase "
        "| plain step s | ckpt step s | time overhead |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    mib = 2**20
    for n, b, c in rows:
        print(
            f"| {n} | {c['segments']} | {b['states'] / mib:.1f} | {b['peak'] / mib:.1f} "
            f"| {b['working'] / mib:.1f} | {c['peak'] / mib:.1f} | {c['working'] / mib:.1f} "
            f"| {b['working'] / c['working']:.1f}x | {c['phase']} | {b['step_s']:.3f} "
            f"| {c['step_s']:.3f} | {c['step_s'] / b['step_s'] - 1:+.0%} |"
        )
    ns = [n for n, _, _ in rows]
    e_plain = slope(ns, [b["working"] for _, b, _ in rows])
    e_ckpt = slope(ns, [c["working"] for _, _, c in rows])
    e_ckpt_peak = slope(ns, [c["peak"] for _, _, c in rows])
    overhead = sum(c["step_s"] for _, _, c in rows) / sum(b["step_s"] for _, b, _ in rows) - 1
    print(
        f"\nfitted exponent of working memory in n: plain {e_plain:.2f}, "
        f"checkpointed {e_ckpt:.2f} (target <= 0.6); of the whole checkpointed peak: "
        f"{e_ckpt_peak:.2f}"
    )
    print(f"time overhead over all depths (sum of step times): {overhead:+.0%} (target <= +35%)")


if __name__ == "__main__":
    main()
