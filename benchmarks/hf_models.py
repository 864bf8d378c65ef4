"""Claim: for Hugging Face models named by `hf:`, memfit's estimate is close to the measured
step, the usual rules of thumb are not, and a verified plan fits 1/2 and 1/3 of the peak.

For seven architectures (decoder, encoder, encoder-decoder, vision transformer,
grouped-query attention with and without tied embeddings, a parallel-block decoder),
each at two batch sizes, with Adam:

- measured: `memfit profile MODEL --json` in a fresh process, `process_step_bytes`
  (the process's RSS high-water mark over one step, less its memory before the step
  that was not tensors: the OS's reading, not memfit's tracker);
- memfit: `memfit.estimate` on fake tensors;
- accelerate: its training estimate (`accelerate estimate-memory`: 4 x the weight
  bytes, from `calculate_maximum_sizes`);
- torch-kitsune: `kitsune.predict.predict_memory(..., training=True)`, where installed.

Then, for the larger batch of each model, `memfit plan MODEL --budget B --verify --json
--reserve 0` at B = 1/2 and 1/3 of the measured peak, reading `measured_peak_bytes`.
Models are shrunk (fewer layers, narrower) so the whole run takes minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # before transformers is imported

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

from memfit.estimator import estimate  # noqa: E402
from memfit.estimator.fake_build import harmless_init  # noqa: E402
from memfit.specs import load_workload  # noqa: E402

# (what it is, spec, batch sizes)
CASES = [
    ("decoder", "hf:gpt2:n_layer=4,n_embd=128,n_head=4,seq_len=128", (4, 16)),
    (
        "encoder",
        "hf:bert-base-uncased:num_hidden_layers=4,hidden_size=256,num_attention_heads=4,"
        "intermediate_size=1024,seq_len=128",
        (8, 32),
    ),
    (
        "encoder-decoder",
        "hf:t5-small:num_layers=3,d_model=256,d_ff=1024,num_heads=4,seq_len=128",
        (8, 32),
    ),
    (
        "vision transformer",
        "hf:google/vit-base-patch16-224:num_hidden_layers=4,hidden_size=256,"
        "num_attention_heads=4,intermediate_size=1024",
        (8, 32),
    ),
    (
        "decoder, GQA",
        "hf:TinyLlama-1.1B:num_hidden_layers=4,hidden_size=256,intermediate_size=704,"
        "num_attention_heads=8,num_key_value_heads=2,seq_len=256",
        (4, 16),
    ),
    (
        "decoder, GQA, tied",
        "hf:Qwen2.5-0.5B:num_hidden_layers=2,hidden_size=256,intermediate_size=1024,"
        "num_attention_heads=4,num_key_value_heads=2,seq_len=128",
        (2, 8),
    ),
    (
        "decoder, parallel block",
        "hf:phi-2:num_hidden_layers=2,hidden_size=256,intermediate_size=1024,"
        "num_attention_heads=8,num_key_value_heads=8,seq_len=128",
        (4, 16),
    ),
]
FRACTIONS = (2, 3)
ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576", TRANSFORMERS_VERBOSITY="error")


def memfit_cli(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "memfit", *args, "--json"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    if not out.stdout.strip():
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout)


def accelerate_training_bytes(spec: str) -> int | None:
    try:
        from accelerate.utils import calculate_maximum_sizes
    except ImportError:
        return None
    with FakeTensorMode():
        model = load_workload(spec).build_model()
    total, _ = calculate_maximum_sizes(model)
    return 4 * total  # accelerate's "Training using Adam" row for float32


def kitsune_bytes(spec: str, batch: int) -> int | None:
    try:
        from kitsune.predict import predict_memory
    except ImportError:
        return None
    workload = load_workload(spec)
    with torch.device("meta"), harmless_init():
        model = workload.build_model()
    sample = workload.make_batch(1, "meta")
    shape = (
        sample["pixel_values"].shape[1:]
        if "pixel_values" in sample
        else (workload.config["seq_len"],)
    )
    try:
        result = predict_memory(
            model, input_shape=tuple(shape), batch_size=batch, optimizer="adam", training=True
        )
    except Exception:  # its analysis fails on some models: shown as n/a
        return None
    return int(result.total_bytes)


def error(value: int | None, real: int) -> float | None:
    return None if value is None else value / real - 1


def cell(value: int | None, real: int) -> str:
    if value is None:
        return f"{'n/a':>9} {'':>7}"
    return f"{value / 1e6:>9.1f} {100 * (value / real - 1):>+6.1f}%"


def summary(name: str, errors: list[float | None]) -> str:
    values = [abs(e) for e in errors if e is not None]
    if not values:
        return f"{name} n/a"
    return f"{name} {100 * statistics.median(values):.1f}% / {100 * max(values):.1f}%"


def main() -> None:
    start = time.perf_counter()
    header = (
        f"{'model':<24} {'batch':>5} {'measured MB':>11} {'memfit MB':>9} {'err':>7} "
        f"{'accel MB':>9} {'err':>7} {'kitsune MB':>9} {'err':>7}"
    )
    print(header)
    print("-" * len(header))
    errors: dict[str, list[float | None]] = {"memfit": [], "accelerate": [], "kitsune": []}
    baselines = {}
    for what, spec, batches in CASES:
        accelerate_bytes = accelerate_training_bytes(spec)
        for batch in batches:
            real = memfit_cli("profile", spec, "--batch-size", str(batch), "--device", "cpu")
            real_bytes = real["process_step_bytes"]
            est = estimate(spec, batch).peak_bytes
            kit = kitsune_bytes(spec, batch)
            errors["memfit"].append(error(est, real_bytes))
            errors["accelerate"].append(error(accelerate_bytes, real_bytes))
            errors["kitsune"].append(error(kit, real_bytes))
            baselines[what] = (spec, batch, real_bytes)
            print(
                f"{what:<24} {batch:>5} {real_bytes / 1e6:>11.1f} {cell(est, real_bytes)} "
                f"{cell(accelerate_bytes, real_bytes)} {cell(kit, real_bytes)}",
                flush=True,
            )
    print(
        f"\n{len(errors['memfit'])} rows. |error| median / max: "
        + "; ".join(summary(name, values) for name, values in errors.items())
    )

    print(
        f"\n{'model':<24} {'batch':>5} {'budget':>6} {'MB':>7} {'fits':>4} {'predicted MB':>12} "
        f"{'measured MB':>11} {'inside':>6}  techniques"
    )
    inside = total = fitted = 0
    for what, (spec, batch, peak) in baselines.items():
        for fraction in FRACTIONS:
            budget = peak // fraction
            data = memfit_cli(
                "plan",
                spec,
                "--budget",
                str(budget),
                "--batch-size",
                str(batch),
                "--reserve",
                "0",
                "--verify",
            )
            measured = data.get("measured_peak_bytes")
            ok = measured is not None and measured <= budget
            inside += ok
            total += 1
            fitted += bool(data["fits"])
            print(
                f"{what:<24} {batch:>5} {'1/' + str(fraction):>6} {budget / 1e6:>7.1f} "
                f"{'yes' if data['fits'] else 'no':>4} {data['predicted_peak_bytes'] / 1e6:>12.1f} "
                f"{measured / 1e6 if measured else float('nan'):>11.1f} {'yes' if ok else 'NO':>6}  "
                f"{', '.join(data['techniques']) or '-'}",
                flush=True,
            )
    print(
        f"\nplans that fit: {fitted} of {total}; measured (--verify) inside the budget: "
        f"{inside} of {total}"
    )
    print(f"whole run: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
