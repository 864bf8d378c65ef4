"""Claim: a plan's predictions hold when it runs, on models no one in this project shaped for
memfit, and planning takes seconds.

Method. Workloads from the zoo and from user-style files in benchmarks/models/ (a
torchvision-style ResNet-50, a U-Net, a bidirectional GRU tagger, an MLP-Mixer given as a
plain nn.Module with --input-shape). For each, the plain step's peak is estimated, then
budgets of 1/2, 1/3 and 1/5 of it are planned (`reserve_bytes=0`, Adam) and every plan that
fits is verified with `memfit.verify`: real steps under memfit's tracker and the process's
own RSS high-water mark (each case in its own process, with the allocator setting of
`memfit.measure.process.STABLE_ENVIRONMENT`). Reported per case: predicted against
measured peak (tracker, and process with the kernels' own scratch), predicted against
measured step time, and planning time against one measured profile of the same workload
(the baseline: what a user would run to look before planning).

    .venv/bin/python benchmarks/plan_truth.py            # all workloads
    .venv/bin/python benchmarks/plan_truth.py --quick    # three workloads, two budgets
    .venv/bin/python benchmarks/plan_truth.py --only mlp,unet
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"

WORKLOADS = [
    # (label, spec, batch, input_shape)
    ("mlp", "zoo:mlp:depth=8,width=1024,inputs=1024", 256, None),
    ("cnn-digits", "zoo:cnn", 512, None),
    ("gpt-small", "zoo:transformer:layers=4,d_model=256,heads=4,seq_len=128,vocab=4000", 16, None),
    ("wrn-16-2", "zoo:wrn-28-2:depth=16", 64, None),
    ("llama-small", "zoo:llama", 8, None),
    ("resnet50-128px", f"{MODELS / 'resnet50.py'}:workload:image=128", 8, None),
    ("unet", f"{MODELS / 'unet.py'}:workload", 8, None),
    ("gru-tagger", f"{MODELS / 'gru_tagger.py'}:workload", 32, None),
    ("mlp-mixer", f"{MODELS / 'mixer.py'}:model", 32, "3,64,64"),
]
FRACTIONS = (2, 3, 5)


def run_case(spec: str, batch: int, shape: str | None, fraction: int) -> dict:
    """In this process: estimate, plan for 1/fraction of the peak, verify."""
    import memfit
    from memfit.workload import load_workload as resolve

    workload = resolve(spec, input_shape=tuple(int(x) for x in shape.split(",")) if shape else None)
    base = memfit.estimate(workload, batch)
    budget = max(base.peak_bytes // fraction, 1)
    start = time.perf_counter()
    plan = memfit.plan(workload, budget, batch, reserve_bytes=0)
    plan_s = time.perf_counter() - start
    out = {"plan_s": plan_s, "plan": plan.to_dict(), "baseline_estimate": base.peak_bytes}
    if plan.fits:
        out["verify"] = memfit.verify(plan, workload, steps=2).to_dict()
    return out


def run_profile(spec: str, batch: int, shape: str | None) -> dict:
    import memfit
    from memfit.workload import load_workload as resolve

    workload = resolve(spec, input_shape=tuple(int(x) for x in shape.split(",")) if shape else None)
    start = time.perf_counter()
    p = memfit.profile(workload, batch)
    return {"profile_s": time.perf_counter() - start, "peak_bytes": p.peak_bytes}


def child(args: list[str]) -> dict:
    from memfit.measure.process import STABLE_ENVIRONMENT

    env = dict(os.environ, **STABLE_ENVIRONMENT)
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def pct(a: float, b: float) -> float:
    return 100 * (a / b - 1) if b else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--only", help="comma-separated workload labels (default: all)")
    args = parser.parse_args()
    if args.child:
        kind, spec, batch, shape, *rest = args.child
        shape = None if shape == "-" else shape
        result = (
            run_profile(spec, int(batch), shape)
            if kind == "profile"
            else run_case(spec, int(batch), shape, int(rest[0]))
        )
        print(json.dumps(result))
        return 0
    workloads = WORKLOADS[:3] if args.quick else WORKLOADS
    if args.only:
        wanted = set(args.only.split(","))
        workloads = [w for w in WORKLOADS if w[0] in wanted]
    fractions = FRACTIONS[:2] if args.quick else FRACTIONS
    rows, tracker_err, process_err, time_err, ratio, over = [], [], [], [], [], 0
    print(
        f"{'workload':<15} {'budget':>6} {'fits':>4} {'techniques':<44} {'pred MB':>8} "
        f"{'tracker':>8} {'err':>6} {'pred+scr':>8} {'process':>8} {'err':>6} "
        f"{'pred s':>7} {'meas s':>7} {'plan s':>7} {'prof s':>7} {'x prof':>6}",
        flush=True,
    )
    for label, spec, batch, shape in workloads:
        prof = child(["profile", spec, str(batch), shape or "-"])
        for fraction in fractions:
            r = child(["plan", spec, str(batch), shape or "-", str(fraction)])
            if "error" in r:
                print(f"{label:<15} 1/{fraction:<4} error: {r['error']}", flush=True)
                continue
            p = r["plan"]
            line = (
                f"{label:<15} {'1/' + str(fraction):>6} {'yes' if p['fits'] else 'no':>4} "
                f"{','.join(p['techniques']) or '-':<44} {p['predicted_peak_bytes'] / 1e6:8.1f} "
            )
            v = r.get("verify")
            prof_s = prof.get("profile_s", float("nan"))
            if v:
                te = pct(p["predicted_peak_bytes"], v["tracker_peak_bytes"])
                pe = pct(p["predicted_process_peak_bytes"], v["process_peak_bytes"])
                se = pct(v["predicted_step_s"], v["measured_step_s"])
                tracker_err.append(abs(te))
                process_err.append(abs(pe))
                time_err.append(abs(se))
                over += not v["within_budget"]
                line += (
                    f"{v['tracker_peak_bytes'] / 1e6:8.1f} {te:+6.1f} "
                    f"{p['predicted_process_peak_bytes'] / 1e6:8.1f} "
                    f"{v['process_peak_bytes'] / 1e6:8.1f} {pe:+6.1f} "
                    f"{v['predicted_step_s']:7.3f} {v['measured_step_s']:7.3f} "
                )
            else:
                line += f"{'':8} {'':6} {'':8} {'':8} {'':6} {'':7} {'':7} "
            ratio.append(r["plan_s"] / prof_s)
            line += f"{r['plan_s']:7.1f} {prof_s:7.1f} {r['plan_s'] / prof_s:6.2f}"
            rows.append(line)
            print(line, flush=True)

    def summary(name, values):
        if values:
            print(
                f"{name}: median {statistics.median(values):.1f}%, max {max(values):.1f}% "
                f"over {len(values)} verified plans"
            )

    print()
    summary("|predicted - tracker peak|", tracker_err)
    summary("|predicted (with scratch) - process peak|", process_err)
    summary("|predicted - measured step time|", time_err)
    if ratio:
        print(
            f"planning time / one measured profile: median {statistics.median(ratio):.2f}x, "
            f"max {max(ratio):.2f}x"
        )
    print(f"verified plans over budget: {over}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
