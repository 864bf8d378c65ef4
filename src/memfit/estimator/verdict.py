"""The honest answer: does it fit, how much is missing, and which machine would fit it."""

from __future__ import annotations

from dataclasses import dataclass

from memfit.budget import (
    RUNTIME_RESERVE_BYTES,
    SAFETY_MARGIN,
    Budget,
    format_bytes,
    runtime_reserve,
    smallest_preset_that_fits,
)

__all__ = ["RUNTIME_RESERVE_BYTES", "FitVerdict", "runtime_reserve"]


@dataclass
class FitVerdict:
    """Whether a step of `peak_bytes` fits `budget` once the runtime's own memory is counted."""

    peak_bytes: int
    reserve_bytes: int
    budget: Budget
    max_batch_size: int | None = None
    max_batch_size_pow2: int | None = None

    @property
    def room(self):
        return self.budget.room(self.reserve_bytes)

    @property
    def need_bytes(self) -> int:
        """The smallest budget whose usable bytes hold the peak (reserve and margin added)."""
        return -(-self.peak_bytes * 100 // round((1 - SAFETY_MARGIN) * 100)) + self.reserve_bytes

    @property
    def fits(self) -> bool:
        return self.room.fits(self.peak_bytes)

    @property
    def shortfall_bytes(self) -> int:
        return max(0, self.need_bytes - self.budget.bytes)

    @property
    def suggestion(self) -> Budget | None:
        """The smallest preset of the same memory kind that holds the step."""
        return smallest_preset_that_fits(self.need_bytes, self.budget.device)

    def line(self) -> str:
        name = self.budget.name or "the budget"
        head = (
            f"needs {format_bytes(self.need_bytes)}; {name} has {format_bytes(self.budget.bytes)}"
        )
        if self.fits:
            text = f"{head}: fits, {format_bytes(self.budget.bytes - self.need_bytes)} to spare"
        else:
            text = f"{head}: {format_bytes(self.shortfall_bytes)} short; "
            fit = self.suggestion
            text += (
                f"fits {fit.name}"
                if fit
                else "no preset holds it: run `memfit plan` (precision, 8-bit Adam, offload, sharding)"
            )
        if self.max_batch_size is not None:
            if self.max_batch_size:
                text += (
                    f"; largest batch that fits: {self.max_batch_size} "
                    f"(power of two: {self.max_batch_size_pow2})"
                )
            else:
                text += "; not even batch size 1 fits"
        return text

    def to_dict(self) -> dict:
        return {
            "budget_bytes": self.budget.bytes,
            "fits": self.fits,
            "need_bytes": self.need_bytes,
            "reserve_bytes": self.reserve_bytes,
            "shortfall_bytes": self.shortfall_bytes,
            "max_batch_size": self.max_batch_size,
            "max_batch_size_pow2": self.max_batch_size_pow2,
            "fits_preset": self.suggestion.name if self.suggestion else None,
        }
