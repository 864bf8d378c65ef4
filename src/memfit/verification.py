"""`verify`: apply a plan to a fresh model, run real steps, and hold the prediction to them."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

import torch

from memfit.budget import format_bytes
from memfit.errors import PlanError
from memfit.measure.process import (
    ProcessPeak,
    env_is_stable,
    relax_allocator,
    stabilize_allocator,
)
from memfit.planning.types import Plan
from memfit.workload import Workload, load_workload


@dataclass(frozen=True)
class Verification:
    """Measured against predicted, for a plan run for real."""

    plan: Plan
    steps: int
    tracker_peak_bytes: int
    """Highest live tensor bytes in any measured update (memfit's tracker)."""
    process_peak_bytes: int
    """The process's own high-water mark over an update, less what it held besides tensors
    before it (RSS on CPU, the CUDA allocator's peak on GPU)."""
    process_total_peak_bytes: int
    """The process's high-water mark as the OS (or the allocator) reports it, whole."""
    measured_step_s: float
    """Best wall time of two untracked updates (other processes only make it slower)."""
    phase_peaks: dict[str, int] = field(default_factory=dict)
    reserved_peak_bytes: int | None = None
    """CUDA only: the caching allocator's reserved high-water mark (what runs out)."""
    allocator_stable: bool = True
    """False when RSS was read without `MALLOC_MMAP_THRESHOLD_` set at start-up: glibc may
    then hold freed memory and the process peak reads high."""

    @property
    def predicted_peak_bytes(self) -> int:
        return self.plan.predicted_peak_bytes

    @property
    def predicted_step_s(self) -> float:
        return self.plan.chosen.predicted_step_s

    @property
    def measured_peak_bytes(self) -> int:
        return max(self.tracker_peak_bytes, self.process_peak_bytes)

    @property
    def within_budget(self) -> bool:
        """Both peaks at most the budget less the runtime reserve (`Room.within`)."""
        room = self.plan.room
        peaks = [self.tracker_peak_bytes, self.process_peak_bytes, self.reserved_peak_bytes or 0]
        return all(room.within(p) for p in peaks)

    def line(self) -> str:
        verdict = "inside" if self.within_budget else "OVER"
        return (
            f"measured over {self.steps} steps: tracker peak {format_bytes(self.tracker_peak_bytes)}, "
            f"process peak {format_bytes(self.process_peak_bytes)} (predicted "
            f"{format_bytes(self.predicted_peak_bytes)}); {verdict} the "
            f"{format_bytes(self.plan.room.limit_bytes)} the budget leaves; step "
            f"{self.measured_step_s:.3f} s (predicted {self.predicted_step_s:.3f} s)"
        )

    def to_dict(self) -> dict:
        return {
            "measured_peak_bytes": int(self.measured_peak_bytes),
            "tracker_peak_bytes": int(self.tracker_peak_bytes),
            "process_peak_bytes": int(self.process_peak_bytes),
            "process_total_peak_bytes": int(self.process_total_peak_bytes),
            "measured_step_s": round(self.measured_step_s, 6),
            "predicted_step_s": round(self.predicted_step_s, 6),
            "reserved_peak_bytes": self.reserved_peak_bytes,
            "within_budget": self.within_budget,
            "verified_steps": self.steps,
        }


def verify(
    plan: Plan,
    workload: Workload | str | None = None,
    *,
    steps: int = 3,
    seed: int = 0,
    timed: bool = True,
) -> Verification:
    """Apply `plan` to a fresh model of `workload`, run `steps` real updates and measure them.

    One warm-up update runs first (state creation and the kernels' first-call set-up
    are the runtime's, not the step's); then each measured update runs under the tracker
    and the process's own peak (RSS, or the CUDA allocator); two more untracked updates
    time the step (`timed=False` skips them). RSS is only repeatable when glibc returns big frees at once: the
    command line sets `MALLOC_MMAP_THRESHOLD_` for itself; from Python, set it before
    the interpreter starts (`Verification.allocator_stable` says whether it was).

        >>> from memfit import zoo, plan as make_plan
        >>> w = zoo.get("mlp", depth=4, width=256, inputs=256)
        >>> p = make_plan(w, "12MB", batch_size=2048, reserve_bytes=0)
        >>> v = verify(p, w, steps=2)
        >>> v.tracker_peak_bytes <= p.room.limit_bytes and v.steps == 2
        True
    """
    from memfit import progress
    from memfit.optim import build_optimizer

    workload = load_workload(workload) if workload is not None else plan._workload
    if workload is None:
        raise PlanError("verify needs the workload this plan was made for: verify(plan, workload)")
    if plan.nodes > 1:
        raise PlanError(
            "verify runs one process; check a sharded plan under torchrun with "
            "`torchrun --nproc-per-node 2 --standalone -m memfit.distributed.check`"
        )
    if steps < 1:
        raise PlanError("verify needs at least one step")
    device = plan.device
    stabilized = stabilize_allocator() and not env_is_stable()
    torch.manual_seed(seed)
    with torch.device(device):
        model = workload.build_model()
    model.train()
    optimizer = build_optimizer(
        workload, None if plan.optimizer == "workload" else plan.optimizer, model
    )
    step = plan.apply(model, optimizer)
    tracker_peak = process_peak = total_peak = 0
    reserved = None
    phases: dict[str, int] = {}
    times = []
    try:
        # Compiled optimizer steps (torchao) compile again the first time they run under
        # the tracker, so the warm-up runs the tracked path too, plain and tracked.
        compiled = type(step.optimizer).__module__.startswith("torchao")
        with progress.task("verifying the plan", total=steps + 1 + compiled + 2 * timed) as bar:
            step(workload.make_batch(plan.batch_size, device))
            if compiled:
                step.measure_result(workload.make_batch(plan.batch_size, device))
            bar.advance(1 + compiled)
            for _ in range(steps):
                batch = workload.make_batch(plan.batch_size, device)
                process = ProcessPeak(device)
                gc.collect()
                process.start()
                _, result = step.measure_result(batch, process)
                process.stop()
                non_tensor = process.baseline_bytes - result.start_bytes
                tracker_peak = max(tracker_peak, result.peak_bytes)
                process_peak = max(process_peak, process.peak_bytes - non_tensor)
                total_peak = max(total_peak, process.peak_bytes)
                if process.reserved_peak_bytes is not None:
                    reserved = max(reserved or 0, process.reserved_peak_bytes)
                for k, v in result.phase_peaks.items():
                    phases[k] = max(phases.get(k, 0), v)
                del batch
                bar.advance()
            if stabilized:
                # Timing runs with the allocator's usual speed (mapping every block is slow).
                relax_allocator()
                stabilized = False
            for _ in range(2 if timed else 0):
                batch = workload.make_batch(plan.batch_size, device)
                start = time.perf_counter()
                step(batch)
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                bar.advance()
    except torch.OutOfMemoryError as exc:
        raise PlanError(
            f"the plan ran out of memory on {device} while verifying; plan with a smaller "
            "budget or --exact off"
        ) from exc
    finally:
        if stabilized:
            relax_allocator()
    return Verification(
        plan=plan,
        steps=steps,
        tracker_peak_bytes=tracker_peak,
        process_peak_bytes=max(0, process_peak),
        process_total_peak_bytes=total_peak,
        measured_step_s=min(times, default=0.0),
        phase_peaks=phases,
        reserved_peak_bytes=reserved,
        allocator_stable=env_is_stable() or str(device).startswith("cuda"),
    )
