"""Checkpointing saves memory for real, keeps gradients, and can be applied twice."""

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from memfit import zoo
from memfit.errors import TechniqueError
from memfit.techniques import checkpointing as ckpt
from memfit.train import PlannedStep

SMALL_GPT = dict(layers=4, d_model=128, heads=4, seq_len=64, vocab=300)


def _grads_and_peak(model, workload, batch):
    # Peak first, on its own: keeping gradient copies would add to it.
    step = PlannedStep(model, torch.optim.SGD(model.parameters(), lr=0.0), workload.loss_fn, None)
    _, peak = step.measure(batch)
    workload.loss(model, batch).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads, peak


def test_checkpointing_blocks_lowers_measured_peak_and_keeps_gradients():
    w = zoo.get("transformer", **SMALL_GPT)
    torch.manual_seed(0)
    plain = w.build_model()
    checkpointed = copy.deepcopy(plain)
    names = ckpt.candidate_units(checkpointed)
    assert names == [f"layers.{i}" for i in range(4)]
    assert ckpt.checkpoint_modules(checkpointed, names) == names
    batch = w.make_batch(8, "cpu")
    torch.manual_seed(1)
    g_plain, peak_plain = _grads_and_peak(plain, w, batch)
    torch.manual_seed(1)
    g_ckpt, peak_ckpt = _grads_and_peak(checkpointed, w, batch)
    assert peak_ckpt < 0.8 * peak_plain
    for name in g_plain:
        torch.testing.assert_close(g_ckpt[name], g_plain[name], rtol=1e-4, atol=1e-6)


def test_applying_twice_is_harmless_and_keeps_state_dict_keys():
    model = zoo.get("transformer", **SMALL_GPT).build_model()
    keys = list(model.state_dict())
    ckpt.checkpoint_modules(model, ["layers.0"])
    assert ckpt.checkpoint_modules(model, ["layers.0", "layers.1"]) == ["layers.1"]
    assert list(model.state_dict()) == keys
    assert ckpt.checkpointed_names(model) == ["layers.0", "layers.1"]
    ckpt.remove_checkpointing(model)
    assert ckpt.checkpointed_names(model) == []


def test_recompute_shows_up_as_extra_forward_flops():
    w = zoo.get("mlp", depth=8, width=128, inputs=128)

    def flops(model):
        with FlopCounterMode(display=False) as counter:
            w.loss(model, w.make_batch(32, "cpu")).backward()
        return counter.get_total_flops()

    torch.manual_seed(0)
    plain = w.build_model()
    seg = copy.deepcopy(plain)
    ckpt.checkpoint_segments(seg, "blocks", 3)
    base, more = flops(plain), flops(seg)
    # segments other than the last run their forward twice
    assert base < more < 1.5 * base


def test_sqrt_segments_keep_only_boundaries():
    w = zoo.get("mlp", depth=16, width=256, inputs=256)
    torch.manual_seed(0)
    plain = w.build_model()
    seg = copy.deepcopy(plain)
    assert ckpt.checkpoint_segments(seg, "blocks") == 4
    batch = w.make_batch(512, "cpu")
    g1, p1 = _grads_and_peak(plain, w, batch)
    g2, p2 = _grads_and_peak(seg, w, batch)
    assert p2 < p1
    torch.testing.assert_close(g2["head.weight"], g1["head.weight"], rtol=1e-4, atol=1e-6)


def test_unknown_or_wrong_modules_are_refused():
    model = zoo.get("transformer", **SMALL_GPT).build_model()
    with pytest.raises(TechniqueError, match="no such module"):
        ckpt.checkpoint_modules(model, ["layers.9"])
    with pytest.raises(TechniqueError, match="nn.Sequential"):
        ckpt.checkpoint_segments(model, "layers")


def test_selection_covers_the_need_at_least_recompute_cost():
    units = [
        ckpt.Unit("a", 100, 10, 1.0),
        ckpt.Unit("b", 100, 10, 4.0),
        ckpt.Unit("c", 50, 10, 0.1),
        ckpt.Unit("d", 5, 10, 0.01),
    ]
    assert ckpt.select_units(units, 0) == []
    assert ckpt.select_units(units, 40) == ["c"]
    assert ckpt.select_units(units, 100) == ["c", "a"]
    assert set(ckpt.select_units(units, 10_000)) == {"a", "b", "c"}  # d saves nothing


def test_checkpoint_inputs_count_as_activations_not_other():
    from memfit.estimator import estimate

    w = zoo.get("transformer", **SMALL_GPT)
    plain = estimate(w, 8)
    checkpointed = estimate(
        w, 8, prepare=lambda m: ckpt.checkpoint_modules(m, ckpt.candidate_units(m))
    )
    kept = sum(r.activations for r in checkpointed.modules)
    assert 0 < kept < 0.5 * sum(r.activations for r in plain.modules)
