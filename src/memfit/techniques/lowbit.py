"""Compact optimizer state: 8-bit and 4-bit Adam/AdamW (block-wise quantized moments).

Effect: Adam's two fp32 moments (8 bytes per parameter) become 8-bit or 4-bit codes
with one fp32 scale per block, in torchao's layout (below). The state is alive through
the whole step, so every phase's memory shifts by the difference; the step's time
grows by a factor timed on the device in use (`memfit.timing.low_bit_step_slowdown`).

Apply: torchao's Adam8bit/AdamW8bit/Adam4bit/AdamW4bit (bitsandbytes' 8-bit Adam on
CUDA when torchao is missing) built over the very parameter-group dicts of the user's
optimizer: the same hyper-parameters, and a learning-rate scheduler stepping the
user's optimizer steers the new one. Lossy: the moments are rounded.

Byte count: torchao quantizes a state tensor block-wise only when it has at least 4096
values and its size is a multiple of the block (following bitsandbytes); smaller ones
stay fp32. Each quantized state holds codes, one fp32 scale per block and a small fp32
code map (torchao/optim/subclass_8bit.py and subclass_4bit.py, `zeros`). Adam keeps two
such states per parameter plus a 4-byte fp32 step counter.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from memfit.errors import MissingDependencyError, TechniqueError
from memfit.techniques.base import (
    ADAM_STEP_TEMPORARY_COPIES,
    LOSSY,
    Prediction,
    Technique,
    TechniqueConfig,
    Training,
    share_param_groups,
)

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

STATES = ("fp32", "8bit", "4bit")
LOW_BIT = {
    # optimizer name: (block size, code bits, code-map entries)
    "adam8bit": (256, 8, 256),
    "adam4bit": (128, 4, 16),
}
MIN_QUANTIZED_NUMEL = 4096


def state_bytes_for(numel: int, element_size: int, optimizer: str) -> int:
    """Optimizer-state bytes for one parameter of `numel` values under `optimizer`."""
    block, bits, qmap_entries = LOW_BIT[optimizer]
    step_bytes = 4
    if numel >= MIN_QUANTIZED_NUMEL and numel % block == 0:
        one_state = numel * bits // 8 + (numel // block) * 4 + qmap_entries * 4
    else:
        one_state = numel * element_size
    return 2 * one_state + step_bytes


def low_bit_state_bytes(params: Iterable[torch.Tensor], optimizer: str) -> int:
    return sum(
        state_bytes_for(p.numel(), p.element_size(), optimizer) for p in params if p.requires_grad
    )


def optimizer_name(state: str) -> str:
    return {"fp32": "adam", "8bit": "adam8bit", "4bit": "adam4bit"}[state]


def state_bytes(params, state: str) -> int | None:
    """Optimizer-state bytes under `state`, or None for fp32 (whatever the optimizer keeps)."""
    if state == "fp32":
        return None
    return low_bit_state_bytes(params, optimizer_name(state))


@dataclass(frozen=True, kw_only=True, slots=True)
class LowBitStateConfig(TechniqueConfig):
    """Keep Adam's moments in `bits` bits (8 or 4)."""

    technique = "low-bit-state"
    bits: int

    def __post_init__(self) -> None:
        if self.bits not in (8, 4):
            raise TechniqueError(f"low-bit optimizer state is 8 or 4 bits, not {self.bits}")

    @property
    def state(self) -> str:
        return f"{self.bits}bit"

    def label(self) -> str:
        return f"state {self.state}"


class LowBitState(Technique):
    name = "low-bit-state"
    config_type = LowBitStateConfig
    kind = LOSSY
    slot = "optimizer_state"
    order = 60
    on_fake = False  # torchao's step is compiled, and compiled code cannot run on fake tensors

    def supports(self, ctx: PlanContext) -> str | None:
        reason = unsupported_reason(ctx.facts.optimizer_kind, ctx.facts.optimizer_groups, ctx)
        if reason is None and not ctx.measurements.low_bit_slowdown:
            return "its step time on this device was not measured"
        return reason

    def candidates(self, ctx: PlanContext) -> Sequence[LowBitStateConfig]:
        bits = [8] + ([4] if importlib.util.find_spec("torchao") else [])
        return [LowBitStateConfig(bits=b) for b in bits if b in ctx.measurements.low_bit_slowdown]

    def effect(self, config: LowBitStateConfig, prediction: Prediction, ctx: PlanContext):
        new_state = low_bit_state_bytes(ctx.facts.trainable_parameters, f"adam{config.state}")
        # Both steps update one parameter at a time, so their temporaries peak at the
        # largest one; the low-bit step's count of fp32 copies is measured on the device.
        copies = ctx.measurements.low_bit_step_copies.get(config.bits, ADAM_STEP_TEMPORARY_COPIES)
        extra = int((copies - ADAM_STEP_TEMPORARY_COPIES) * ctx.facts.largest_parameter_bytes)

        def swap(phase: str, cats: dict[str, int]) -> None:
            if cats["optimizer"]:
                cats["optimizer"] = new_state
                if phase == "optimizer_step":
                    cats["other"] = max(0, cats["other"] + extra)

        slowdown = ctx.measurements.low_bit_slowdown.get(config.bits, 1.0)
        return prediction.map_phases(swap).with_time(
            optimizer_s=prediction.time.optimizer_s * slowdown
        )

    def apply(self, config: LowBitStateConfig, training: Training) -> None:
        training.optimizer = low_bit_twin(training.optimizer, config.bits, training.settings.device)
        training.applied.append(self.name)

    def notes(self, config: LowBitStateConfig, ctx: PlanContext) -> list[str]:
        slowdown = ctx.measurements.low_bit_slowdown.get(config.bits, 1.0)
        return [
            f"{config.state} Adam moments are rounded (lossy; bitsandbytes and torchao report "
            f"accuracy parity on the models they tested); its optimizer step timed "
            f"{slowdown:.1f}x torch's Adam step on this device"
        ]

    def contract_fields(self, config: LowBitStateConfig | None, batch_size: int) -> dict[str, Any]:
        return {"optimizer_state": config.state} if config else {"optimizer_state": "fp32"}

    def plan_name(self, config: LowBitStateConfig) -> str:
        return f"{config.state}-optimizer-state"


def unsupported_reason(kind: str, groups: Sequence[dict[str, Any]], ctx=None) -> str | None:
    """Why a low-bit twin of this optimizer cannot be made (None when it can)."""
    if kind not in ("adam", "adamw"):
        return f"low-bit state replaces Adam/AdamW, not {kind}"
    if any(g.get("maximize") for g in groups):
        return "low-bit Adam has no maximize option"
    if importlib.util.find_spec("torchao") is None:
        on_cuda = ctx is not None and ctx.request.on_cuda
        if not (on_cuda and importlib.util.find_spec("bitsandbytes")):
            return "low-bit state needs torchao (pip install 'memfit[lowbit]')"
    return None


def low_bit_twin(
    optimizer: torch.optim.Optimizer, bits: int, device: str = "cpu"
) -> torch.optim.Optimizer:
    """A low-bit Adam/AdamW sharing `optimizer`'s parameter groups (and so its scheduler)."""
    kind = optimizer_kind(optimizer)
    reason = unsupported_reason(kind, optimizer.param_groups)
    if reason and not (kind in ("adam", "adamw") and str(device).startswith("cuda") and bits == 8):
        raise TechniqueError(reason + ": keep --optimizer adam or drop this technique")
    try:
        from torchao import optim as low_bit
    except ImportError:
        low_bit = None
    if low_bit is not None:
        cls = {
            ("adam", 8): low_bit.Adam8bit,
            ("adamw", 8): low_bit.AdamW8bit,
            ("adam", 4): low_bit.Adam4bit,
            ("adamw", 4): low_bit.AdamW4bit,
        }[(kind, bits)]
        return share_param_groups(optimizer, cls)
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise MissingDependencyError(
            "low-bit optimizer state needs torchao (pip install 'memfit[lowbit]') or, on CUDA, "
            "bitsandbytes (pip install 'memfit[cuda]')"
        ) from exc
    if bits != 8:
        raise TechniqueError("bitsandbytes has no 4-bit Adam; install torchao for 4-bit state")
    cls = bnb.optim.AdamW8bit if kind == "adamw" else bnb.optim.Adam8bit
    return share_param_groups(optimizer, cls)


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """`adamw` (decoupled weight decay), `adam`, `sgd`, or the class name in lower case."""
    if isinstance(optimizer, torch.optim.AdamW) or (
        isinstance(optimizer, torch.optim.Adam)
        and optimizer.defaults.get("decoupled_weight_decay", False)
    ):
        return "adamw"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    return type(optimizer).__name__.lower()


def apply(optimizer: torch.optim.Optimizer, state: str) -> torch.optim.Optimizer:
    """A low-bit twin of `optimizer` for `state` (`8bit`, `4bit`; `fp32` returns it as is)."""
    if state == "fp32":
        return optimizer
    return low_bit_twin(optimizer, int(state[0]))
