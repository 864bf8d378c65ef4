"""Claim: with bf16 weights, compact state and the update inside backward, models whose fp32
Adam model states (16 bytes per parameter) leave no room get a plan that holds.

1. A GPT-2-small-sized transformer (12 layers, d_model 768, seq 256, vocab 50257, batch 8,
   Adam): the plain step is measured with `memfit.profile` (the baseline, in this run); a
   plan for one third of its peak is made (`reserve_bytes=0`) and verified with
   `memfit.verify` (real steps: the tracker's peak and the process's own RSS peak).
2. `zoo:llama-7b` at batch 1 and a 24GB budget (CPU plan, 400 MB runtime reserve): the
   plan the planner makes without offloading to disk, its model-state bytes per parameter
   against the plain step's.

    MALLOC_MMAP_THRESHOLD_=131072 .venv/bin/python benchmarks/past_16_bytes.py
"""

from __future__ import annotations

import time

import memfit
from memfit.workload import load_workload

GPT2_SMALL = "zoo:transformer:layers=12,d_model=768,heads=12,seq_len=256,vocab=50257"


def model_state_bytes(categories: dict[str, int]) -> int:
    return sum(categories.get(k, 0) for k in ("parameters", "gradients", "optimizer"))


def gpt2_at_a_third() -> bool:
    plain = memfit.profile(GPT2_SMALL, 8)
    numel = sum(p.numel() for p in load_workload(GPT2_SMALL).build_model().parameters())
    budget = plain.peak_bytes // 3
    start = time.perf_counter()
    p = memfit.plan(GPT2_SMALL, str(budget), 8, reserve_bytes=0)
    plan_s = time.perf_counter() - start
    print(
        f"GPT-2-small-sized, batch 8: plain step measured peak {plain.peak_bytes / 1e6:.1f} MB "
        f"(process {plain.process_step_bytes / 1e6:.1f} MB), model states "
        f"{model_state_bytes(plain.categories) / numel:.2f} B/param"
    )
    print(
        f"  budget 1/3 = {budget / 1e6:.1f} MB: planned in {plan_s:.1f} s -> "
        f"{'fits' if p.fits else 'no plan'}: {p.settings.label()} "
        f"(predicted {p.predicted_peak_bytes / 1e6:.1f} MB, "
        f"{p.bytes_per_parameter or 0:.2f} B/param of model states)"
    )
    if not p.fits:
        return False
    v = memfit.verify(p, GPT2_SMALL)
    print(
        f"  verified over {v.steps} steps: tracker {v.tracker_peak_bytes / 1e6:.1f} MB, "
        f"process {v.process_peak_bytes / 1e6:.1f} MB = {v.process_peak_bytes / budget:.3f}x "
        f"the budget; peak {plain.peak_bytes / v.tracker_peak_bytes:.2f}x lower than the plain "
        f"step; step {v.measured_step_s:.1f} s (plain step {plain.step_time_s:.1f} s)"
    )
    return v.within_budget


def llama_7b_at_24gb() -> bool:
    plain = memfit.estimate("zoo:llama-7b", 1)
    numel = 6_738_415_616
    start = time.perf_counter()
    p = memfit.plan("zoo:llama-7b", "24GB", 1, allow_offload=False)
    print(
        f"LLaMA-7B batch 1: plain step estimated {plain.peak_bytes / 1e9:.1f} GB "
        f"({model_state_bytes(plain.categories) / numel:.2f} B/param of model states); "
        f"at 24GB without disk offload, planned in {time.perf_counter() - start:.1f} s -> "
        f"{'fits' if p.fits else 'no plan'}: {p.settings.label()}, predicted "
        f"{p.predicted_peak_bytes / 1e9:.2f} GB against {p.usable_bytes / 1e9:.2f} GB usable, "
        f"{p.bytes_per_parameter or 0:.2f} B/param; categories "
        + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in p.chosen.prediction.categories.items())
    )
    return p.fits


if __name__ == "__main__":
    results = [gpt2_at_a_third(), llama_7b_at_24gb()]
    raise SystemExit(0 if all(results) else 1)
