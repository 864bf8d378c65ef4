"""What a user should read beside a plan, composed after the search from its result."""

from __future__ import annotations

from memfit.budget import SAFETY_MARGIN, format_bytes, smallest_preset_that_fits
from memfit.planning.inputs import PlanContext
from memfit.planning.search import SearchResult
from memfit.techniques.registry import of


def compose_notes(ctx: PlanContext, result: SearchResult) -> list[str]:
    req = ctx.request
    chosen = result.chosen or _closest(result)
    notes = [req.room.describe()]
    if req.room.budget.device == "gpu" and not req.on_cuda:
        notes.append(
            "the budget is GPU memory but memory and time come from CPU kernels here; "
            "CUDA kernels save slightly different tensors and run at another speed: "
            "plan with --device cuda on the GPU machine for exact figures"
        )
    if ctx.baseline.peak_phase == "optimizer_step" and result.baseline.fits is False:
        notes.append(
            "the optimizer step sets the peak (model states dominate): checkpointing "
            "cannot lower it; compact optimizer state, offload or sharding can"
        )
    for config in chosen.settings.configs:
        notes += of(config).notes(config, ctx)
    source = ctx.measurements.time_model.source
    if source != "not needed":
        notes.append(
            "time model: "
            + (
                "real passes timed on this device"
                if source == "measured"
                else "FLOPs counted on fake tensors (model too large to time here)"
            )
        )
    if result.chosen is None:
        notes.append(_nothing_fits(ctx, result, chosen))
    return notes


def _closest(result: SearchResult):
    return min(result.considered, key=lambda c: c.predicted_peak_bytes)


def _nothing_fits(ctx: PlanContext, result: SearchResult, closest) -> str:
    req = ctx.request
    usable = req.room.usable_bytes
    text = (
        f"nothing fits: the smallest reachable peak is "
        f"{format_bytes(closest.predicted_peak_bytes)}, "
        f"{format_bytes(closest.predicted_peak_bytes - usable)} over"
    )
    if req.exact:
        text += "; allowing lossy techniques (drop --exact) may close the gap"
    if result.min_nodes:
        text += f"; sharded across {result.min_nodes} machines of this size it would fit"
    need = closest.predicted_peak_bytes / (1 - SAFETY_MARGIN) + req.room.reserve_bytes
    preset = smallest_preset_that_fits(int(need), req.room.budget.device)
    if preset:
        text += f"; a {preset.name} would hold it"
    return text
