"""bf16 weights: parameters (and so gradients) held in bf16, updated with stochastic rounding.

Effect: every floating-point parameter and its gradient take 2 bytes instead of 4, and
the forward and backward run in bf16, so activations do too. The update itself is done
in fp32 by torchao's Adam step (`torchao.optim`, `bf16_stochastic_round=True`): it reads
the bf16 weight into fp32, applies Adam, and rounds back to bf16 up or down at random in
proportion to the distance (Zamirai et al. 2020), so updates smaller than bf16's
resolution still move the weights on average instead of being lost.

Optimizer state is what torchao allocates for a bf16 parameter: its moments are
`zeros_like(parameter)`, that is bf16 (2 + 2 bytes per parameter, plus a 4-byte fp32
step counter per tensor); `fp32_moments=True` creates them in fp32 instead before the
first step, which torchao's step then keeps (it reads `.float()` and copies back). With
`low-bit-state` the moments are torchao's 8- or 4-bit codes. Adam/AdamW with fp32
weights hold 16 bytes per parameter; here 8 (bf16 moments), 12 (fp32 moments), or about
5 and 4.5 (8-bit, 4-bit state).

Kept in fp32: BatchNorm's parameters and running statistics. Its running mean moves by
a tenth of a batch's difference per step, below bf16's resolution near convergence, and
torch's batch-norm kernel takes a bf16 input with fp32 parameters and statistics (not
bf16 parameters with fp32 statistics). Other norms (LayerNorm, RMSNorm) go to bf16: a
norm weight left in fp32 turns its bf16 input into an fp32 output (Hugging Face's RMSNorm
multiplies `weight * x`), which the next bf16 layer refuses.

Inputs: the batch's floating-point tensors are cast to bf16 by a forward pre-hook on the
model (integer token ids are left alone), so the step is the same `TrainingStep`.

Prediction: the cast runs in the fake-tensor run too (parameters, gradients and
activations counted at 2 bytes, the state as created here). torchao compiles its step,
and compiled code cannot run on fake tensors, so there a stand-in step allocates what
the compiled one was measured to: nothing beyond the state (one fused in-place kernel).
With `low-bit-state`, whose step also runs unseen there, `effect` counts torchao's
low-bit layout for bf16 parameters and the step's fp32 temporaries (see `effect`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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
from memfit.techniques.lowbit import low_bit_state_bytes, optimizer_kind

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

BF16 = torch.bfloat16
ADAM_KINDS = ("adam", "adamw")
LOW_BIT_KINDS = {
    # class name (lower case) -> (adam kind, bits)
    "adam8bit": ("adam", 8),
    "adamw8bit": ("adamw", 8),
    "adam4bit": ("adam", 4),
    "adamw4bit": ("adamw", 4),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class BF16WeightsConfig(TechniqueConfig):
    """Hold parameters and gradients in bf16; update with stochastic rounding."""

    technique = "bf16-weights"
    fp32_moments: bool = False
    """Adam's moments in fp32 (4 more bytes per parameter) instead of torchao's bf16."""

    def label(self) -> str:
        return "bf16 weights" + (" fp32 moments" if self.fp32_moments else "")


class BF16Weights(Technique):
    name = "bf16-weights"
    config_type = BF16WeightsConfig
    kind = LOSSY
    # After low-bit state (60), which may already have made a torchao twin; before the
    # techniques at 70 that split or shard whichever optimizer they find.
    order = 65
    changes_optimizer_step = True

    # ---- what the planner asks -----------------------------------------------------------
    def supports(self, ctx: PlanContext) -> str | None:
        reason = unsupported_reason(ctx.facts.optimizer_kind, ctx.facts.optimizer_groups)
        if reason is None and "bf16" not in ctx.measurements.precision_slowdown:
            return "bf16 compute time on this device was not measured"
        return reason

    def candidates(self, ctx: PlanContext) -> Sequence[BF16WeightsConfig]:
        # torchao's own layout only: fp32 moments save less and are the user's to ask for.
        return [BF16WeightsConfig()]

    def conflicts(
        self, config: BF16WeightsConfig, others: Mapping[str, TechniqueConfig], ctx: PlanContext
    ) -> str | None:
        return combination_problem(config, others)

    def effect(self, config: BF16WeightsConfig, prediction: Prediction, ctx: PlanContext):
        params = ctx.facts.trainable_parameters
        own = state_bytes(params, "fp32" if config.fp32_moments else "bf16")
        # The fake run casts and creates the state as apply does, so its bytes stand, unless
        # low-bit state (folded before this, from a formula over fp32 parameters) replaced
        # the state: then count torchao's low-bit layout for bf16 parameters (small tensors
        # stay unquantized, in the parameter's dtype), and the fp32 copies its step holds,
        # which low-bit state counts on top of the plain step's two that this run lacks.
        low_bit = {low_bit_state_bytes(params, f"adam{b}bit"): b for b in (8, 4)}
        copies = ADAM_STEP_TEMPORARY_COPIES * ctx.facts.largest_parameter_bytes

        def restate(phase: str, cats: dict[str, int]) -> None:
            bits = low_bit.get(cats["optimizer"]) if cats["optimizer"] != own else None
            if bits is not None:
                cats["optimizer"] = state_bytes(params, f"{bits}bit")
                if phase == "optimizer_step":
                    cats["other"] += copies

        # The passes run bf16 kernels, timed on this device as bf16 autocast's are.
        slowdown = ctx.measurements.precision_slowdown.get("bf16", 1.0)
        return prediction.map_phases(restate).with_time(
            compute_factor=prediction.time.compute_factor * slowdown
        )

    def notes(self, config: BF16WeightsConfig, ctx: PlanContext) -> list[str]:
        slowdown = ctx.measurements.precision_slowdown.get("bf16", 1.0)
        moments = "fp32" if config.fp32_moments else "bf16"
        return [
            f"parameters and gradients are held in bf16 and updated with stochastic rounding "
            f"(lossy; {moments} Adam moments); bf16 compute measured {slowdown:.1f}x fp32 "
            "here; torchao's compiled step is not timed apart from torch's"
        ]

    def contract_fields(self, config: BF16WeightsConfig | None, batch_size: int) -> dict[str, Any]:
        return {"weights": "bf16" if config else "fp32"}

    # ---- what the plan does ----------------------------------------------------------------
    def apply(self, config: BF16WeightsConfig, training: Training) -> None:
        check_optimizer(training.optimizer)
        if training.settings.precision != "fp32":
            raise TechniqueError(
                f"bf16 weights already run the step in bf16: drop {training.settings.precision}"
                " autocast (precision) from this plan"
            )
        if not training.fake and any(training.optimizer.state.values()):
            raise TechniqueError(
                "the optimizer already holds state: apply bf16 weights before the first step"
            )
        cast_parameters(training.model)
        cast_inputs(training.model)
        training.optimizer = stochastic_rounding_twin(training.optimizer, fake=training.fake)
        create_state(training.optimizer, fp32_moments=config.fp32_moments)
        training.applied.append(self.name)


def unsupported_reason(kind: str, groups: Sequence[Mapping[str, Any]]) -> str | None:
    """Why bf16 weights cannot be trained with this optimizer (None when they can)."""
    if kind not in ADAM_KINDS and kind not in LOW_BIT_KINDS:
        # torchao's stochastic rounding lives in its Adam step only.
        return f"bf16 weights are updated by torchao's Adam/AdamW, not {kind}"
    if any(g.get("maximize") for g in groups):
        return "torchao's Adam has no maximize option"
    try:
        import torchao.optim  # noqa: F401
    except ImportError:
        return "bf16 weights need torchao (pip install 'memfit[lowbit]')"
    return None


def combination_problem(config: BF16WeightsConfig, others: Mapping[str, TechniqueConfig]):
    """Why `config` cannot run with the techniques in `others` (None when it can)."""
    precision = others.get("precision")
    if precision is not None:
        dtype = getattr(precision, "dtype", "")
        if dtype == "fp16":
            return "fp16 autocast would run bf16 weights in a second 16-bit format: refused"
        # bf16 autocast over bf16 weights saves nothing more (there are no fp32 weights
        # to copy, activations are bf16 already), and it would count bf16's time twice.
        return "bf16 weights already run the step in bf16: bf16 autocast adds nothing"
    if "offload" in others:
        return "offloaded state runs its own fp32 Adam, not torchao's bf16 step"
    if "sharding" in others:
        return "bf16 weights are not supported with sharded parameters"
    if config.fp32_moments and "low-bit-state" in others:
        return "low-bit state holds the moments: fp32 moments do not combine with it"
    return None


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    reason = unsupported_reason(optimizer_kind(optimizer), optimizer.param_groups)
    if reason is not None:
        raise TechniqueError(reason + ": use Adam or AdamW, or drop bf16-weights")


def cast_parameters(model: nn.Module) -> None:
    """Floating-point parameters to bf16 in place, BatchNorm's excepted (see the module).

    `p.data = ...` keeps each Parameter object, so the optimizer's groups (which hold
    them) and tied weights still point at the model's parameters.
    """
    keep = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False)
    }
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != BF16 and id(p) not in keep:
            p.data = p.data.to(BF16)
            if p.grad is not None:
                p.grad = p.grad.to(BF16)


def cast_inputs(model: nn.Module) -> None:
    """Cast the floating-point tensors the model is called with to bf16 (ids stay ints)."""

    def to_bf16(value):
        if isinstance(value, torch.Tensor):
            return value.to(BF16) if value.is_floating_point() else value
        if isinstance(value, dict):
            return {k: to_bf16(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(to_bf16(v) for v in value)
        return value

    def hook(_module, args, kwargs):
        return to_bf16(args), to_bf16(kwargs)

    model.register_forward_pre_hook(hook, with_kwargs=True)


def stochastic_rounding_twin(
    optimizer: torch.optim.Optimizer, *, fake: bool = False
) -> torch.optim.Optimizer:
    """torchao's Adam of `optimizer`'s kind with bf16 stochastic rounding, over its groups.

    A torchao low-bit optimizer (from `low-bit-state`) is rebuilt as the same class;
    torch's Adam/AdamW become torchao's full-state `_AdamW`. `fake` (fake runs) gives a
    step that allocates what torchao's does (nothing: see `_fake_step_class`).
    """
    try:
        from torchao import optim as ao
    except ImportError as exc:
        raise MissingDependencyError(
            "bf16 weights need torchao (pip install 'memfit[lowbit]')"
        ) from exc
    kind = optimizer_kind(optimizer)
    if kind in LOW_BIT_KINDS:
        cls, is_adamw = type(optimizer), LOW_BIT_KINDS[kind][0] == "adamw"
    else:
        cls, is_adamw = ao._AdamW, kind == "adamw"
    if fake:
        cls = _fake_step_class(cls)
    defaults = optimizer.defaults

    def build(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        twin = cls(
            groups,
            lr=defaults.get("lr", 1e-3),
            betas=defaults.get("betas", (0.9, 0.999)),
            eps=defaults.get("eps", 1e-8),
            weight_decay=defaults.get("weight_decay", 0.0),
            amsgrad=defaults.get("amsgrad", False),
            bf16_stochastic_round=True,
        )
        # torchao's Adam base does both Adam (L2) and AdamW; its full-state front is
        # only exported as AdamW, so Adam's L2 weight decay is selected here.
        twin.is_adamw = is_adamw
        return twin

    return share_param_groups(optimizer, build)


def create_state(optimizer: torch.optim.Optimizer, *, fp32_moments: bool = False) -> None:
    """Each parameter's state, as torchao's first step would make it (or fp32 moments).

    Made before the step so that it is there, and counted, from the start: torchao only
    creates state for a parameter whose state is empty.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not p.requires_grad or optimizer.state[p]:
                continue
            state = optimizer.state[p]
            state["step"] = torch.tensor(0.0)
            names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
            for name in names:
                if fp32_moments:
                    state[name] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
                else:
                    state[name] = optimizer._new_buffer(p, name == "exp_avg")


def state_bytes(params: Sequence[torch.Tensor], state: str) -> int:
    """Optimizer-state bytes torchao's Adam holds for `params` cast to bf16 (shapes only).

    `state`: `bf16` moments (torchao's own), `fp32` moments, or `8bit` / `4bit` codes.
    """
    shapes = [
        torch.empty(p.shape, dtype=BF16, device="meta", requires_grad=True)
        for p in params
        if p.requires_grad and p.is_floating_point()
    ]
    if state in ("8bit", "4bit"):
        return low_bit_state_bytes(shapes, f"adam{state}")
    per_value = 4 if state == "fp32" else 2
    return sum(2 * p.numel() * per_value + 4 for p in shapes)


_FAKE_STEP: dict[type, type] = {}


def _fake_step_class(cls: type) -> type:
    """`cls` whose step only counts, for fake runs, where compiled code cannot run.

    torchao's compiled step updates each weight and its moments in place in one fused
    kernel: over a 1M-value bf16 parameter's step the process's peak rose by nothing
    measurable (see `tests/techniques/test_bf16_weights.py`), so on fake tensors the step
    allocates nothing and only moves its counter.
    """
    if cls not in _FAKE_STEP:

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.state[p]["step"] += 1

        _FAKE_STEP[cls] = type(f"FakeStep{cls.__name__}", (cls,), {"step": step})
    return _FAKE_STEP[cls]
