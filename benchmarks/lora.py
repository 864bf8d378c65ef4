"""Claim: LoRA shrinks a fine-tuning step's model states to a few bytes a weight, and the
planner's prediction of the step still holds.

GPT-2 small's configuration (124 M parameters, random init, nothing downloaded), one
batch of 2 x 128 tokens, AdamW, on CPU. Three ways, each in its own child process
(MALLOC_MMAP_THRESHOLD_=131072) so RSS readings do not mix:

- `full`: plain full fine-tuning, every weight trained in fp32;
- `lora bf16`: memfit's `lora` technique, rank 16 on every linear layer but the head,
  frozen weights in bf16;
- `lora int8`: the same with the adapted layers' weights in torchao's int8 (QLoRA-style
  storage on CPU; NF4 needs bitsandbytes on CUDA).

Figures, all measured; memory by `memfit.verify` on the planned step (a fresh model, a
warm-up update, then one tracked update):
- `tracker MiB`: peak of live tensors (memfit's tracker) and the planner's prediction;
- `process MiB`: the process's own peak over the update (RSS above what it held
  besides tensors), and its whole RSS high-water mark;
- `states B/w`: parameters + gradients + optimizer state after one update, counted
  from the real tensors (numel * element_size, quantized ones by their parts), per
  weight of the original model;
- `step s`: best of 3 updates, the three ways' steps built in one more process and
  timed in turn (round-robin), so the machine's load weighs on each alike; ratios
  against `full`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MODEL = "gpt2:seq_len=128"
BATCH = 2
MODES = {"full": None, "lora bf16": "bf16", "lora int8": "int8"}
ROUNDS = 3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tensor_bytes import distinct_bytes as _bytes  # noqa: E402


def child(mode: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from memfit import verify
    from memfit.planning import PlanSettings, plan, predict
    from memfit.specs.hf import hf_workload
    from memfit.techniques.lora import LoraConfig

    workload = hf_workload(MODEL)
    base = MODES[mode]
    configs = (LoraConfig(base=base),) if base else ()
    planned = plan(workload, "1TB", batch_size=BATCH, reserve_bytes=0, optimizer="adamw")
    planned = planned.with_settings(PlanSettings(BATCH, configs))
    predicted = predict(workload, configs, batch_size=BATCH, optimizer="adamw")
    measured = verify(planned, workload, steps=1, timed=False)

    torch.manual_seed(0)
    model = workload.build_model()
    weights = sum(p.numel() for p in model.parameters())
    step = planned.apply(model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    batch = workload.make_batch(BATCH, "cpu")
    step(batch)  # creates the optimizer state
    step.optimizer.zero_grad(set_to_none=True)
    workload.loss(model, batch).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    state = [v for s in step.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    params = list(model.parameters()) + list(model.buffers())
    print(
        json.dumps(
            {
                "weights": weights,
                "trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "parameters": _bytes(params),
                "gradients": _bytes(grads),
                "optimizer": _bytes(state),
                "predicted": predicted.predicted_peak_bytes,
                "tracker": measured.tracker_peak_bytes,
                "process": measured.process_peak_bytes,
                "process_total": measured.process_total_peak_bytes,
            }
        )
    )


def timing_child() -> None:
    """Every way's step in one process, timed in turn, best of ROUNDS each: the machine's
    load then weighs on all of them alike (timed one after another, it did not)."""
    import time
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from memfit.planning import PlanSettings, plan
    from memfit.specs.hf import hf_workload
    from memfit.techniques.lora import LoraConfig

    workload = hf_workload(MODEL)
    base = plan(workload, "1TB", batch_size=BATCH, reserve_bytes=0, optimizer="adamw")
    steps = {}
    for mode, storage in MODES.items():
        torch.manual_seed(0)
        model = workload.build_model()
        configs = (LoraConfig(base=storage),) if storage else ()
        planned = base.with_settings(PlanSettings(BATCH, configs))
        steps[mode] = planned.apply(model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    batch = workload.make_batch(BATCH, "cpu")
    best = dict.fromkeys(MODES, float("inf"))
    for mode in MODES:
        steps[mode](batch)  # warm-up: the optimizer state, kernel selection
    for _ in range(ROUNDS):
        for mode in MODES:
            start = time.perf_counter()
            steps[mode](batch)
            best[mode] = min(best[mode], time.perf_counter() - start)
    print(json.dumps(best))


def run_child(mode: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    results = {mode: run_child(mode) for mode in MODES}
    for mode, seconds in run_child("timing").items():
        results[mode]["step_s"] = seconds
    full = results["full"]
    mib = 2**20
    print(
        f"{MODEL}: {full['weights'] / 1e6:.1f} M weights, batch {BATCH}, AdamW, CPU "
        f"({os.cpu_count()} cores, shared with other work: times are noisy)"
    )
    header = (
        f"{'mode':<10} {'trained':>9} {'states B/w':>10} {'tracker MiB':>11} {'predicted':>9} "
        f"{'process MiB':>11} {'RSS MiB':>8} {'vs full':>7} {'step s':>7} {'vs full':>7}"
    )
    print(header)
    print("-" * len(header))
    for mode, r in results.items():
        states = r["parameters"] + r["gradients"] + r["optimizer"]
        print(
            f"{mode:<10} {r['trained'] / 1e6:>8.2f}M {states / r['weights']:>10.2f} "
            f"{r['tracker'] / mib:>11.0f} {r['predicted'] / mib:>9.0f} "
            f"{r['process'] / mib:>11.0f} {r['process_total'] / mib:>8.0f} "
            f"{r['tracker'] / full['tracker']:>6.2f}x {r['step_s']:>7.2f} "
            f"{r['step_s'] / full['step_s']:>6.2f}x"
        )
    for mode, r in results.items():
        print(
            f"{mode}: parameters {r['parameters'] / mib:.0f} MiB, gradients "
            f"{r['gradients'] / mib:.1f} MiB, optimizer {r['optimizer'] / mib:.1f} MiB"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        timing_child() if sys.argv[2] == "timing" else child(sys.argv[2])
    else:
        main()
