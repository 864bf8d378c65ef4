"""The largest batch that fits, predicted from estimates instead of trial runs that crash.

Each phase's peak is close to affine in the batch size (model states are fixed,
activations and temporaries scale with the batch), and the step's peak is the
largest of the phase peaks. Two estimates give each phase's line; the answer is
refined with secant steps on the whole peak, then checked with estimates on both
sides; a bisection over estimates takes over where the lines were not straight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from memfit.budget import Budget
from memfit.estimator.fake import estimate
from memfit.memory_profile import MemoryProfile
from memfit.workload import Workload, load_workload

PROBES = (1, 8)


@dataclass
class BatchSizeFit:
    """The largest batch (and power of two) whose estimated peak fits the usable budget."""

    max_batch_size: int
    max_batch_size_pow2: int
    peak_bytes: int | None
    """Estimated peak at `max_batch_size` (None when not even batch 1 fits)."""
    peak_bytes_pow2: int | None
    usable_bytes: int
    """The budget less the runtime reserve and the safety margin (`Budget.room`)."""
    method: str
    """`affine` when the straight-line prediction was confirmed, `search` when bisection ran."""
    estimates: dict[int, int] = field(default_factory=dict)
    """Every batch size estimated on the way, with its peak."""


def max_batch_size(
    workload: Workload | str,
    budget: Budget | str,
    optimizer: str = "adam",
    *,
    precision: str = "fp32",
    device: str = "cpu",
    reserve_bytes: int | None = None,
    limit: int = 1 << 20,
    peak_of: Callable[[int], MemoryProfile] | None = None,
) -> BatchSizeFit:
    """Largest batch whose estimated step peak fits `budget` (the rule of `Budget.room`).

    >>> from memfit import zoo
    >>> fit = max_batch_size(zoo.get("mlp", depth=2, width=64, inputs=32), "64MB",
    ...                      reserve_bytes=0)
    >>> fit.max_batch_size >= fit.max_batch_size_pow2 > 0
    True
    """
    workload = load_workload(workload)
    budget = Budget.parse(budget)
    usable = budget.room(reserve_bytes).usable_bytes
    cache: dict[int, MemoryProfile] = {}

    def run(b: int) -> MemoryProfile:
        if b not in cache:
            cache[b] = (
                peak_of(b)
                if peak_of
                else estimate(workload, b, optimizer, precision=precision, device=device)
            )
        return cache[b]

    def fits(b: int) -> bool:
        return run(b).peak_bytes <= usable

    best, method = _search(run, fits, usable, limit)
    pow2 = 1 << (best.bit_length() - 1) if best else 0
    return BatchSizeFit(
        max_batch_size=best,
        max_batch_size_pow2=pow2,
        peak_bytes=run(best).peak_bytes if best else None,
        peak_bytes_pow2=run(pow2).peak_bytes if pow2 else None,
        usable_bytes=usable,
        method=method,
        estimates={b: p.peak_bytes for b, p in sorted(cache.items())},
    )


def _search(run, fits, usable: int, limit: int) -> tuple[int, str]:
    if usable <= 0 or not fits(1):
        return 0, "affine"
    guess = _refine(run, usable, limit, max(1, _affine_guess(run, usable, limit)))
    # Bracket the answer around the straight-line guess with growing steps, then bisect:
    # a few estimates when the lines were nearly straight, a logarithmic number when not.
    if fits(guess) and (guess >= limit or not fits(guess + 1)):
        return guess, "affine"
    step = max(1, guess // 100)
    if fits(guess):
        lo, hi = guess, guess + step
        while hi <= limit and fits(hi):
            lo, step = hi, step * 2
            hi = lo + step
        if hi > limit:
            return (limit if fits(limit) else lo), "search"
    else:
        lo, hi = max(1, guess - step), guess
        while lo > 1 and not fits(lo):
            hi, step = lo, step * 2
            lo = max(1, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, ("affine" if lo == guess else "search")


def _refine(run, usable: int, limit: int, guess: int, rounds: int = 3) -> int:
    # Secant steps on the whole step's peak: the probes' lines can miss when the phase that
    # sets the peak at large batches is small at the probe sizes.
    prev = PROBES[-1]
    for _ in range(rounds):
        if guess == prev:
            break
        y0, y1 = run(prev).peak_bytes, run(guess).peak_bytes
        if y1 == y0:
            break
        slope = (y1 - y0) / (guess - prev)
        if slope <= 0:
            break
        prev, guess = guess, max(1, min(limit, int(guess + (usable - y1) // slope)))
    return guess


def _affine_guess(run, usable: int, limit: int) -> int:
    small, large = (run(b) for b in PROBES)
    b1, b2 = PROBES
    guess = limit
    for phase, high in large.phase_peaks.items():
        low = small.phase_peaks.get(phase, 0)
        slope = (high - low) / (b2 - b1)
        if slope <= 0:
            continue
        intercept = low - slope * b1
        guess = min(guess, int((usable - intercept) // slope))
    return max(0, min(guess, limit))
