"""Claim: with Adam state offloaded, a step's resident memory stays inside the bound.

An MLP of 8 Linear(2048, 2048) blocks (33.6 M parameters, 134 MB fp32) trained
with AdamW: its state is 268 MB, more than 4x the 64 MiB bound. Each mode runs
in its own child process with MALLOC_MMAP_THRESHOLD_=131072; memory is the
kernel's RSS high-water mark (VmHWM, reset through /proc/self/clear_refs).

Figures, all measured:
- `step over`: peak RSS during `optimizer.step()` minus RSS just before it: what
  the optimizer holds resident (state windows and temporaries). The bound covers this.
- `train over`: peak RSS over whole steps (forward, backward, step) minus the
  baseline (after imports, the model's parameters built, one warm-up step on a
  tiny parameter to load the code). Parameters are in the baseline; gradients
  are in this figure unless they are offloaded too.
- `held after`: RSS after training (gradients freed) minus the baseline: the
  optimizer state kept in RAM between steps.
- `step s`: median `optimizer.step()` time over steps 2..N; ratio vs in-memory.

Modes: torch AdamW in memory; offloaded with the page cache kept (this machine
has RAM to spare, so the files stay cached: the fast case); offloaded with the
page cache dropped after every chunk (flush + fadvise: the disk-bound case a
machine short of RAM sees); offloaded with gradients too. The last line
compares the disk-bound step time with `effect`'s prediction from the
measured bandwidth.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BOUND = 64 * 2**20
STEPS = 5
MODES = ["in-memory", "offload", "offload, cache dropped", "offload + gradients"]


def child(mode: str, state_dir: str) -> None:
    import torch
    from torch import nn

    from memfit.measure.process import current_rss_bytes, peak_rss_bytes, reset_peak_rss
    from memfit.techniques.offload import OffloadedOptimizer

    torch.manual_seed(0)
    blocks = [m for _ in range(8) for m in (nn.Linear(2048, 2048), nn.GELU())]
    model = nn.Sequential(*blocks)

    def make(params, folder):
        if mode == "in-memory":
            return torch.optim.AdamW(params, lr=1e-4)
        return OffloadedOptimizer(
            params,
            "adamw",
            lr=1e-4,
            state_dir=folder,
            max_resident_bytes=BOUND,
            drop_page_cache=mode == "offload, cache dropped",
            offload_gradients=mode == "offload + gradients",
        )

    tiny = nn.Parameter(torch.zeros(8))
    tiny.grad = torch.ones(8)
    make([tiny], os.path.join(state_dir, "warm-up")).step()  # loads the step's code once
    opt = make(model.parameters(), os.path.join(state_dir, "state"))
    x = torch.randn(32, 2048)
    baseline = current_rss_bytes()
    step_over, train_peak, step_times = 0, 0, []
    for _ in range(STEPS):
        reset_peak_rss()
        model(x).square().mean().backward()
        train_peak = max(train_peak, peak_rss_bytes())
        reset_peak_rss()
        before = current_rss_bytes()
        start = time.perf_counter()
        opt.step()
        step_times.append(time.perf_counter() - start)
        step_peak = peak_rss_bytes()
        step_over = max(step_over, step_peak - before)
        train_peak = max(train_peak, step_peak)
        opt.zero_grad(set_to_none=True)
    print(
        json.dumps(
            {
                "step_over": step_over,
                "train_over": train_peak - baseline,
                "held_after": current_rss_bytes() - baseline,
                "step_s": statistics.median(step_times[1:]),
                "state_bytes": 2 * 4 * sum(p.numel() for p in model.parameters()),
            }
        )
    )


def run_child(mode: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    with tempfile.TemporaryDirectory(dir=os.environ.get("MEMFIT_OFFLOAD_DIR")) as folder:
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, folder],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from memfit.techniques.offload import effect, measure_disk_bandwidth

    results = {mode: run_child(mode) for mode in MODES}
    base = results["in-memory"]
    mib = 2**20
    print(
        f"AdamW state {base['state_bytes'] / mib:.0f} MiB, bound {BOUND / mib:.0f} MiB "
        f"(state / bound = {base['state_bytes'] / BOUND:.1f})"
    )
    header = (
        f"{'mode':<24} {'step over MiB':>13} {'in bound':>8} {'train over MiB':>14} "
        f"{'held after MiB':>14} {'step s':>7} {'vs in-memory':>12}"
    )
    print(header)
    print("-" * len(header))
    for mode, r in results.items():
        inside = "yes" if r["step_over"] <= BOUND else "no"
        print(
            f"{mode:<24} {r['step_over'] / mib:>13.1f} {inside:>8} {r['train_over'] / mib:>14.1f} "
            f"{r['held_after'] / mib:>14.1f} {r['step_s']:>7.3f} "
            f"{r['step_s'] / base['step_s']:>11.2f}x"
        )

    folder = os.environ.get("MEMFIT_OFFLOAD_DIR") or tempfile.gettempdir()
    bandwidth = measure_disk_bandwidth(folder)
    predicted = effect(base["state_bytes"] // 2, "adamw", BOUND, bandwidth=bandwidth)
    dropped = results["offload, cache dropped"]["step_s"]
    measured_extra = dropped - base["step_s"]
    print(
        f"\ndisk in {folder}: write {bandwidth.write_bytes_per_s / 1e6:.0f} MB/s, "
        f"read {bandwidth.read_bytes_per_s / 1e6:.0f} MB/s"
    )
    print(
        f"extra s/step with the cache dropped: measured {measured_extra:.3f}, "
        f"predicted by effect() {predicted.extra_seconds_per_step:.3f} "
        f"(measured/predicted {measured_extra / predicted.extra_seconds_per_step:.2f})"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
