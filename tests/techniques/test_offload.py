"""OffloadedOptimizer matches torch's Adam/AdamW and refuses state it cannot trust."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from memfit.errors import OffloadError, TechniqueError
from memfit.techniques.offload import (
    DiskBandwidth,
    OffloadConfig,
    OffloadedOptimizer,
    apply,
    effect,
    measure_disk_bandwidth,
)

SMALL_BOUND = 2**20  # 1 MiB: the model below spans several chunks


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # about 190k parameters: several chunks under a 1 MiB bound.
    return nn.Sequential(
        nn.Linear(64, 400), nn.GELU(), nn.Linear(400, 400), nn.GELU(), nn.Linear(400, 10)
    )


def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range, accumulate: int = 1) -> None:
    for i in steps:
        opt.zero_grad()
        for j in range(accumulate):
            x, y = batch(i * accumulate + j)
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def max_difference(a: nn.Module, b: nn.Module) -> float:
    return max(
        (p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("name", "reference", "options"),
    [
        ("adamw", torch.optim.AdamW, {}),
        ("adam", torch.optim.Adam, {"weight_decay": 0.1, "amsgrad": True}),
    ],
)
@pytest.mark.parametrize("offload_gradients", [False, True])
def test_parameters_match_in_memory_optimizer(
    tmp_path, name, reference, options, offload_gradients
):
    base, offloaded_model = make_model(), make_model()
    in_memory = reference(base.parameters(), lr=1e-2, **options)
    offloaded = OffloadedOptimizer(
        offloaded_model.parameters(),
        name,
        lr=1e-2,
        state_dir=tmp_path,
        max_resident_bytes=SMALL_BOUND,
        offload_gradients=offload_gradients,
        **options,
    )
    assert offloaded.chunk_elements < sum(p.numel() for p in base.parameters()) // 2
    train(base, in_memory, range(6), accumulate=2)
    train(offloaded_model, offloaded, range(6), accumulate=2)
    assert max_difference(base, offloaded_model) <= 1e-6
    assert max_difference(base, make_model()) > 1e-3  # training moved the parameters


def test_groups_frozen_parameters_and_scheduler_match(tmp_path):
    def groups(model: nn.Module) -> list[dict]:
        return [
            {"params": model[0].parameters(), "lr": 1e-2},
            {"params": list(model[2].parameters()) + list(model[4].parameters()), "lr": 3e-3},
        ]

    base, offloaded_model = make_model(), make_model()
    for model in (base, offloaded_model):
        model[2].bias.requires_grad_(False)  # never gets a gradient: skipped, like torch
    in_memory = torch.optim.AdamW(groups(base))
    offloaded = OffloadedOptimizer(
        groups(offloaded_model), state_dir=tmp_path, max_resident_bytes=SMALL_BOUND
    )
    schedulers = [torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5) for o in (in_memory, offloaded)]
    for i in range(5):
        train(base, in_memory, range(i, i + 1))
        train(offloaded_model, offloaded, range(i, i + 1))
        for s in schedulers:
            s.step()
    assert offloaded.param_groups[1]["lr"] == in_memory.param_groups[1]["lr"]
    assert max_difference(base, offloaded_model) <= 1e-6
    assert offloaded.state[offloaded_model[2].bias] == {}


def test_checkpoint_and_resume_continue_the_same_run(tmp_path):
    straight, resumed_model = make_model(), make_model()
    uninterrupted = OffloadedOptimizer(
        straight.parameters(), lr=1e-2, state_dir=tmp_path / "a", max_resident_bytes=SMALL_BOUND
    )
    train(straight, uninterrupted, range(6))

    first = OffloadedOptimizer(
        resumed_model.parameters(),
        lr=1e-2,
        state_dir=tmp_path / "b",
        max_resident_bytes=SMALL_BOUND,
    )
    train(resumed_model, first, range(3))
    first.checkpoint()
    saved_weights = copy.deepcopy(resumed_model.state_dict())
    first.close()
    del first

    restarted_model = make_model()
    restarted_model.load_state_dict(saved_weights)
    second = OffloadedOptimizer(
        restarted_model.parameters(),
        lr=0.5,  # overridden by the saved hyper-parameters
        state_dir=tmp_path / "b",
        max_resident_bytes=SMALL_BOUND,
        resume=True,
        offload_gradients=True,  # a scratch file the first run never made
    )
    assert second.param_groups[0]["lr"] == 1e-2
    assert second.state[restarted_model[0].weight]["step"].item() == 3
    train(restarted_model, second, range(3, 6))
    assert max_difference(straight, restarted_model) <= 1e-6


def test_existing_state_needs_resume_and_resume_needs_state(tmp_path):
    OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path / "used")
    with pytest.raises(OffloadError, match="resume=True"):
        OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path / "used")
    with pytest.raises(OffloadError, match="no offloaded state"):
        OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path / "empty", resume=True)


def test_state_never_checkpointed_is_refused(tmp_path):
    model = make_model()
    train(model, OffloadedOptimizer(model.parameters(), state_dir=tmp_path), range(1))
    with pytest.raises(OffloadError, match="changed after its last checkpoint"):
        OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path, resume=True)


def test_step_interrupted_after_checkpoint_is_refused(tmp_path, monkeypatch):
    model = make_model()
    opt = OffloadedOptimizer(model.parameters(), state_dir=tmp_path, max_resident_bytes=SMALL_BOUND)
    train(model, opt, range(2))
    opt.checkpoint()
    real_update = OffloadedOptimizer._update_chunk
    calls = []

    def update_then_die(self, *args):
        real_update(self, *args)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a kill after part of the files changed

    monkeypatch.setattr(OffloadedOptimizer, "_update_chunk", update_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(model, opt, range(2, 3))
    monkeypatch.undo()
    with pytest.raises(OffloadError, match="changed after its last checkpoint"):
        OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path, resume=True)


def test_changed_or_cut_files_are_detected(tmp_path):
    model = make_model()
    opt = OffloadedOptimizer(model.parameters(), state_dir=tmp_path)
    train(model, opt, range(2))
    opt.checkpoint()
    opt.close()
    state_file = tmp_path / "exp_avg.f32"
    data = bytearray(state_file.read_bytes())
    data[100] ^= 0xFF
    state_file.write_bytes(bytes(data))
    with pytest.raises(OffloadError, match="checksum"):
        OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path, resume=True)
    state_file.write_bytes(bytes(data[:-4096]))
    with pytest.raises(OffloadError, match="cut short"):
        OffloadedOptimizer(make_model().parameters(), state_dir=tmp_path, resume=True)


def test_resume_with_another_model_is_refused(tmp_path):
    model = make_model()
    opt = OffloadedOptimizer(model.parameters(), state_dir=tmp_path)
    train(model, opt, range(1))
    opt.checkpoint()
    with pytest.raises(OffloadError, match="another setup"):
        OffloadedOptimizer(nn.Linear(64, 10).parameters(), state_dir=tmp_path, resume=True)


def test_copy_to_keeps_a_checkpoint_that_later_steps_do_not_change(tmp_path):
    model = make_model()
    opt = OffloadedOptimizer(model.parameters(), state_dir=tmp_path / "live")
    train(model, opt, range(2))
    weights = copy.deepcopy(model.state_dict())
    opt.checkpoint(copy_to=tmp_path / "kept")
    train(model, opt, range(2, 4))  # the live files move on, unchecked
    restored = make_model()
    restored.load_state_dict(weights)
    again = OffloadedOptimizer(restored.parameters(), state_dir=tmp_path / "kept", resume=True)
    assert again.state[restored[0].weight]["step"].item() == 2


def test_state_dict_round_trip_and_stale_state_dict(tmp_path):
    model = make_model()
    opt = OffloadedOptimizer(model.parameters(), lr=2e-3, state_dir=tmp_path)
    train(model, opt, range(2))
    saved = opt.state_dict()
    assert saved["state"][0]["step"] == 2
    assert saved["offload"]["status"] == "clean"
    opt.param_groups[0]["lr"] = 9.0
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 2e-3
    train(model, opt, range(2, 3))
    with pytest.raises(OffloadError, match="not the ones"):
        opt.load_state_dict(saved)
    with pytest.raises(OffloadError, match="not made by OffloadedOptimizer"):
        opt.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_apply_moves_an_existing_optimizer_and_its_state(tmp_path):
    base, moved_model = make_model(), make_model()
    in_memory = torch.optim.AdamW(base.parameters(), lr=1e-2, weight_decay=0.05)
    to_move = torch.optim.AdamW(moved_model.parameters(), lr=1e-2, weight_decay=0.05)
    train(base, in_memory, range(3))
    train(moved_model, to_move, range(3))
    offloaded = apply(to_move, OffloadConfig(state_dir=tmp_path, max_resident_bytes=SMALL_BOUND))
    del to_move
    train(base, in_memory, range(3, 6))
    train(moved_model, offloaded, range(3, 6))
    assert max_difference(base, moved_model) <= 1e-6
    with pytest.raises(OffloadError, match="cannot offload SGD"):
        apply(torch.optim.SGD(base.parameters(), lr=0.1), OffloadConfig(state_dir=tmp_path / "s"))


def test_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(OffloadError, match="float32 CPU"):
        OffloadedOptimizer(nn.Linear(2, 2).bfloat16().parameters(), state_dir=tmp_path / "a")
    with pytest.raises(OffloadError, match="'adam' or 'adamw'"):
        OffloadedOptimizer(nn.Linear(2, 2).parameters(), "sgd", state_dir=tmp_path / "b")
    with pytest.raises(OffloadError, match="at least"):
        OffloadedOptimizer(
            nn.Linear(2, 2).parameters(), state_dir=tmp_path / "c", max_resident_bytes=10
        )


def test_effect_bounds_resident_state_and_prices_the_disk():
    fast = DiskBandwidth(write_bytes_per_s=2e9, read_bytes_per_s=4e9, sample_bytes=0, directory=".")
    slow = DiskBandwidth(write_bytes_per_s=2e8, read_bytes_per_s=4e8, sample_bytes=0, directory=".")
    params = 4 * 10**9  # a billion fp32 parameters
    bound = 256 * 2**20
    e = effect(params, "adamw", bound, bandwidth=fast)
    assert e.optimizer_resident_bytes <= bound
    assert e.optimizer_resident_bytes > bound * 0.99
    assert e.resident_bytes == 2 * params + e.optimizer_resident_bytes
    assert e.disk_bytes == 2 * params
    assert effect(params, "adamw", bound, bandwidth=slow).extra_seconds_per_step == pytest.approx(
        10 * e.extra_seconds_per_step
    )
    with_grads = effect(
        params, "adam", bound, bandwidth=fast, offload_gradients=True, largest_parameter_bytes=10**8
    )
    assert with_grads.resident_bytes < e.resident_bytes - params // 2
    assert with_grads.extra_seconds_per_step > e.extra_seconds_per_step
    # A small model needs less than the bound: only its own state is resident.
    tiny = effect(4000, "adam", bound, bandwidth=fast)
    assert 1000 * 16 < tiny.optimizer_resident_bytes < 2**20
    with pytest.raises(TechniqueError, match="'adam' or 'adamw'"):
        effect(params, "sgd", bound, bandwidth=fast)


def test_measure_disk_bandwidth_is_quick_and_cleans_up(tmp_path):
    bw = measure_disk_bandwidth(tmp_path, sample_bytes=16 * 2**20)
    assert bw.sample_bytes == 16 * 2**20
    assert 1e6 < bw.write_bytes_per_s < 1e12 and 1e6 < bw.read_bytes_per_s < 1e12
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OffloadError, match="not a folder"):
        measure_disk_bandwidth(tmp_path / "missing")
