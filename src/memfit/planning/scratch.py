"""Memory kernels take outside tensors, measured on real passes before planning.

Fake tensors see every tensor a step makes, but not what kernels allocate for
themselves: oneDNN's convolution scratchpads on CPU, cuDNN workspaces on CUDA. On a
WideResNet step that was 11% of the process's peak, and it doubled with every block
checkpointed. Two real forward-and-backward passes per variant (plain, and with every
unit checkpointed) give it as a straight line in the micro-batch size; the planner adds
it to the phases it was seen in when it predicts the process's own peak.

The process's readings are only repeatable with the allocator settled before Python
started (`memfit.measure.process`); without that, nothing is measured.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from memfit.measure.process import ProcessPeak, env_is_stable
from memfit.measure.step import StepSettings, TrainingStep
from memfit.measure.tracker import MemoryTracker
from memfit.techniques.base import TechniqueConfig, Training
from memfit.techniques.registry import apply_all
from memfit.workload import Workload

PASS_PHASES = ("forward", "backward")


@dataclass(frozen=True)
class ScratchLine:
    """Hidden bytes per phase: `fixed + per_sample * micro_batch`."""

    fixed: Mapping[str, float] = field(default_factory=dict)
    per_sample: Mapping[str, float] = field(default_factory=dict)

    def at(self, micro: int) -> dict[str, int]:
        return {
            phase: max(0, int(self.fixed.get(phase, 0.0) + self.per_sample.get(phase, 0.0) * micro))
            for phase in set(self.fixed) | set(self.per_sample)
        }


@dataclass(frozen=True)
class KernelScratch:
    plain: ScratchLine
    checkpointed: ScratchLine | None = None

    def at(self, micro: int, checkpointing: bool) -> dict[str, int]:
        line = self.checkpointed if checkpointing and self.checkpointed else self.plain
        return line.at(micro)


def measurable(device: str) -> bool:
    return str(device).startswith("cuda") or env_is_stable()


def measure_kernel_scratch(
    workload: Workload,
    device: str,
    sizes: Sequence[int],
    checkpoint: TechniqueConfig | None = None,
) -> KernelScratch | None:
    """Lines through the hidden bytes at two batch sizes, plain and checkpointed."""
    if not measurable(device) or len(sizes) < 2:
        return None
    plain = _line(workload, device, sizes, ())
    ckpt = _line(workload, device, sizes, (checkpoint,)) if checkpoint is not None else None
    return KernelScratch(plain=plain, checkpointed=ckpt)


def _line(workload, device, sizes, configs) -> ScratchLine:
    low, high = sizes[0], sizes[-1]
    at_low, at_high = (
        _hidden(workload, device, low, configs),
        _hidden(workload, device, high, configs),
    )
    slope = {p: (at_high[p] - at_low[p]) / max(high - low, 1) for p in PASS_PHASES}
    fixed = {p: at_low[p] - slope[p] * low for p in PASS_PHASES}
    return ScratchLine(fixed=fixed, per_sample=slope)


def _hidden(workload: Workload, device: str, size: int, configs) -> dict[str, float]:
    """Process peak less tracker peak in each pass phase, for one real pass of `size`."""
    torch.manual_seed(0)
    with torch.device(device):
        model = workload.build_model()
    model.train()
    settings = StepSettings(device=device, count_items=workload.count_items)
    training = apply_all(
        configs, Training(model=model, optimizer=None, settings=settings, batch_size=size)
    )
    step = TrainingStep.for_workload(workload, training.model, None, settings)
    step(workload.make_batch(size, device))  # first-call set-up belongs to the runtime
    readings = []
    for _ in range(2):
        batch = workload.make_batch(size, device)
        tracker = MemoryTracker(keep_timeline=False)
        tracker.register_model(model)
        process = ProcessPeak(device)
        gc.collect()
        process.start()

        def on_phase(phase: str, tracker=tracker, process=process) -> None:
            process.next_phase(phase)
            tracker.phase = phase

        step.on_phase = on_phase
        with tracker.track(model):
            step(batch)
        process.stop()
        model.zero_grad(set_to_none=True)
        result = tracker.result()
        non_tensor = process.baseline_bytes - result.start_bytes
        readings.append(
            {
                p: max(
                    0.0, process.phase_peaks.get(p, 0) - non_tensor - result.phase_peaks.get(p, 0)
                )
                for p in PASS_PHASES
            }
        )
    # The smaller reading of each phase: other processes' pages never lower it.
    return {p: min(r[p] for r in readings) for p in PASS_PHASES}
