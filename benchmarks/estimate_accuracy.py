"""Claim: `estimate` predicts a real step's peak within a few percent, unlike the usual rules.

For each workload and batch size, one real training step is measured in a fresh child
process (the process's RSS high-water mark over the step, less its memory before the
model was built: an independent measurement, not memfit's tracker) and compared with:

- memfit's estimate on fake tensors;
- weights x 4: what `accelerate estimate-memory` reports for Adam training;
- torchinfo's "estimated total size": parameters + input + 2 x the outputs of leaf
  modules that hold parameters (its forward/backward pass size).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from memfit.estimator import estimate
from memfit.measure.step import batch_tensors
from memfit.workload import load_workload

CASES = [
    ("zoo:mlp", "adam", (256, 1024, 4096)),
    ("zoo:mlp:depth=24,width=2048,activation=gelu", "adam", (64, 512, 2048)),
    ("zoo:mlp:depth=8,width=1024", "sgd", (512, 2048, 8192)),
    ("zoo:cnn:channels=64,image=32,in_channels=3", "adam", (64, 128, 256)),
    ("zoo:resnet18", "adam", (16, 32, 64)),
    ("zoo:resnet18:width=32,image=64", "adamw", (8, 16, 32)),
    ("zoo:wrn-28-2", "adam", (32, 64, 128)),
    ("zoo:transformer", "adam", (4, 8, 16)),
    ("zoo:transformer:layers=4,d_model=256,heads=4,seq_len=512", "sgd", (4, 8, 16)),
    ("zoo:llama", "adam", (1, 2, 4)),
    ("zoo:llama:layers=2,seq_len=1024", "adamw", (1, 2, 4)),
]

CHILD = r"""
import json, sys
from memfit.measure.profile import profile
spec, batch, opt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = profile(spec, batch, opt, device="cpu")
print(json.dumps({"process": p.process_step_bytes, "tracker": p.peak_bytes}))
"""


def measured(spec: str, batch: int, optimizer: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, spec, str(batch), optimizer],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def torchinfo_total(spec: str, batch: int) -> int:
    """torchinfo's estimated total size, computed the way torchinfo computes it."""
    workload = load_workload(spec)
    outputs = 0

    def hook(module, _inputs, output):
        nonlocal outputs
        if any(True for _ in module.parameters(recurse=False)) and isinstance(output, torch.Tensor):
            outputs += output.numel() * output.element_size()

    with FakeTensorMode():
        model = workload.build_model()
        for module in model.modules():
            if not list(module.children()):
                module.register_forward_hook(hook)
        inputs, _ = workload.make_batch(batch, "cpu")
        workload.forward(model, inputs)
        input_bytes = sum(t.numel() * t.element_size() for t in batch_tensors(inputs))
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return param_bytes + input_bytes + 2 * outputs


def main() -> None:
    header = (
        f"{'workload':<48} {'opt':<5} {'batch':>5} {'measured MB':>11} {'memfit MB':>10} "
        f"{'err':>7} {'weights x4':>10} {'err':>7} {'torchinfo':>10} {'err':>7}"
    )
    print(header)
    print("-" * len(header))
    errors, acc_errors, ti_errors = [], [], []
    for spec, optimizer, batches in CASES:
        for batch in batches:
            real = measured(spec, batch, optimizer)["process"]
            est = estimate(spec, batch, optimizer)
            weights_x4 = 4 * est.categories["parameters"]
            torchinfo = torchinfo_total(spec, batch)
            err = est.peak_bytes / real - 1
            acc = weights_x4 / real - 1
            ti = torchinfo / real - 1
            errors.append(abs(err))
            acc_errors.append(abs(acc))
            ti_errors.append(abs(ti))
            print(
                f"{spec[4:]:<48} {optimizer:<5} {batch:>5} {real / 1e6:>11.1f} "
                f"{est.peak_bytes / 1e6:>10.1f} {100 * err:>+6.1f}% {weights_x4 / 1e6:>10.1f} "
                f"{100 * acc:>+6.1f}% {torchinfo / 1e6:>10.1f} {100 * ti:>+6.1f}%",
                flush=True,
            )
    print(
        f"\n{len(errors)} rows. |error| median / max: memfit "
        f"{100 * statistics.median(errors):.1f}% / {100 * max(errors):.1f}%; weights x4 "
        f"{100 * statistics.median(acc_errors):.1f}% / {100 * max(acc_errors):.1f}%; torchinfo "
        f"{100 * statistics.median(ti_errors):.1f}% / {100 * max(ti_errors):.1f}%"
    )


if __name__ == "__main__":
    main()
