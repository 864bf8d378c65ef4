"""LoRA and QLoRA fine-tuning through peft: train small adapters, freeze the rest.

Effect: every linear layer but the head gets LoRA's adapters (Hu et al. 2021): B·A of
rank r added to its frozen weight. Only the adapters have gradients and optimizer
state; the frozen weights are stored in bf16 (2 bytes) or quantized: torchao's
weight-only int8 (1 byte, plus a scale and zero point per output row) wherever torchao
runs, and bitsandbytes' NF4 (QLoRA, Dettmers et al. 2023) on CUDA. It changes what is
learned, so the planner offers it only when the user names it (`--allow lora`).

Prediction: the fake-tensor run applies it by its own `apply` (peft's layers, the
bf16 casts and torchao's int8 tensors all exist on fake tensors), so the adapters'
gradients and Adam state, the frozen bytes and the extra activations of the adapters'
path are counted as they will be. NF4 cannot: bitsandbytes quantizes on the way to the
GPU, in a kernel fake tensors do not run; its bytes are counted by the layout
(`nf4_weight_bytes`).

int4 on CPU is not offered: torchao 0.18's `Int4WeightOnlyConfig` needs the `mslk`
kernels, which this torch build does not have, and peft's torchao layer refuses int4
weights (`TorchaoLoraLinear._check_dtype_supported`).

Apply: peft's `inject_adapter_in_model` puts the adapters into the user's own module
object (not `get_peft_model`'s wrapper), so `Training.model`, the workload's loss and
every reference the user holds stay the model that trains. The optimizer is the user's
class over the adapters, on the user's parameter-group dicts (see
`_lora_layers.adapter_optimizer`): its hyper-parameters, and its scheduler, keep
steering.

Settings: rank 16 and alpha 32. QLoRA found the rank hardly matters once every linear
layer is adapted (their section 4: "LoRA r is unrelated to final performance"), and
alpha = 2r is the usual scale (peft's examples, the QLoRA scripts use alpha/r = 1/4..2);
the adapters' bytes are a few per cent of the model's, so the rank is not a lever on
memory and the planner does not search it. Dropout 0: peft's dropout keeps a copy of
each adapted layer's input for backward (a whole extra activation per layer), and
recent recipes train without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from memfit.errors import TechniqueError
from memfit.techniques import _lora_layers as layers
from memfit.techniques.base import LEARNS, Prediction, Technique, TechniqueConfig, Training

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

BASES = ("bf16", "int8", "nf4")
"""How frozen weights are stored: bf16; torchao int8 weight-only; bitsandbytes NF4."""
NF4_BLOCK, NF4_SCALE_BLOCK = 64, 256
"""bitsandbytes' QLoRA layout: 4-bit codes, one absmax per 64 weights, itself stored as
8-bit with one fp32 scale per 256 absmaxes (double quantization)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LoraConfig(TechniqueConfig):
    """Adapters of `rank` on `targets` (empty: every linear layer but the head), frozen
    weights stored as `base`."""

    technique = "lora"
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    base: str = "bf16"
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise TechniqueError(f"LoRA's rank must be at least 1, not {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise TechniqueError(f"LoRA's dropout is in [0, 1), not {self.dropout}")
        if self.base not in BASES:
            raise TechniqueError(
                f"unknown LoRA base storage {self.base!r}; use one of: {', '.join(BASES)}"
            )

    def label(self) -> str:
        return f"lora r{self.rank} {self.base}"


class Lora(Technique):
    name = "lora"
    config_type = LoraConfig
    kind = LEARNS
    order = 5  # first: it replaces layers that checkpointing and the optimizer then see
    changes_optimizer_step = True

    def supports(self, ctx: PlanContext) -> str | None:
        if self.name not in ctx.request.allow:
            return "it changes what is learned: offered only with --allow lora"
        if ctx.request.exact:
            return "it changes what is learned: drop --exact"
        if importlib.util.find_spec("peft") is None:
            return "LoRA needs peft (pip install 'memfit[lora]')"
        if not ctx.facts.lora_targets:
            return "the model has no linear layer LoRA could adapt"
        if not ctx.measurements.lora_base_slowdown:
            # Tried after the lossy techniques (their measurements come first): it is
            # offered when those were not enough.
            return "its step time on this device was not measured"
        return None

    def candidates(self, ctx: PlanContext) -> Sequence[LoraConfig]:
        targets = tuple(ctx.facts.lora_targets)
        return [
            LoraConfig(base=base, targets=targets)
            for base in BASES
            if base in ctx.measurements.lora_base_slowdown
        ]

    def conflicts(
        self, config: LoraConfig, others: Mapping[str, TechniqueConfig], ctx: PlanContext
    ) -> str | None:
        for name in ("low-bit-state", "offload"):
            if name in others:
                # The adapters' state is a few per cent of the model's: nothing to gain.
                return f"LoRA's optimizer state is small: {name} has nothing to save"
        sharding = others.get("sharding")
        if sharding is not None and getattr(sharding, "nodes", 1) > 1:
            return "LoRA is not combined with sharding"
        return None

    def effect(self, config: LoraConfig, prediction: Prediction, ctx: PlanContext):
        if config.base == "nf4":
            # Run on fake tensors with bf16 weights; NF4 holds fewer bytes (module docstring).
            shapes = [ctx.facts.lora_targets[t] for t in config.targets or ctx.facts.lora_targets]
            delta = sum(nf4_weight_bytes(i * o) - 2 * i * o for i, o in shapes)

            def swap(_phase: str, cats: dict[str, int]) -> None:
                cats["parameters"] = max(0, cats["parameters"] + delta)

            prediction = prediction.map_phases(swap)
        slowdown = ctx.measurements.lora_base_slowdown.get(config.base, 1.0)
        # The optimizer step is linear in the values it updates: the adapters' share.
        trained = layers.adapter_numel(
            (ctx.facts.lora_targets[t] for t in config.targets or ctx.facts.lora_targets),
            config.rank,
        )
        total = max(1, sum(p.numel() for p in ctx.facts.trainable_parameters))
        return prediction.with_time(
            compute_factor=prediction.time.compute_factor * slowdown,
            optimizer_s=prediction.time.optimizer_s * min(1.0, trained / total),
        )

    def apply(self, config: LoraConfig, training: Training) -> None:
        self._apply(config, training, fake=False)

    def fake_apply(self, config: LoraConfig, training: Training) -> None:
        self._apply(config, training, fake=True)

    def _apply(self, config: LoraConfig, training: Training, fake: bool) -> None:
        model = training.model
        targets = config.targets or layers.default_targets(model)
        if not targets:
            raise TechniqueError("LoRA found no linear layer to adapt in this model")
        modules = dict(model.named_modules())
        missing = [t for t in targets if t not in modules or not layers.is_linear(modules[t])]
        if missing:
            raise TechniqueError(
                f"LoRA target {missing[0]!r} is not a linear layer of this model; "
                "leave targets empty to adapt every linear layer but the head"
            )
        owners = layers.original_weight_owners(model, targets)
        layers.freeze(model)
        base = config.base
        if base == "nf4" and fake:
            base = "bf16"  # bitsandbytes cannot quantize fake tensors: `effect` counts NF4
        if base == "int8":
            layers.quantize_int8(model, targets)
        elif base == "nf4":
            layers.quantize_nf4(model, targets, training.settings.device)
        # Adapters first, while the weights they sit on are still fp32: peft would give
        # them the base's dtype, and they train in fp32.
        layers.inject_adapters(
            model,
            tuple(targets),
            config.rank,
            config.alpha,
            config.dropout,
            device=training.settings.device,
            fake=fake,
        )
        quantized = {f"{t}.base_layer" for t in targets} if base != "bf16" else set()
        layers.store_frozen_in(model, torch.bfloat16, skip=quantized)
        training.optimizer = layers.adapter_optimizer(training.optimizer, model, owners)
        if fake:
            # The real step has the adapters' state from its first update on; make it
            # now, as the estimate did for the user's optimizer.
            from memfit.estimator.fake import _create_optimizer_state

            _create_optimizer_state(model, training.optimizer)
        training.applied.append(self.name)

    def notes(self, config: LoraConfig, ctx: PlanContext) -> list[str]:
        trained = layers.adapter_numel(
            (ctx.facts.lora_targets[t] for t in config.targets or ctx.facts.lora_targets),
            config.rank,
        )
        total = sum(p.numel() for p in ctx.facts.trainable_parameters)
        storage = {
            "bf16": "bf16",
            "int8": "int8 (torchao, weight-only)",
            "nf4": "NF4 (bitsandbytes, QLoRA)",
        }[config.base]
        return [
            f"LoRA trains {trained:,} adapter values ({trained / max(total, 1):.2%} of the "
            f"model) of rank {config.rank} on {len(config.targets or ctx.facts.lora_targets)} "
            f"linear layers; the rest is frozen, stored as {storage}. It changes what is "
            "learned: adapters often want a learning rate about 10x a full fine-tune's"
        ]

    def contract_fields(self, config: LoraConfig | None, batch_size: int) -> dict[str, Any]:
        if config is None:
            return {"lora": None}
        return {"lora": {"rank": config.rank, "alpha": config.alpha, "base": config.base}}

    def plan_name(self, config: LoraConfig) -> str:
        return "lora" if config.base == "bf16" else f"lora-{config.base}"


def nf4_weight_bytes(numel: int) -> int:
    """Bytes of one weight in bitsandbytes' NF4 with double quantization (`NF4_BLOCK`)."""
    blocks = -(-numel // NF4_BLOCK)
    return numel // 2 + blocks + 4 * -(-blocks // NF4_SCALE_BLOCK) + 4 * 256
