"""Claim: memfit.compress shrinks the bytes a model holds (measured), at a measured accuracy
cost, and a pruned model needs less memory for a training step.

Models: the zoo's digits CNN (conv + BatchNorm) and a digits MLP (64-256-256-256-10), trained
briefly on scikit-learn's digits (real, bundled); accuracy on the held-out 25%.
Baselines in the same run: the dense trained model, and torch.nn.utils.prune (mask + dense
weight). Bytes are module_bytes (every parameter and buffer storage, counted once).

    MALLOC_MMAP_THRESHOLD_=131072 .venv/bin/python benchmarks/compression.py
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.utils.prune as torch_prune
from rich.console import Console
from rich.table import Table
from torch import nn

from memfit import zoo
from memfit.compress import accuracy, cluster, compress, finetune, prune, quantize, workload_data
from memfit.measure.bytes import module_bytes
from memfit.measure.profile import profile
from memfit.workload import Workload

TRAIN_STEPS = 300
TUNE_STEPS = 150


def torch_prune_baseline(model: nn.Module, amount: float) -> nn.Module:
    model = copy.deepcopy(model)
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=amount)
    return model


def methods(train):
    tune = {"finetune_data": train, "finetune_steps": TUNE_STEPS}
    return [
        ("prune 80% (sparse CSR)", lambda m, v: prune(m, 0.8, validation=v, **tune)),
        ("prune 90% (sparse CSR)", lambda m, v: prune(m, 0.9, validation=v, **tune)),
        (
            "prune 50% channels (structured)",
            lambda m, v: prune(m, 0.5, structured=True, scope="layer", validation=v, **tune),
        ),
        ("quantize int8", lambda m, v: quantize(m, 8, validation=v, **tune)),
        ("quantize int4", lambda m, v: quantize(m, 4, validation=v, **tune)),
        ("cluster k=16", lambda m, v: cluster(m, 16, validation=v, **tune)),
        ("prune 80% + cluster k=16", lambda m, v: compress(m, 0.8, k=16, validation=v, **tune)),
        ("prune 90% + cluster k=16", lambda m, v: compress(m, 0.9, k=16, validation=v, **tune)),
        (
            "prune 90% + cluster k=4",
            lambda m, v: compress(m, 0.9, k=4, index_bits=3, validation=v, **tune),
        ),
    ]


def compression_table(name: str, workload: Workload) -> list[tuple]:
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = workload_data(workload)
    train, test = (x_train, y_train), (x_test, y_test)
    dense = workload.build_model()
    finetune(dense, train, steps=TRAIN_STEPS, lr=2e-3)
    dense_bytes, dense_acc = module_bytes(dense), accuracy(dense, test)
    rows = [(name, "dense fp32 (baseline)", dense_bytes, dense_bytes, dense_acc, dense_acc, 0.0)]
    masked = torch_prune_baseline(dense, 0.8)
    rows.append(
        (
            name,
            "torch.nn.utils.prune 80%",
            dense_bytes,
            module_bytes(masked),
            dense_acc,
            accuracy(masked, test),
            0.0,
        )
    )
    for label, method in methods(train):
        start = time.perf_counter()
        _, report = method(dense, test)
        rows.append(
            (
                name,
                label,
                report.before_bytes,
                report.after_bytes,
                report.accuracy_before,
                report.accuracy_after,
                time.perf_counter() - start,
            )
        )
    return rows, dense, train


def step_peaks(workload: Workload, dense: nn.Module, train) -> list[tuple]:
    """Training-step peak (Adam, batch 256) of dense vs pruned copies of the same model."""
    variants = [
        ("dense", dense),
        ("prune 90% (sparse CSR)", prune(dense, 0.9)[0]),
        ("prune 50% channels (structured)", prune(dense, 0.5, structured=True, scope="layer")[0]),
    ]
    rows = []
    for label, model in variants:
        wrapped = Workload(
            name=label,
            build_model=lambda m=model: copy.deepcopy(m),
            make_batch=workload.make_batch,
            loss_fn=workload.loss_fn,
        )
        start = time.perf_counter()
        p = profile(wrapped, batch_size=256, optimizer="adam", device="cpu")
        rows.append((label, p.peak_bytes, p.categories, time.perf_counter() - start))
    return rows


def main() -> None:
    console = Console(width=140)
    workloads = [
        ("digits CNN", zoo.get("cnn")),
        ("digits MLP", zoo.get("mlp", inputs=64, depth=3, width=256)),
    ]
    table = Table(title="Compression: bytes held (module_bytes) and accuracy on digits test split")
    for column in (
        "model",
        "method",
        "before bytes",
        "after bytes",
        "ratio",
        "acc before",
        "acc after",
        "change (pts)",
        "time s",
    ):
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    peaks = Table(title="Training step (Adam, batch 256): measured peak and its categories")
    for column in (
        "model",
        "variant",
        "peak bytes",
        "vs dense",
        "parameters",
        "gradients",
        "optimizer",
        "activations",
    ):
        peaks.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for name, workload in workloads:
        rows, dense, train = compression_table(name, workload)
        for model, label, before, after, acc0, acc1, seconds in rows:
            table.add_row(
                model,
                label,
                f"{before:,}",
                f"{after:,}",
                f"{before / after:.1f}x",
                f"{acc0:.2%}",
                f"{acc1:.2%}",
                f"{100 * (acc1 - acc0):+.2f}",
                f"{seconds:.1f}",
            )
        step_rows = step_peaks(workload, dense, train)
        base = step_rows[0][1]
        for label, peak, cats, _ in step_rows:
            peaks.add_row(
                name,
                label,
                f"{peak:,}",
                f"{peak / base:.2f}x",
                *(f"{cats[k]:,}" for k in ("parameters", "gradients", "optimizer", "activations")),
            )
    console.print(table)
    console.print(peaks)
    console.print(
        f"Each method starts from the same trained dense model ({TRAIN_STEPS} Adam "
        f"steps); every compression step is followed by BatchNorm recalibration and "
        f"{TUNE_STEPS} fine-tuning steps with the mask fixed."
    )


if __name__ == "__main__":
    main()
