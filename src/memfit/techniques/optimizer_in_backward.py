"""Optimizer in backward: each parameter is updated as soon as its gradient is complete.

Effect: a parameter's gradient is freed right after its update, inside backward, so the
gradients of the whole model never exist at once: only those already computed whose
update has not run yet (one at a time, plus the gradients of a layer's other inputs in
flight) remain. The fake-tensor run applies it by its own `apply` and runs the step, so
the prediction shows the gradients gone and the update's temporaries moved into backward.

Apply: one optimizer per parameter, of the class of the optimizer in use (torch's
Adam/AdamW/SGD, or a low-bit twin another technique put there), each sharing that
parameter's state dict with the optimizer it stands in for. A post-accumulate-grad hook
(called once per backward for each parameter, however many times it is used, so tied
weights are updated once) copies the hyper-parameters of the parameter's group, which
are the user's dicts, into its own optimizer, steps it, and drops the gradient: a
learning-rate scheduler stepping the user's optimizer steers every update.

Exact when the update of one parameter does not need the others' gradients: no
gradient clipping over the whole model, no accumulation over micro-batches, no fp16
loss scaling (its inf checks span every gradient). torch's per-parameter update (its
default on CPU) then gives the same parameters bit for bit; CUDA's multi-tensor kernels
do the same arithmetic in other kernels, equal to rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from memfit.errors import TechniqueError
from memfit.techniques.base import EXACT, Technique, TechniqueConfig, Training

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

SUPPORTED_KINDS = ("adam", "adamw", "sgd", "adam8bit", "adamw8bit", "adam4bit", "adamw4bit")
"""Optimizers whose update of one parameter reads that parameter's gradient and state only."""


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerInBackwardConfig(TechniqueConfig):
    """Update each parameter inside backward as its gradient arrives."""

    technique = "optimizer-in-backward"

    def label(self) -> str:
        return "update in backward"


class InBackwardOptimizer(torch.optim.Optimizer):
    """Stands in for `optimizer`: its parameters are updated by hooks during backward.

    It holds the very parameter groups and state of `optimizer` (so `state_dict`, the
    scheduler and the user's hyper-parameters are the same), and `step()` has nothing
    left to do. `remove()` takes the hooks off.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        # torch's add_param_group keeps the dicts it is given: the groups stay shared.
        super().__init__(list(optimizer.param_groups), optimizer.defaults)
        self.optimizer = optimizer
        self.state = optimizer.state
        self._per_parameter: dict[torch.Tensor, tuple[torch.optim.Optimizer, dict]] = {}
        self._handles = []
        self.updates = 0
        """Per-parameter updates run so far (a tied parameter counts once per backward)."""
        # torchao's compiled steps cannot run under a Python dispatch mode (memfit's
        # tracker): they run with the modes paused, as the ordinary measured step does.
        self._paused = type(optimizer).__module__.startswith("torchao")
        for group in self.param_groups:
            for param in group["params"]:
                if param.requires_grad:
                    self._per_parameter[param] = (
                        one_parameter_optimizer(optimizer, group, param),
                        group,
                    )
                    self._handles.append(param.register_post_accumulate_grad_hook(self._update))
        self._link_state()

    def _link_state(self) -> None:
        for param, (inner, _) in self._per_parameter.items():
            # One state dict per parameter, shared: updates write where `optimizer` reads.
            inner.state[param] = self.state[param]

    def _update(self, param: torch.Tensor) -> None:
        if param.grad is None:
            return
        inner, group = self._per_parameter[param]
        own = inner.param_groups[0]
        for key, value in group.items():
            if key != "params":
                own[key] = value
        with _paused_modes() if self._paused else nullcontext():
            inner.step()
        param.grad = None
        self.updates += 1

    @torch.no_grad()
    def step(self, closure=None):
        """Each parameter was updated in backward; a closure's backward updates them now."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        self._per_parameter = {
            p: (inner, groups.get(id(p), group))
            for p, (inner, group) in self._per_parameter.items()
        }
        self._link_state()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _paused_modes():
    from torch.utils._python_dispatch import _disable_current_modes

    return _disable_current_modes()


OBJECT_SETTINGS = ("is_adamw",)
"""Attributes an optimizer may carry outside its constructor's arguments and its groups."""


def one_parameter_optimizer(
    optimizer: torch.optim.Optimizer, group: Mapping[str, Any], param: torch.Tensor
) -> torch.optim.Optimizer:
    """An optimizer of `optimizer`'s class over `param` alone, with `group`'s settings.

    Settings kept on the optimizer object rather than in its groups (torchao's
    `block_size`, `bf16_stochastic_round`) are passed again by the constructor's names.
    """
    cls = type(optimizer)
    extra = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if p.kind is p.KEYWORD_ONLY and name not in group and hasattr(optimizer, name):
            extra[name] = getattr(optimizer, name)
    try:
        one = cls([dict(group, params=[param])], **extra)
    except TypeError as exc:
        raise TechniqueError(
            f"cannot build a one-parameter {cls.__name__} for the update in backward ({exc}); "
            "drop optimizer-in-backward or use torch's Adam, AdamW or SGD"
        ) from exc
    # Set on the object after construction, never passed to it: torchao's full-precision
    # `_AdamW` stands in for Adam (coupled weight decay) only through `is_adamw = False`.
    for name in OBJECT_SETTINGS:
        if hasattr(optimizer, name):
            setattr(one, name, getattr(optimizer, name))
    return one


def unsupported_reason(kind: str, clip_grad_norm: float | None) -> str | None:
    if kind not in SUPPORTED_KINDS:
        return f"the update in backward runs Adam, AdamW or SGD one parameter at a time, not {kind}"
    if clip_grad_norm is not None:
        return (
            "the workload clips the gradients' total norm, which needs every gradient before "
            "any update"
        )
    return None


class OptimizerInBackward(Technique):
    name = "optimizer-in-backward"
    config_type = OptimizerInBackwardConfig
    kind = EXACT
    order = 70  # after any optimizer replacement (low-bit state, 60): it steps the final one
    changes_optimizer_step = True

    def supports(self, ctx: PlanContext) -> str | None:
        return unsupported_reason(ctx.facts.optimizer_kind, ctx.facts.clip_grad_norm)

    def candidates(self, ctx: PlanContext) -> Sequence[OptimizerInBackwardConfig]:
        return [OptimizerInBackwardConfig()]

    def conflicts(
        self,
        config: OptimizerInBackwardConfig,
        others: Mapping[str, TechniqueConfig],
        ctx: PlanContext,
    ) -> str | None:
        if "micro-batching" in others:
            return "a parameter would be updated before its gradient is accumulated"
        if "sharding" in others:
            return "sharded gradients are reduced across ranks after backward"
        if "offload" in others:
            return "offloaded state is updated in chunks by the step after backward"
        precision = others.get("precision")
        if precision is not None and getattr(precision, "dtype", None) == "fp16":
            return "fp16 loss scaling checks every gradient for inf before any update"
        return None

    def apply(self, config: OptimizerInBackwardConfig, training: Training) -> None:
        settings = training.settings
        if (
            settings.micro_batch_size is not None
            and settings.micro_batch_size < training.batch_size
        ):
            raise TechniqueError(
                "the update in backward needs the whole batch in one pass: drop micro-batching"
            )
        if settings.clip_grad_norm is not None:
            raise TechniqueError(
                "the update in backward cannot clip the gradients' total norm: drop clipping "
                "or optimizer-in-backward"
            )
        if settings.grad_scaler is not None or settings.precision == "fp16":
            raise TechniqueError("the update in backward does not combine with fp16 loss scaling")
        if hasattr(training.model, "set_requires_gradient_sync"):
            raise TechniqueError("the update in backward does not combine with sharding")
        if type(training.optimizer).__name__ == "OffloadedOptimizer":
            raise TechniqueError("the update in backward does not combine with offloaded state")
        training.optimizer = InBackwardOptimizer(training.optimizer)
        settings.optimizer_in_backward = True
        training.applied.append(self.name)

    def notes(self, config: OptimizerInBackwardConfig, ctx: PlanContext) -> list[str]:
        return [
            "each parameter is updated inside backward as soon as its gradient is complete, "
            "and the gradient is freed: exact as long as there is one backward per step, no "
            "gradient clipping over the model, no micro-batches and no fp16 loss scaling "
            "(bit for bit with torch's per-parameter update, its default on CPU)"
        ]

    def contract_fields(
        self, config: OptimizerInBackwardConfig | None, batch_size: int
    ) -> dict[str, Any]:
        return {"optimizer_in_backward": config is not None}
