"""Claim: planning takes seconds: a GPT-2-small-sized transformer (batch 8, seq 256) is
planned in at most 3x the time of one measured profile of the same workload, and
LLaMA-7B (which cannot run here) in under a minute.

Method: each measurement in its own process (cold imports excluded: the clock starts at
the call). The baseline is `memfit.profile` of the same workload and batch, what a user
runs to look before planning. Budgets are fractions of the estimated plain step's peak
(`reserve_bytes=0`), and named budgets for LLaMA-7B. The low-bit step's one-time timing
is kept in memfit's cache; `--cold` empties the cache first so that cost is included.

    .venv/bin/python benchmarks/plan_speed.py [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

GPT2_SMALL = "zoo:transformer:layers=12,d_model=768,heads=12,seq_len=256,vocab=50257"


def child(kind: str, spec: str, batch: int, budget: str) -> dict:
    import time

    import memfit

    if kind == "profile":
        start = time.perf_counter()
        memfit.profile(spec, batch)
        return {"seconds": time.perf_counter() - start}
    if budget.startswith("1/"):
        peak = memfit.estimate(spec, batch).peak_bytes
        budget = str(peak // int(budget[2:]))
    start = time.perf_counter()
    p = memfit.plan(spec, budget, batch, reserve_bytes=0)
    return {
        "seconds": time.perf_counter() - start,
        "fits": p.fits,
        "techniques": p.techniques,
        "peak_gb": p.predicted_peak_bytes / 1e9,
        "time_source": p.time_source,
    }


def run(args: list[str], env: dict) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--child", nargs=4)
    a = parser.parse_args()
    if a.child:
        kind, spec, batch, budget = a.child
        print(json.dumps(child(kind, spec, int(batch), budget)))
        return 0
    env = dict(os.environ)
    if a.cold:
        env["MEMFIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="memfit-cold-")
    failures = 0
    prof = run(["profile", GPT2_SMALL, "8", "-"], env)
    print(
        f"GPT-2-small batch 8 seq 256: one measured profile {prof.get('seconds', float('nan')):.1f} s"
    )
    for budget in ("1/2", "1/3"):
        r = run(["plan", GPT2_SMALL, "8", budget], env)
        if "error" in r:
            print(f"  plan at {budget}: error {r['error']}")
            failures += 1
            continue
        ratio = r["seconds"] / prof["seconds"]
        failures += ratio > 3
        print(
            f"  plan at {budget} of its peak: {r['seconds']:.1f} s = {ratio:.2f}x the profile "
            f"(target <= 3x) -> {'fits' if r['fits'] else 'no plan'}: {', '.join(r['techniques'])}"
        )
    for budget in ("a100-80gb", "a100-40gb", "24GB"):
        r = run(["plan", "zoo:llama-7b", "1", budget], env)
        if "error" in r:
            print(f"LLaMA-7B at {budget}: error {r['error']}")
            failures += 1
            continue
        failures += r["seconds"] > 60
        print(
            f"LLaMA-7B batch 1 at {budget}: planned in {r['seconds']:.1f} s (target < 60 s) -> "
            f"{'fits' if r['fits'] else 'no plan'} at {r['peak_gb']:.1f} GB: "
            f"{', '.join(r['techniques']) or '-'} (time model: {r['time_source']})"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
