"""Claim: at the same effective batch, memfit's tightest plan cuts a training step's peak memory
many times over, at a bounded step-time cost; with lossy techniques allowed, further still.

Method. For `wrn-28-2` (batch 128, 32x32x3) and `transformer` (batch 16, seq 256), Adam:
- baseline: the plain step (forward, backward, Adam step) on the whole batch;
- `checkpoint_sequential`: torch's own, sqrt(n) segments over the model's blocks, whole batch;
- memfit exact, tightest: `plan(..., exact=True)` at a budget nothing fits, whose answer is then
  the smallest-peak exact combination (micro-batching + checkpointing);
- memfit exact, <=1.5x: the smallest-peak exact alternative the planner predicts at <=1.5x time;
- memfit lossy, tightest: the same with `exact=False` (bf16 autocast, 8/4-bit Adam state).
Every row builds a fresh model, runs one warm-up step (so Adam state exists), one step under
memfit's tracker (peak live tensor bytes), one step under the process's RSS high-water mark
(`MALLOC_MMAP_THRESHOLD_` set by benchmarks/run.py), then times steps (best of N).
"model states" = parameters + gradients + optimizer state, measured; the "working" part is
the peak minus them (activations and temporaries): no exact technique removes model states,
so baseline peak / model states bounds the exact ratio.

The lossy plan's accuracy cost is measured on real data: the zoo `cnn` on scikit-learn digits,
trained for the same steps with the plain step and with its tightest lossy plan, test accuracy
compared. `--quick` times one step per row, skips the transformer's lossy row and trains fewer
steps.
"""

from __future__ import annotations

import argparse
import gc
import math
import time
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from memfit import zoo
from memfit.apply import apply_plan
from memfit.measure.bytes import tensors_bytes
from memfit.measure.process import ProcessPeak, relax_allocator, stabilize_allocator
from memfit.optim import make_optimizer
from memfit.planner import PlanSettings, plan
from memfit.train import PlannedStep

NOTHING_FITS = 1000  # bytes: the planner then answers with the smallest peak it can reach
CASES = [("wrn-28-2", 128, "blocks"), ("transformer", 16, "layers")]


class _Chain(nn.Module):
    """torch's `checkpoint_sequential` over a list of blocks (the well-known alternative)."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.segments = max(1, round(math.sqrt(len(blocks))))

    def forward(self, x):
        return checkpoint_sequential(self.blocks, self.segments, x, use_reentrant=False)


def with_checkpoint_sequential(model: nn.Module, attr: str) -> nn.Module:
    blocks = list(getattr(model, attr))
    chain = _Chain(blocks)
    # A Sequential container is called once; a ModuleList is looped over by the model.
    wrapped = chain if isinstance(getattr(model, attr), nn.Sequential) else nn.ModuleList([chain])
    setattr(model, attr, wrapped)
    return model


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    # Gradients are as big as the trainable parameters (they exist at the optimizer step).
    return tensors_bytes(params) * 2 + tensors_bytes(state)


def live_bytes(model, optimizer, batch) -> int:
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return tensors_bytes([*model.parameters(), *model.buffers(), *state, *batch])


def run_row(workload, batch_size: int, build_step, timed_steps: int) -> dict:
    """Fresh model; warm-up, tracked step, RSS step, timed steps."""
    torch.manual_seed(0)
    model = workload.build_model()
    model.train()
    optimizer = make_optimizer("adam", model.parameters())
    step = build_step(model, optimizer)
    batch = workload.make_batch(batch_size, "cpu")
    step(batch)  # creates optimizer state (and, for torchao, compiles its step)
    _, peak = step.measure(batch)
    gc.collect()
    process = ProcessPeak("cpu")
    process.start()
    before = live_bytes(model, step.optimizer, batch)
    step(batch)
    process.stop()
    process_step = process.peak_bytes - (process.baseline_bytes - before)
    # Timing with glibc's usual adaptive allocator: the 1 MiB mmap threshold that steadies
    # RSS readings makes every big tensor a fresh mapping, which slows large batches (here
    # up to 2.4x) and would flatter every plan that uses small micro-batches.
    relax_allocator()
    times = []
    for _ in range(timed_steps):
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    states = model_state_bytes(model, step.optimizer)
    del step, optimizer, model, batch
    gc.collect()
    stabilize_allocator()  # also hands the heap's free blocks back, for the next row's RSS
    return {"peak": peak, "process": process_step, "states": states, "step_s": min(times)}


def plain(workload):
    return lambda model, opt: PlannedStep(model, opt, workload.loss_fn, None)


def from_settings(workload, settings: PlanSettings):
    # apply_plan reads only these fields of a Plan.
    the_plan = SimpleNamespace(
        settings=settings,
        device="cpu",
        state_dir=None,
        batch_size=settings.batch_size,
        workload=workload.name,
        _workload=workload,
    )
    return lambda model, opt: apply_plan(the_plan, model, opt, workload.loss_fn)


def tightest(p, exact: bool, max_overhead: float | None = None):
    cands = [
        c for c in [p.chosen, *p.alternatives] if c is not None and (c.settings.exact or not exact)
    ]
    if max_overhead is not None:
        cands = [c for c in cands if c.predicted_time_overhead <= max_overhead]
    return min(cands, key=lambda c: (c.predicted_peak_bytes, c.predicted_step_s))


def bench_workload(name: str, batch: int, blocks_attr: str, timed: int, lossy: bool) -> list[dict]:
    workload = zoo.get(name)
    rows = []

    def add(label, build, cand=None, base=None):
        print(f"  running {name}: {label}", flush=True)
        r = run_row(workload, batch, build, timed)
        r.update(
            workload=name,
            label=label,
            predicted=cand.predicted_peak_bytes if cand else None,
            predicted_time=(1 + cand.predicted_time_overhead) if cand else None,
        )
        rows.append(r)

    add("baseline", plain(workload))
    add(
        "checkpoint_sequential",
        lambda m, o: PlannedStep(
            with_checkpoint_sequential(m, blocks_attr), o, workload.loss_fn, None
        ),
    )
    start = time.perf_counter()
    p_exact = plan(workload, NOTHING_FITS, batch, exact=True, reserve_bytes=0, allow_offload=False)
    print(f"  plan (exact) took {time.perf_counter() - start:.1f} s", flush=True)
    c = tightest(p_exact, exact=True)
    add(f"memfit exact tightest: {c.settings.label()}", from_settings(workload, c.settings), c)
    c15 = tightest(p_exact, exact=True, max_overhead=0.5)
    if c15.settings.label() != c.settings.label():
        add(
            f"memfit exact <=1.5x: {c15.settings.label()}",
            from_settings(workload, c15.settings),
            c15,
        )
    if lossy:
        start = time.perf_counter()
        p_lossy = plan(
            workload, NOTHING_FITS, batch, exact=False, reserve_bytes=0, allow_offload=False
        )
        print(f"  plan (lossy) took {time.perf_counter() - start:.1f} s", flush=True)
        cl = tightest(p_lossy, exact=False)
        add(
            f"memfit lossy tightest: {cl.settings.label()}",
            from_settings(workload, cl.settings),
            cl,
        )
    return rows


def digits_accuracy(steps: int) -> list[tuple[str, float, float]]:
    """Train the digits CNN with the plain step and with its tightest lossy plan; test accuracy."""
    workload = zoo.get("cnn")
    x_train, y_train, x_test, y_test = workload.load_data()
    batch = workload.default_batch_size
    p = plan(workload, NOTHING_FITS, batch, exact=False, reserve_bytes=0, allow_offload=False)
    lossy = tightest(p, exact=False)
    out = []
    for label, build in [
        ("baseline fp32 Adam", plain(workload)),
        (f"lossy tightest: {lossy.settings.label()}", from_settings(workload, lossy.settings)),
    ]:
        torch.manual_seed(0)
        model = workload.build_model()
        model.train()
        step = build(model, make_optimizer("adam", model.parameters()))
        order = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        done = 0
        while done < steps:
            perm = torch.randperm(len(x_train), generator=order)
            for i in range(0, len(perm) - batch + 1, batch):
                idx = perm[i : i + batch]
                step((x_train[idx], y_train[idx]))
                done += 1
                if done == steps:
                    break
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        out.append((label, acc, seconds))
    return out


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    stabilize_allocator()
    timed = 1 if args.quick else 2
    rows = []
    for name, batch, attr in CASES:
        lossy = not (args.quick and name == "transformer")
        rows += bench_workload(name, batch, attr, timed, lossy)

    print("\nPeak memory at the same effective batch (Adam; MB = 10^6 bytes)")
    header = (
        "| workload | method | tracker peak MB | vs baseline | process peak MB | vs baseline "
        "| model states MB | working MB | working vs baseline | predicted MB | step s "
        "| time vs baseline | predicted time |"
    )
    print(header)
    print("|---|---|" + "---:|" * 11)
    for r in rows:
        base = next(b for b in rows if b["workload"] == r["workload"] and b["label"] == "baseline")
        work, base_work = r["peak"] - r["states"], base["peak"] - base["states"]
        pred_t = "-" if r["predicted_time"] is None else f"{r['predicted_time']:.2f}x"
        print(
            f"| {r['workload']} | {r['label']} | {mb(r['peak'])} | {base['peak'] / r['peak']:.1f}x "
            f"| {mb(r['process'])} | {base['process'] / r['process']:.1f}x | {mb(r['states'])} "
            f"| {mb(work)} | {base_work / max(work, 1):.1f}x | {mb(r['predicted'])} "
            f"| {r['step_s']:.3f} | {r['step_s'] / base['step_s']:.2f}x | {pred_t} |"
        )
    for name, _, _ in CASES:
        base = next(b for b in rows if b["workload"] == name and b["label"] == "baseline")
        print(
            f"{name}: baseline peak / model states (bound on any exact ratio) = "
            f"{base['peak'] / base['states']:.1f}x"
        )

    steps = 40 if args.quick else 100
    print(
        f"\nAccuracy cost of the tightest lossy plan: digits CNN, {steps} steps of batch 64, "
        "same seed and data order"
    )
    print("| training | test accuracy | train s |")
    print("|---|---:|---:|")
    for label, acc, seconds in digits_accuracy(steps):
        print(f"| {label} | {acc:.2%} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
