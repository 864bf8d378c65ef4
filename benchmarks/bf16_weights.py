"""Claim: bf16 weights with stochastic rounding train a small LLaMA-style model to within 2%
of fp32 AdamW's loss while holding fewer bytes of model state per parameter.

Model: the zoo's LLaMA-style decoder (RMSNorm, rotary positions, SwiGLU), 4 layers,
d_model 256, 4 heads, SwiGLU hidden 688, byte vocabulary (256), sequences of 32 bytes,
batches of 4 (small enough for five 300-step runs on a loaded 2-core machine), AdamW lr 1e-3 with weight decay 0.01, 300 steps, seed 0.
Data: real text that ships on every machine: the Python standard library's own `.py`
files (the first 2 MB of the sorted file list under `os.path.dirname(os.__file__)`),
as bytes; each step reads 4 windows at offsets drawn from a fixed generator, the same
for every mode.

Modes, each through `plan.apply` (the same `PlannedStep`): torch's AdamW in fp32;
`bf16-weights` (torchao's `_AdamW` with `bf16_stochastic_round=True`; its moments are
bf16, as torchao makes them for bf16 parameters); the same with fp32 moments; and with
low-bit state first (torchao's AdamW8bit / AdamW4bit rebuilt with stochastic rounding);
and the tightest: bf16 weights, 4-bit state and the update inside backward (no gradient
buffer).

Figures, all measured:
- `final loss`: mean training loss of the last 20 steps; `vs fp32`: its relative difference.
- `B/param`: parameters + gradients + optimizer state, counted from the live tensors
  (numel x element_size, torchao's quantized state through its inner tensors) right after
  an optimizer step, before zero_grad, divided by the parameter count. With the update in
  backward no gradient is left by then: the most gradient bytes the tracker saw alive
  at once is added instead.
- `tracker p/g/o`: memfit's tracker's parameters / gradients / optimizer bytes in the
  optimizer-step phase of one tracked step (the 11th), in MB.
- `step s`, `time ratio`: median step time over steps 21..300, and over fp32's.

    .venv/bin/python benchmarks/bf16_weights.py [--modes 5]   (drops MALLOC_MMAP_THRESHOLD_: see main)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from memfit import plan, zoo
from memfit.planning import PlanSettings
from memfit.techniques.bf16_weights import BF16WeightsConfig
from memfit.techniques.lowbit import LowBitStateConfig
from memfit.techniques.optimizer_in_backward import OptimizerInBackwardConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tensor_bytes import tensor_bytes  # noqa: E402

STEPS = int(os.environ.get("BF16_BENCH_STEPS", 300))
BATCH = 4
SEQ = 32
TEXT_BYTES = 2 * 2**20
MODES = {
    "fp32 AdamW": (),
    "bf16 weights (bf16 moments)": (BF16WeightsConfig(),),
    "bf16 weights (fp32 moments)": (BF16WeightsConfig(fp32_moments=True),),
    "bf16 weights + 8-bit state": (LowBitStateConfig(bits=8), BF16WeightsConfig()),
    "bf16 weights + 4-bit state": (LowBitStateConfig(bits=4), BF16WeightsConfig()),
    # The tightest model state the planner can make: no gradient buffer either.
    "bf16 weights + 4-bit state + update in backward": (
        LowBitStateConfig(bits=4),
        BF16WeightsConfig(),
        OptimizerInBackwardConfig(),
    ),
}
WORKLOAD = zoo.get("llama", layers=4, d_model=256, heads=4, hidden=688, vocab=256, seq_len=SEQ)


def stdlib_text() -> torch.Tensor:
    """The first TEXT_BYTES of the standard library's sorted .py files, as byte ids."""
    root = Path(os.path.dirname(os.__file__))
    chunks, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= TEXT_BYTES:
            break
    text = b"".join(chunks)[:TEXT_BYTES]
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long()


def batches(text: torch.Tensor):
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        starts = torch.randint(0, len(text) - SEQ - 1, (BATCH,), generator=g)
        rows = torch.stack([text[s : s + SEQ + 1] for s in starts.tolist()])
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def model_state_bytes(model, optimizer) -> int:
    params = list(model.parameters())
    total = sum(tensor_bytes(p) for p in params)
    total += sum(tensor_bytes(p.grad) for p in params if p.grad is not None)
    for state in optimizer.state.values():
        total += sum(tensor_bytes(v) for v in state.values() if isinstance(v, torch.Tensor))
    return total


def run(name: str, configs, text: torch.Tensor, base) -> dict:
    torch.manual_seed(0)
    model = WORKLOAD.build_model()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    step = base.with_settings(PlanSettings(BATCH, configs)).apply(model, optimizer)
    losses, times, state, tracker = [], [], None, None
    for i, batch in enumerate(batches(text)):
        if i == 10:
            # One tracked step (compilation done): the tracker's categories in its
            # optimizer-step phase (parameters, gradients and state all alive).
            loss, result = step.measure_result(batch)
            tracker = result.phase_categories["optimizer_step"]
            # The update in backward frees each gradient as it is used: what it holds at
            # once is the most the tracker saw in any phase.
            grads_at_most = max(c["gradients"] for c in result.phase_categories.values())
        else:
            if i == 11:
                counted = {}

                def at(phase, counted=counted):
                    # After the optimizer step, before zero_grad frees the gradients.
                    if phase == "zero_grad":
                        counted["bytes"] = model_state_bytes(model, step.optimizer)
                        counted["no_grads"] = all(p.grad is None for p in model.parameters())

                step.on_phase = at
            start = time.perf_counter()
            loss = step(batch)
            times.append(time.perf_counter() - start)
            if i == 11:
                step.on_phase = None
                state = counted["bytes"]
                state_has_no_grads = counted["no_grads"]
        losses.append(loss)
    return {
        "name": name,
        "loss": statistics.fmean(losses[-20:]),
        "first": losses[0],
        # Live tensors after the step; gradients already freed inside backward are
        # counted at the most the tracker saw alive.
        "bytes_per_param": (state + (grads_at_most if state_has_no_grads else 0)) / n_params,
        "tracker": tracker,
        "step_s": statistics.median(times[20:]),
        "params": n_params,
    }


def main() -> None:
    if os.environ.pop("MALLOC_MMAP_THRESHOLD_", None) is not None:
        # The figures here are tensors' bytes, not RSS: without glibc's pooling of large
        # blocks every step faults in fresh pages, which made steps ~6x slower here.
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--modes", help="comma-separated mode numbers (0 = fp32 AdamW, always run)", default=""
    )
    chosen = {0, *(int(m) for m in parser.parse_args().modes.split(",") if m)}
    modes = {k: v for i, (k, v) in enumerate(MODES.items()) if i in chosen or len(chosen) == 1}
    text = stdlib_text()
    base = plan(WORKLOAD, "1TB", batch_size=BATCH, reserve_bytes=0)
    results = []
    for name, configs in modes.items():
        start = time.perf_counter()
        results.append(run(name, configs, text, base))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    ref = results[0]
    table = Table(
        title=f"LLaMA-style {ref['params'] / 1e6:.2f} M parameters, {STEPS} steps of "
        f"{BATCH}x{SEQ} bytes of the standard library's source (first loss {ref['first']:.2f})"
    )
    for col in (
        "mode",
        "final loss",
        "vs fp32",
        "B/param",
        "tracker p/g/o MB",
        "step s",
        "time ratio",
    ):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in results:
        t = r["tracker"]
        table.add_row(
            r["name"],
            f"{r['loss']:.4f}",
            f"{(r['loss'] - ref['loss']) / ref['loss']:+.2%}",
            f"{r['bytes_per_param']:.2f}",
            "/".join(f"{t[k] / 1e6:.1f}" for k in ("parameters", "gradients", "optimizer")),
            f"{r['step_s']:.3f}",
            f"{r['step_s'] / ref['step_s']:.2f}x",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
