"""Claim: on a GPU, memfit's estimates and plans hold against PyTorch's own CUDA counters,
the reserved memory included, because that is what runs out.

Method (needs CUDA; without it the script says so in one line and exits 0). For zoo
workloads and a transformer at several batch sizes:
- estimate on fake tensors with `device="cuda"` (nothing allocated), then measure the same
  step on the GPU with `memfit.profile`: predicted tensor peak against
  `torch.cuda.max_memory_allocated` over the step, and the predicted reserved peak (memfit's
  model of the caching allocator, `memfit.measure.cuda_allocator`) against
  `torch.cuda.max_memory_reserved`;
- plans for budgets of 1/2 and 1/3 of the measured reserved peak (`reserve_bytes=0`), each
  verified with `memfit.verify`: its measured peaks against its budget (must be 0 over).
Each case runs in its own process so the allocator starts empty.

    .venv/bin/python benchmarks/gpu_truth.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

CASES = [
    ("mlp", "zoo:mlp:depth=8,width=2048,inputs=2048", (64, 512)),
    ("wrn-28-2", "zoo:wrn-28-2", (64, 256)),
    ("resnet18", "zoo:resnet18", (32, 128)),
    (
        "transformer",
        "zoo:transformer:layers=8,d_model=512,heads=8,seq_len=512,vocab=16000",
        (4, 16),
    ),
    ("llama-small", "zoo:llama", (4, 16)),
]
FRACTIONS = (2, 3)


def one(spec: str, batch: int) -> dict:
    import torch

    import memfit

    est = memfit.estimate(spec, batch, device="cuda")
    torch.cuda.empty_cache()
    prof = memfit.profile(spec, batch, device="cuda")
    out = {
        "predicted_allocated": est.peak_bytes,
        "predicted_reserved": est.reserved_peak_bytes,
        "measured_allocated": prof.rss_peak_bytes,
        "measured_reserved": prof.reserved_peak_bytes,
        "tracker_measured": prof.peak_bytes,
        "plans": [],
    }
    for fraction in FRACTIONS:
        budget = f"{int(prof.reserved_peak_bytes // fraction)}"
        plan = memfit.plan(
            spec, memfit.Budget.parse(budget, "gpu"), batch, device="cuda", reserve_bytes=0
        )
        row = {"fraction": fraction, "fits": plan.fits, "techniques": plan.techniques}
        if plan.fits:
            torch.cuda.empty_cache()
            v = memfit.verify(plan, spec, steps=2)
            row.update(v.to_dict())
            row["predicted"] = plan.predicted_peak_bytes
            row["predicted_reserved"] = plan.to_dict()["predicted_reserved_bytes"]
            row["budget"] = plan.budget.bytes
        out["plans"].append(row)
    return out


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]))))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_truth: no CUDA device here; nothing measured (run it on a machine with a GPU)")
        return 0
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(
        f"{'workload':<12} {'batch':>5} {'pred alloc':>10} {'max alloc':>10} {'err':>6} "
        f"{'pred resv':>10} {'max resv':>10} {'err':>6}  plans (1/2, 1/3): measured reserved / budget"
    )
    alloc_err, resv_err, over = [], [], 0
    for label, spec, batches in CASES:
        for batch in batches:
            done = subprocess.run(
                [sys.executable, __file__, "--child", spec, str(batch)],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if done.returncode:
                print(
                    f"{label:<12} {batch:>5} error: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
                )
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            ea = 100 * (r["predicted_allocated"] / r["measured_allocated"] - 1)
            er = 100 * (r["predicted_reserved"] / r["measured_reserved"] - 1)
            alloc_err.append(abs(ea))
            resv_err.append(abs(er))
            plans = []
            for p in r["plans"]:
                if not p["fits"]:
                    plans.append(f"1/{p['fraction']}: no plan")
                    continue
                over += not p["within_budget"]
                plans.append(
                    f"1/{p['fraction']}: {(p['reserved_peak_bytes'] or 0) / 1e6:.0f}/{p['budget'] / 1e6:.0f} MB "
                    f"{'ok' if p['within_budget'] else 'OVER'} ({','.join(p['techniques'])})"
                )
            print(
                f"{label:<12} {batch:>5} {r['predicted_allocated'] / 1e6:10.1f} "
                f"{r['measured_allocated'] / 1e6:10.1f} {ea:+6.1f} "
                f"{r['predicted_reserved'] / 1e6:10.1f} {r['measured_reserved'] / 1e6:10.1f} {er:+6.1f}  "
                + "; ".join(plans)
            )
    if alloc_err:
        print(
            f"\nallocated: median |error| {statistics.median(alloc_err):.1f}%, max {max(alloc_err):.1f}%; "
            f"reserved: median {statistics.median(resv_err):.1f}%, max {max(resv_err):.1f}%"
        )
    print(f"verified plans over budget: {over}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
