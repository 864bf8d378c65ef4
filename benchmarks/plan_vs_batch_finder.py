"""Claim: memfit reaches a plan that fits a memory budget much faster than a trial-based
batch-size finder, and the plan's real peak stays inside the budget.

Method. For each workload the budget is the plain step's model states (parameters, gradients,
Adam state) plus 30% of its working part (peak minus model states), measured once beforehand at
the target batch and not timed: a smaller batch then fits, so both approaches have an answer. Two ways to an answer, both timed:
- finder: Lightning's BatchSizeFinder rule (`mode="binsearch"`, `init_val=2`,
  `steps_per_trial=3`): double the batch until a trial is out of budget, then bisect between
  the last batch that fitted and the first that did not; capped at the target batch. A trial
  runs 3 real training steps; it is out of budget when its measured peak (the process's RSS
  high-water mark over the 3 steps, less the non-tensor memory the process held before them)
  exceeds the budget: what an out-of-memory error would see, without paying for a tracker.
- memfit: `plan(workload, budget, target batch, reserve_bytes=0)` (fake-tensor runs and a
  few timed passes).
memfit's plan is then applied to a fresh model and one step at the target batch is measured
(memfit's tracker: live tensor bytes; and the RSS peak measured as for the finder), to prove it
is inside the budget. `--quick` leaves out the transformer.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from memfit import zoo
from memfit.measure.bytes import tensors_bytes
from memfit.measure.process import ProcessPeak, stabilize_allocator
from memfit.measure.profile import profile
from memfit.measure.step import training_step
from memfit.optim import make_optimizer
from memfit.planner import plan

WORKING_SHARE = 0.3
STEPS_PER_TRIAL = 3
CASES = [("mlp", {"depth": 8, "width": 1024}, 4096), ("wrn-28-2", {}, 128), ("transformer", {}, 16)]


def process_step_bytes(model, optimizer, batch, run) -> int:
    """RSS high-water mark over `run()`, less the non-tensor memory held before it."""
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    gc.collect()
    before = tensors_bytes([*model.parameters(), *model.buffers(), *state, *batch])
    process = ProcessPeak("cpu")
    process.start()
    run()
    process.stop()
    return process.peak_bytes - (process.baseline_bytes - before)


def finder(workload, target: int, budget: int) -> tuple[int, int, list[tuple[int, bool]]]:
    """Largest batch <= target whose 3-step trial stays in budget: (batch, trials, history)."""
    torch.manual_seed(0)
    model = workload.build_model()
    model.train()
    optimizer = make_optimizer("adam", model.parameters())
    history: list[tuple[int, bool]] = []

    def fits(b: int) -> bool:
        batches = [workload.make_batch(b, "cpu") for _ in range(STEPS_PER_TRIAL)]

        def run():
            for batch in batches:
                training_step(workload, model, optimizer, batch)

        ok = process_step_bytes(model, optimizer, batches[0], run) <= budget
        history.append((b, ok))
        return ok

    low, high = 0, None
    b = min(2, target)
    while high is None:  # power phase
        if fits(b):
            low = b
            if b == target:
                break
            b = min(2 * b, target)
        else:
            high = b
    while high is not None and high - low > 1:  # binsearch phase
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low, len(history), history


def measure_plan(workload, p, target: int) -> tuple[int, int]:
    """Apply the plan to a fresh model; (tracker peak, process peak) of one step at `target`."""
    torch.manual_seed(0)
    model = workload.build_model()
    model.train()
    step = p.apply(model, make_optimizer("adam", model.parameters()))
    batch = workload.make_batch(target, "cpu")
    step(batch)  # creates optimizer state
    _, tracked = step.measure(batch)
    process = process_step_bytes(model, step.optimizer, batch, lambda: step(batch))
    return tracked, process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    stabilize_allocator()
    cases = CASES[:2] if args.quick else CASES
    rows = []
    for name, kwargs, target in cases:
        workload = zoo.get(name, **kwargs)
        baseline = profile(workload, target, "adam")
        # Gradients are as big as the parameters (all trainable here), whatever the peak's phase.
        states = 2 * baseline.categories["parameters"] + baseline.categories["optimizer"]
        budget = int(states + WORKING_SHARE * (baseline.peak_bytes - states))
        print(
            f"  {name}: baseline peak {baseline.peak_bytes / 1e6:.1f} MB, "
            f"budget {budget / 1e6:.1f} MB",
            flush=True,
        )
        start = time.perf_counter()
        found, trials, history = finder(workload, target, budget)
        finder_s = time.perf_counter() - start
        print(f"  {name}: finder trials {history}", flush=True)
        start = time.perf_counter()
        p = plan(workload, budget, target, reserve_bytes=0)
        plan_s = time.perf_counter() - start
        tracked, process = measure_plan(workload, p, target)
        rows.append(
            (
                name,
                target,
                baseline.peak_bytes,
                budget,
                found,
                trials,
                finder_s,
                p,
                plan_s,
                tracked,
                process,
            )
        )

    print(
        "\nTime to an answer that fits (MB = 10^6 bytes; budget = model states + "
        f"{WORKING_SHARE:.0%} of the plain step's working memory)"
    )
    print(
        "| workload | target batch | baseline peak MB | budget MB | finder batch | finder trials "
        "| finder s | memfit plan | plan s | speed-up | predicted MB | measured MB (tracker) "
        "| measured MB (process) | in budget |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for name, target, base, budget, found, trials, finder_s, p, plan_s, tracked, process in rows:
        inside = "yes" if p.fits and tracked <= budget and process <= budget else "NO"
        print(
            f"| {name} | {target} | {base / 1e6:.1f} | {budget / 1e6:.1f} | {found} | {trials} "
            f"| {finder_s:.1f} | {p.settings.label()} | {plan_s:.1f} | {finder_s / plan_s:.1f}x "
            f"| {p.predicted_peak_bytes / 1e6:.1f} | {tracked / 1e6:.1f} | {process / 1e6:.1f} "
            f"| {inside} |"
        )


if __name__ == "__main__":
    main()
