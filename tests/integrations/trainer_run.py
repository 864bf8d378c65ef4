"""A real Hugging Face Trainer run under a memfit plan; prints one JSON line of what it measured.

Run as a script, in a fresh process, so that its resident memory is a training
script's own and not a test runner's.
"""

import gc
import glob
import json
import os
import sys

import torch
from transformers import Trainer, TrainingArguments

from memfit import estimate, plan
from memfit.integrations.transformers import MemoryBudgetCallback, training_arguments
from memfit.measure.process import current_rss_bytes
from memfit.specs import load_workload

SEQ_LEN = 128
BATCH = 32
SPEC = f"hf:gpt2:vocab_size=256,n_layer=2,n_embd=128,n_head=4,seq_len={SEQ_LEN}"


def stdlib_text(files: int = 40) -> bytes:
    """Real text on every machine: the standard library's own source, read as bytes."""
    paths = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    return b"".join(open(path, "rb").read() for path in paths[:files])


class ByteChunks(torch.utils.data.Dataset):
    """Byte-level language modelling: rows of `seq_len` bytes, the bytes as labels."""

    def __init__(self, data: bytes, seq_len: int):
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self.seq_len = seq_len

    def __len__(self):
        return len(self.data) // self.seq_len

    def __getitem__(self, i):
        ids = self.data[i * self.seq_len : (i + 1) * self.seq_len]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def run(trainer_args: dict, callback, model, data, steps: int):
    args = TrainingArguments(
        output_dir=sys.argv[1],
        max_steps=steps,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        learning_rate=1e-3,
        **trainer_args,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    return trainer.state.global_step


def main():
    torch.manual_seed(0)
    data = ByteChunks(stdlib_text(60), SEQ_LEN)
    workload = load_workload(SPEC)
    # A budget below what the process holds already: the run stops after its first step.
    # It also warms the runtime up (autograd, kernels, thread pools, Trainer's imports),
    # so that what the process holds afterwards is a training script's own runtime.
    tight = MemoryBudgetCallback(budget=current_rss_bytes() // 2, on_over_budget="stop")
    stopped_at = run(
        {"per_device_train_batch_size": 4, "use_cpu": True}, tight, workload.build_model(), data, 3
    )
    gc.collect()
    runtime = current_rss_bytes()

    baseline = estimate(workload, BATCH, "adamw").peak_bytes
    budget = runtime + baseline // 2
    the_plan = plan(workload, budget, BATCH, exact=True, optimizer="adamw", reserve_bytes=runtime)
    fields = training_arguments(the_plan)
    callback = MemoryBudgetCallback(the_plan, on_over_budget="stop")
    before_training = current_rss_bytes()
    steps = run(fields, callback, workload.build_model(), data, steps=3)
    print(
        json.dumps(
            {
                "runtime_bytes": runtime,
                "before_training_bytes": before_training,
                "baseline_bytes": baseline,
                "budget_bytes": budget,
                "predicted_peak_bytes": the_plan.predicted_peak_bytes,
                "fields": fields,
                "techniques": the_plan.techniques,
                "steps": steps,
                "measured_peak_bytes": callback.measured_peak_bytes,
                "steps_measured": callback.watch.steps_seen,
                "over_budget": callback.over_budget,
                "tight_stopped_at": stopped_at,
                "tight_summary": tight.summary(),
                "tight_over": tight.over_budget,
            }
        )
    )


if __name__ == "__main__":
    main()
