"""Claim: updating each parameter inside backward frees the gradients at about the
ordinary step's speed.

A GPT-style decoder from memfit's zoo (4 layers, d_model 384, vocab 8000, 128 tokens:
10 M parameters, tied embeddings), AdamW, batch 2, on this CPU. Two identical copies
are trained in the same process, the ordinary step and the update in backward
(memfit's `optimizer-in-backward` technique through its `apply`), alternating step by
step so the machine's load falls on both alike.

Figures, all measured:
- `step s`: median and fastest wall time of a whole step (forward, backward, update)
  over REPEATS steps after a warm-up; `ratio` is the median of the per-pair ratios
  (each pair ran back to back, so slow spells of the loaded machine cancel), `min ratio`
  the fastest over the fastest;
- `tracker peak`: memfit's tracker over one step (live tensor bytes, state included);
- `grads at peak`: the tracker's gradient bytes at the step's peak;
- `RSS over`: the kernel's RSS high-water mark during one step (VmHWM, reset through
  /proc/self/clear_refs) above the RSS just before it: what the step adds on top of the
  parameters and state held between steps. Run with MALLOC_MMAP_THRESHOLD_=131072
  (benchmarks/run.py sets it) so freed tensors leave RSS at once.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from memfit import zoo
from memfit.measure.process import current_rss_bytes, peak_rss_bytes, reset_peak_rss
from memfit.measure.step import StepSettings, TrainingStep
from memfit.measure.tracker import MemoryTracker
from memfit.techniques.base import Training
from memfit.techniques.optimizer_in_backward import OptimizerInBackwardConfig
from memfit.techniques.registry import apply_all

WORKLOAD = zoo.get("transformer", layers=4, d_model=384, heads=6, seq_len=128, vocab=8000)
BATCH = 2
REPEATS = 15
MODES = ("ordinary", "in backward")


def build(model, mode: str) -> TrainingStep:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    configs = (OptimizerInBackwardConfig(),) if mode == "in backward" else ()
    training = apply_all(
        configs,
        Training(model=model, optimizer=optimizer, settings=StepSettings(), batch_size=BATCH),
    )
    return TrainingStep.for_workload(WORKLOAD, model, training.optimizer, training.settings)


def tracked(step: TrainingStep, batch) -> tuple[int, int]:
    tracker = MemoryTracker(keep_timeline=False)
    tracker.register_model(step.model)
    tracker.register_optimizer(step.optimizer)
    step.on_phase = lambda phase: setattr(tracker, "phase", phase)
    with tracker.track(step.model):
        step(batch)
    step.on_phase = None
    result = tracker.result()
    return result.peak_bytes, result.categories["gradients"]


def rss_over(step: TrainingStep, batch) -> int:
    before = current_rss_bytes()
    if not reset_peak_rss():
        return -1
    step(batch)
    return peak_rss_bytes() - before


def main() -> None:
    torch.manual_seed(0)
    first = WORKLOAD.build_model()
    models = {"ordinary": first, "in backward": copy.deepcopy(first)}
    steps = {mode: build(models[mode], mode) for mode in MODES}
    params = sum(p.numel() for p in first.parameters())
    print(f"{WORKLOAD.name}: {params / 1e6:.1f} M parameters, batch {BATCH}, AdamW, CPU")
    print(f"torch threads {torch.get_num_threads()}; the machine is shared and loaded")
    batches = [WORKLOAD.make_batch(BATCH, "cpu") for _ in range(REPEATS + 1)]
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i, batch in enumerate(batches):
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            start = time.perf_counter()
            steps[mode](batch)
            if i:  # the first step makes the optimizer's state
                times[mode].append(time.perf_counter() - start)
    memory = {
        mode: (*tracked(steps[mode], batches[0]), rss_over(steps[mode], batches[0]))
        for mode in MODES
    }
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            models["ordinary"].parameters(), models["in backward"].parameters(), strict=True
        )
    )
    base = memory["ordinary"]
    print(
        f"{'mode':<12} {'step s':>8} {'min s':>7} {'ratio':>6} {'min ratio':>9} "
        f"{'tracker peak':>13} {'ratio':>6} {'grads at peak':>14} {'RSS over':>10} {'ratio':>6}"
    )
    for mode in MODES:
        seconds, fastest = statistics.median(times[mode]), min(times[mode])
        pairs = [t / o for t, o in zip(times[mode], times["ordinary"], strict=True)]
        ratio, min_ratio = statistics.median(pairs), fastest / min(times["ordinary"])
        peak, grads, rss = memory[mode]
        print(
            f"{mode:<12} {seconds:>8.3f} {fastest:>7.3f} {ratio:>6.2f} {min_ratio:>9.2f} "
            f"{peak / 2**20:>10.1f} MiB "
            f"{peak / base[0]:>6.2f} {grads / 2**20:>10.1f} MiB {rss / 2**20:>6.1f} MiB "
            f"{rss / base[2] if base[2] > 0 else float('nan'):>6.2f}"
        )
    spread = {m: (min(t), max(t)) for m, t in times.items()}
    print("step s min..max: " + ", ".join(f"{m} {a:.3f}..{b:.3f}" for m, (a, b) in spread.items()))
    print(f"parameters equal bit for bit after {REPEATS + 3} steps: {same}")


if __name__ == "__main__":
    main()
