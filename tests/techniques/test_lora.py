"""LoRA through peft: only the adapters train, the frozen weights stay, and the predicted
parameter, gradient and optimizer bytes are the real model's and optimizer's."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

pytest.importorskip("peft")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memfit import zoo  # noqa: E402
from memfit.budget import Budget  # noqa: E402
from memfit.cli import main  # noqa: E402
from memfit.errors import PlanError  # noqa: E402
from memfit.planning import PlanSettings, plan, predict  # noqa: E402
from memfit.planning.inputs import FakeRuns, PlanRequest, gather  # noqa: E402
from memfit.planning.search import _Search  # noqa: E402
from memfit.specs.hf import hf_workload  # noqa: E402
from memfit.techniques.lora import LoraConfig  # noqa: E402

RANK = LoraConfig().rank
EMBD, LAYERS = 64, 2
GPT2 = hf_workload(f"gpt2:n_layer={LAYERS},n_embd={EMBD},n_head=2,vocab_size=128,seq_len=32")
# nn.Linear layers (torchao quantizes those; GPT-2's Conv1D stays bf16).
LLAMA = hf_workload(
    "llama:hidden_size=64,intermediate_size=128,num_hidden_layers=2,num_attention_heads=2,"
    "num_key_value_heads=2,vocab_size=128,seq_len=32"
)
MLP = zoo.get("mlp", depth=3, width=128, inputs=64)
BATCH = 8


def _gpt2_hand_count() -> int:
    # Per GPT-2 block: c_attn (d -> 3d), attn.c_proj (d -> d), mlp.c_fc (d -> 4d),
    # mlp.c_proj (4d -> d); lm_head (tied to the embedding) is not adapted.
    d = EMBD
    per_block = RANK * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    return LAYERS * per_block


def _mlp_hand_count() -> int:
    # zoo mlp: blocks 64 -> 128 -> 128 -> 128, then the head (not adapted).
    return RANK * ((64 + 128) + (128 + 128) + (128 + 128))


_BASE_PLANS: dict[str, object] = {}


def _base_plan(workload):
    # One plan per model carries the hand-made settings (planning costs seconds).
    if workload.name not in _BASE_PLANS:
        _BASE_PLANS[workload.name] = plan(workload, "1TB", batch_size=BATCH, reserve_bytes=0)
    return _BASE_PLANS[workload.name]


def _plan_with(workload, config: LoraConfig):
    return _base_plan(workload).with_settings(PlanSettings(BATCH, (config,)))


def _real_bytes(tensors) -> int:
    """numel * element_size of each distinct tensor, quantized ones by their inner tensors."""
    seen, total = set(), 0
    for t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        if hasattr(type(t), "__tensor_flatten__") and type(t) not in (
            torch.Tensor,
            torch.nn.Parameter,
        ):
            names, _ = t.__tensor_flatten__()
            total += sum(getattr(t, n).numel() * getattr(t, n).element_size() for n in names)
        else:
            total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize(
    ("workload", "hand"), [(GPT2, _gpt2_hand_count), (MLP, _mlp_hand_count)], ids=["gpt2", "mlp"]
)
def test_only_the_adapters_train_and_they_are_r_times_in_plus_out(workload, hand):
    model = workload.build_model()
    step = _plan_with(workload, LoraConfig()).apply(model, torch.optim.AdamW(model.parameters()))
    assert step.model is model  # adapters injected in place
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    assert sum(p.numel() for p in trained.values()) == hand()
    optimized = [p for g in step.optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in trained.values()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert all(p.dtype in (torch.bfloat16, torch.float32) for p in frozen)
    linear_weights = [m.weight for n, m in model.named_modules() if n.endswith("base_layer")]
    assert linear_weights and all(w.dtype == torch.bfloat16 for w in linear_weights)


@pytest.mark.parametrize(
    ("workload", "base"), [(GPT2, "bf16"), (LLAMA, "int8")], ids=["gpt2-bf16", "llama-int8"]
)
def test_base_weights_stay_adapters_move_and_the_loss_falls(workload, base):
    torch.manual_seed(0)
    model = workload.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = _plan_with(workload, LoraConfig(base=base)).apply(model, optimizer)
    frozen = {n: _snapshot(p) for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    batch = workload.make_batch(BATCH, "cpu")
    losses = [step(batch) for _ in range(6)]
    assert losses[-1] < 0.95 * losses[0]
    for name, param in model.named_parameters():
        if name in frozen:
            for a, b in zip(frozen[name], _snapshot(param), strict=True):
                assert torch.equal(a, b), name
    moved = [n for n, p in model.named_parameters() if n in adapters and ".lora_B." in n]
    assert moved and all(
        not torch.equal(adapters[n], dict(model.named_parameters())[n]) for n in moved
    )


def _snapshot(param: torch.Tensor) -> list[torch.Tensor]:
    if hasattr(type(param), "__tensor_flatten__") and type(param) is not torch.nn.Parameter:
        names, _ = param.__tensor_flatten__()
        return [getattr(param, n).clone() for n in names]
    return [param.detach().clone()]


@pytest.mark.parametrize(
    ("workload", "base"),
    [(GPT2, "bf16"), (LLAMA, "int8"), (GPT2, "int8")],
    ids=["gpt2-bf16", "llama-int8", "gpt2-int8"],
)
def test_predicted_model_state_bytes_are_the_real_ones_after_a_step(workload, base):
    config = LoraConfig(base=base)
    predicted = predict(workload, [config], batch_size=BATCH).prediction.phases["optimizer_step"]
    torch.manual_seed(0)
    model = workload.build_model()
    step = _plan_with(workload, config).apply(model, torch.optim.AdamW(model.parameters()))
    batch = workload.make_batch(BATCH, "cpu")
    # Gradients as the optimizer step finds them: after backward, before the update.
    step.optimizer.zero_grad(set_to_none=True)
    workload.loss(model, batch).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert predicted["gradients"] == _real_bytes(grads)
    step.optimizer.step()
    state = [v for s in step.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    assert predicted["optimizer"] == _real_bytes(state)
    params = list(model.parameters()) + list(model.buffers())
    assert predicted["parameters"] == _real_bytes(params)
    if base == "int8":
        codes = [m.weight.qdata for n, m in model.named_modules() if n.endswith("base_layer")]
        # One byte a weight: the int8 codes are really int8.
        assert codes and all(c.dtype == torch.int8 for c in codes)


def test_adapters_keep_the_users_groups_and_scheduler():
    model = MLP.build_model()
    optimizer = torch.optim.AdamW(
        [
            {"params": model.blocks.parameters(), "lr": 1e-2, "weight_decay": 0.1},
            {"params": model.head.parameters(), "lr": 1e-3, "weight_decay": 0.0},
        ]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0 if e < 1 else 0.0)
    step = _plan_with(MLP, LoraConfig()).apply(model, optimizer)
    groups = step.optimizer.param_groups
    assert [g is u for g, u in zip(groups, optimizer.param_groups, strict=True)] == [True, True]
    assert len(groups[0]["params"]) == 2 * 3 and groups[1]["params"] == []  # head: no adapters
    batch = MLP.make_batch(BATCH, "cpu")
    step(batch)
    scheduler.step()
    after_first = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(batch)
    for name, param in model.named_parameters():
        assert torch.equal(param, after_first[name]), name  # lr 0 now: nothing moves


def _context(allow):
    request = PlanRequest(
        batch_size=BATCH,
        optimizer=None,
        device="cpu",
        room=Budget.parse("1MB").room(0),
        allow=frozenset(allow),
    )
    ctx = gather(MLP, request)
    measured = dataclasses.replace(
        ctx.measurements,
        precision_slowdown={"bf16": 1.0},
        lora_base_slowdown={"bf16": 1.0, "int8": 1.0},
    )
    return dataclasses.replace(ctx, measurements=measured), request


def test_the_planner_offers_lora_only_when_allowed_and_after_lossy_tiers():
    ctx, request = _context(())
    offered = {
        c.technique
        for tier in _Search(ctx, FakeRuns(MLP, request)).tiers()
        for combo in tier
        for c in combo
    }
    assert "lora" not in offered and "precision" in offered
    ctx, request = _context(("lora",))
    tiers = _Search(ctx, FakeRuns(MLP, request)).tiers()
    first_lora = next(
        i for i, t in enumerate(tiers) if any("lora" in {c.technique for c in x} for x in t)
    )
    assert first_lora > 0
    assert all(
        "lora" not in {c.technique for c in combo} for tier in tiers[:first_lora] for combo in tier
    )
    assert any(
        c.technique == "precision" for tier in tiers[:first_lora] for combo in tier for c in combo
    )
    with pytest.raises(PlanError, match="memfit has: lora"):
        plan(MLP, "1TB", batch_size=BATCH, allow=["lorra"])


def test_cli_plan_with_allow_lora_chooses_it(capsys):
    # Model states dominate (SGD with momentum: 12 bytes a weight) and no exact or lossy
    # technique shrinks them; only LoRA's frozen bf16 weights fit a budget of half the step.
    model = "zoo:mlp:depth=2,width=1024,inputs=1024"
    estimate = predict(
        zoo.get("mlp", depth=2, width=1024, inputs=1024), [], batch_size=4, optimizer="sgd"
    ).predicted_peak_bytes
    args = ["plan", model, "--budget", f"{estimate // 2}B", "--reserve", "0", "--batch-size", "4",
            "--optimizer", "sgd", "--json"]  # fmt: skip
    assert main(args) != 0 or not json.loads(capsys.readouterr().out)["fits"]
    capsys.readouterr()
    assert main([*args, "--allow", "lora"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and "lora" in data["techniques"]
    assert data["lora"]["rank"] == RANK
    assert main([*args, "--allow", "lorra"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lorra" in err[0] and "lora" in err[0]
