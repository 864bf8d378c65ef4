"""A model that computes its own loss: no loss_fn, and micro-batches weighted by counted tokens."""

import copy

import pytest
import torch

from memfit import estimate, plan
from memfit.specs import load_workload
from memfit.techniques.accumulation import split_batch

pytest.importorskip("transformers")

# Dropout off: the gradients of two runs are then comparable.
TINY_GPT2 = (
    "hf:gpt2:n_layer=2,n_embd=32,n_head=2,vocab_size=97,seq_len=24,"
    "resid_pdrop=0.0,embd_pdrop=0.0,attn_pdrop=0.0"
)


def _ragged_batch(workload, size: int) -> dict:
    batch = workload.make_batch(size, "cpu")
    # Ragged on purpose: the first rows keep two labels, the last ones all of theirs.
    labels = batch["input_ids"].clone()
    for row in range(size):
        keep = 2 if row < size // 2 else labels.shape[1]
        labels[row, keep:] = -100
    batch["labels"] = labels
    batch["attention_mask"] = torch.ones_like(labels)
    return batch


def _gradients_of_one_update(step_fn, model, optimizer) -> list[torch.Tensor]:
    seen = []
    optimizer.register_step_pre_hook(
        lambda *_: seen.extend(p.grad.detach().clone() for p in model.parameters())
    )
    step_fn()
    return seen


def test_accumulated_gradient_equals_the_full_batch_with_ragged_labels():
    torch.manual_seed(0)
    workload = load_workload(TINY_GPT2)
    assert workload.loss_fn is None and workload.count_items is not None
    batch_size = 8
    baseline = estimate(workload, batch_size, "sgd").peak_bytes
    the_plan = plan(
        workload, int(baseline * 0.7), batch_size, exact=True, optimizer="sgd", reserve_bytes=0
    )
    assert the_plan.fits and the_plan.accumulation_steps > 1
    batch = _ragged_batch(workload, batch_size)

    model = workload.build_model()
    reference = copy.deepcopy(model)
    reference.zero_grad()
    reference(**batch).loss.backward()
    full = [p.grad.detach().clone() for p in reference.parameters()]

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = the_plan.apply(model, optimizer)
    planned = _gradients_of_one_update(lambda: step(batch), model, optimizer)
    for got, want in zip(planned, full, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    # Weighting by samples instead would be wrong here: the test can tell them apart.
    pieces = split_batch(batch, the_plan.micro_batch_size)
    by_samples = copy.deepcopy(reference)
    by_samples.zero_grad()
    for piece, size in pieces:
        (by_samples(**piece).loss * (size / batch_size)).backward()
    differences = [
        (p.grad - want).abs().max().item()
        for p, want in zip(by_samples.parameters(), full, strict=True)
    ]
    assert max(differences) > 1e-3


def test_count_items_counts_what_the_causal_loss_reads():
    workload = load_workload(TINY_GPT2)
    batch = _ragged_batch(workload, 4)
    model = workload.build_model()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # By hand: predict token t+1 from position t, skipping ignored labels.
    targets = batch["labels"][:, 1:]
    summed = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    count = workload.count_items(batch)
    assert count == int((targets != -100).sum()) == 2 * 1 + 2 * 23
    torch.testing.assert_close(model(**batch).loss, summed / count)


def test_a_micro_batch_with_no_counted_label_adds_nothing():
    from memfit.measure.step import StepSettings, TrainingStep

    torch.manual_seed(0)
    workload = load_workload(TINY_GPT2)
    batch = _ragged_batch(workload, 4)
    batch["labels"][:2] = -100  # the first micro-batch of two rows has nothing to learn
    model = workload.build_model()
    reference = copy.deepcopy(model)
    reference(**batch).loss.backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = TrainingStep.for_workload(workload, model, optimizer, StepSettings(micro_batch_size=2))
    planned = _gradients_of_one_update(lambda: step(batch), model, optimizer)
    for got, ref in zip(planned, reference.parameters(), strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref.grad, rtol=1e-4, atol=1e-6)
