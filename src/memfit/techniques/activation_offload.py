"""Activation offload: the tensors saved for backward wait in pinned host memory (CUDA).

Apply: each micro-batch runs inside `torch.autograd.graph.save_on_cpu(pin_memory=True)`:
every tensor autograd saves in forward is copied to pinned host memory and the device
copy is dropped (unless the program holds it otherwise); backward copies each one back
when the operation that needs it runs. Exact: the values come back unchanged.

Effect on device bytes, predicted by running it on fake tensors (`fake_apply`): the
saved tensors leave the device as they are saved, so the activations category falls to
what forward holds anyway (the tensor in flight between layers, outputs the program
keeps), and backward holds, besides, the copies brought back for the operation running
(one operation's saved tensors, weights included, since torch copies every saved tensor,
parameters too). The fake pack keeps only a shape and the unpack makes a fresh tensor:
the device memory save_on_cpu leaves, nothing of the host's.

Time: every saved tensor crosses the bus twice (out in forward, back in backward), so
the step gains saved bytes * 2 / the host-device bandwidth, measured with a pinned copy
(`measure_host_device_bandwidth`, cached). The saved bytes are counted on fake tensors
(`saved_tensor_bytes`) when the planner reads the model. Not offered on a CPU: the
activations already live in host memory there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from memfit.budget import format_bytes
from memfit.techniques.base import EXACT, Prediction, Technique, TechniqueConfig, Training

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

PROBE_BYTES = 64 * 2**20
"""Size of the pinned copy timed to measure the host-device bandwidth."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivationOffloadConfig(TechniqueConfig):
    """Keep the tensors saved for backward in pinned host memory."""

    technique = "activation-offload"

    def label(self) -> str:
        return "activations on host"


@dataclass
class SavedCount:
    """Bytes the offload hooks packed: what crosses to the host in forward (and back)."""

    packed_bytes: int = 0
    """numel * element_size of every packed tensor (save_on_cpu copies each one)."""
    parameter_bytes: int = 0
    """The part of `packed_bytes` that is parameters and buffers (weights saved by layers)."""
    parameters: set[int] = field(default_factory=set)
    """Storage pointers of the model's parameters and buffers (filled by `for_model`)."""

    @classmethod
    def for_model(cls, model: nn.Module) -> SavedCount:
        tensors = [*model.parameters(), *model.buffers()]
        return cls(parameters={_storage_key(t) for t in tensors})

    def add(self, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        self.packed_bytes += nbytes
        if _storage_key(tensor) in self.parameters:
            self.parameter_bytes += nbytes


def _storage_key(tensor: torch.Tensor) -> int:
    # The C++ storage's address: stable for real and fake tensors alike (fake ones have no
    # data pointer, and the Python storage object may be made anew on each call).
    return tensor.untyped_storage()._cdata


class OffloadHooks(torch.autograd.graph.saved_tensors_hooks):
    """torch's `save_on_cpu(pin_memory=True)`, counting what it packs.

    The host copy is made with Python dispatch modes paused, so memfit's tracker counts
    device memory only (the host copies are not what the device budget holds).
    """

    def __init__(self, count: SavedCount | None = None):
        inner = torch.autograd.graph.save_on_cpu(pin_memory=True)
        self.count = count

        def pack(tensor: torch.Tensor) -> Any:
            if self.count is not None:
                self.count.add(tensor)
            with _paused_modes():
                return inner.pack_hook(tensor)

        super().__init__(pack, inner.unpack_hook)


class FakeOffloadHooks(torch.autograd.graph.saved_tensors_hooks):
    """What save_on_cpu leaves on the device, on fake tensors: the saved tensor is let go
    (only its shape is kept) and backward gets a fresh device tensor of that shape."""

    def __init__(self, count: SavedCount | None = None):
        self.count = count

        def pack(tensor: torch.Tensor) -> tuple[torch.Size, torch.dtype, torch.device]:
            if self.count is not None:
                self.count.add(tensor)
            return tensor.size(), tensor.dtype, tensor.device

        def unpack(packed: tuple[torch.Size, torch.dtype, torch.device]) -> torch.Tensor:
            size, dtype, device = packed
            return torch.empty(size, dtype=dtype, device=device)

        super().__init__(pack, unpack)


def _paused_modes():
    from torch.utils._python_dispatch import _disable_current_modes

    return _disable_current_modes()


def saved_tensor_bytes(
    model: nn.Module, run: Callable[[], torch.Tensor], *, fake: bool = True
) -> SavedCount:
    """What the offload hooks pack over one forward of `run()` (and its backward).

    On fake tensors (`fake=True`) nothing is copied; on real ones torch's save_on_cpu runs.
    """
    count = SavedCount.for_model(model)
    hooks = FakeOffloadHooks(count) if fake else OffloadHooks(count)
    with hooks:
        loss = run()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return count


class ActivationOffload(Technique):
    name = "activation-offload"
    config_type = ActivationOffloadConfig
    kind = EXACT
    order = 40

    def supports(self, ctx: PlanContext) -> str | None:
        if not ctx.request.on_cuda:
            return "activations already live in host memory on a CPU"
        if not ctx.measurements.host_device_bandwidth:
            return "the host-device bandwidth was not measured"
        return None

    def candidates(self, ctx: PlanContext) -> Sequence[ActivationOffloadConfig]:
        return [ActivationOffloadConfig()]

    def effect(self, config: ActivationOffloadConfig, prediction: Prediction, ctx: PlanContext):
        moved = transfer_bytes(ctx)
        seconds = 2 * moved / ctx.measurements.host_device_bandwidth
        return prediction.with_time(extra_s=prediction.time.extra_s + seconds)

    def apply(self, config: ActivationOffloadConfig, training: Training) -> None:
        training.settings.micro_batch_contexts.append(OffloadHooks)
        training.applied.append(self.name)

    def fake_apply(self, config: ActivationOffloadConfig, training: Training) -> None:
        training.settings.micro_batch_contexts.append(FakeOffloadHooks)
        training.applied.append(self.name)

    def notes(self, config: ActivationOffloadConfig, ctx: PlanContext) -> list[str]:
        moved = transfer_bytes(ctx)
        bandwidth = ctx.measurements.host_device_bandwidth or 0.0
        return [
            f"the tensors saved for backward wait in pinned host memory (about "
            f"{format_bytes(moved)} of it per batch, weights saved by layers included): "
            f"exact, at {format_bytes(int(bandwidth))}/s measured each way"
        ]

    def contract_fields(self, config: ActivationOffloadConfig | None, batch_size: int):
        return {"activation_offload": config is not None}


def transfer_bytes(ctx: PlanContext) -> int:
    """Bytes the saved tensors of one batch take (each crosses the bus out and back):
    activations grow with the batch; the saved weights are once per pass (more with
    micro-batches, which this does not see)."""
    facts = ctx.facts
    return int(facts.saved_bytes_per_sample * ctx.request.batch_size + facts.saved_parameter_bytes)


def measure_host_device_bandwidth(device: str) -> float | None:
    """Bytes per second of a pinned host-to-device copy and back (their mean), cached;
    None without CUDA."""
    if not (str(device).startswith("cuda") and torch.cuda.is_available()):
        return None
    from memfit.cache import cached_measurement, device_name

    key = f"{device_name(device)}/torch {torch.__version__}/host-device bytes per s"
    return cached_measurement(key, lambda: _time_pinned_copies(torch.device(device)))


def _time_pinned_copies(device: torch.device, nbytes: int = PROBE_BYTES) -> float:
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    on_device = torch.empty(nbytes, dtype=torch.uint8, device=device)
    on_device.copy_(host, non_blocking=True)  # warm-up: the first copy maps the pages
    torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        on_device.copy_(host, non_blocking=True)
        host.copy_(on_device, non_blocking=True)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best
