"""The rules that pick a smaller dtype, shared by in-memory shrinking and file conversion.

Bounds are inclusive (a column whose maximum is 255 fits uint8), unsigned types are
preferred when nothing is negative, and a float type is kept only when every value
comes back from it bit for bit: the sign of zero, the sign and payload of a NaN,
subnormals and infinities included (numpy's `==` would call -0.0 and 0.0 equal, and
every NaN unequal, so the comparison is of the bits). A missing value in a nullable
integer comes back as numpy's NaN, so only a column whose NaNs are that very NaN
may become one, and a column holding -0.0 never becomes an integer.
"""

from __future__ import annotations

import numpy as np

# Smallest first: the first type whose inclusive range holds [lo, hi] wins.
UNSIGNED = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))
SIGNED = (np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64))
FLOAT16_MAX = float(np.finfo(np.float16).max)
PEEK_ROWS = 1024
"""Rows tried before a full pass: one value there that a type cannot hold rules it out."""


def smallest_int_dtype(lo: int, hi: int) -> np.dtype | None:
    """The smallest integer dtype holding every value in [lo, hi], or None if none does.

    >>> smallest_int_dtype(0, 255), smallest_int_dtype(-1, 127), smallest_int_dtype(0, 256)
    (dtype('uint8'), dtype('int8'), dtype('uint16'))
    """
    lo, hi = int(lo), int(hi)
    for dtype in UNSIGNED if lo >= 0 else SIGNED:
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return None


def fits_int_dtype(lo: int, hi: int, dtype: np.dtype) -> bool:
    """Whether [lo, hi] lies inside the inclusive range of the integer `dtype`."""
    info = np.iinfo(dtype)
    return info.min <= int(lo) and int(hi) <= info.max


def code_dtype(n_categories: int) -> np.dtype:
    """The code dtype pandas uses for a categorical with this many categories."""
    for dtype in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def relative_error(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """|new - old| / |old| elementwise, in float64; 0 where both are equal (inf and -0.0 too).

    Where old is 0 (or infinite) any difference counts as an infinite error.
    """
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        err = np.abs(new - old) / np.abs(old)
    equal = new == old
    err[equal] = 0.0
    err[~equal & ~np.isfinite(err)] = np.inf
    return err


def float_round_trip_error(values: np.ndarray, dtype: np.dtype) -> float:
    """The largest relative error of storing finite-or-not float `values` as `dtype` (NaN ignored).

    >>> float_round_trip_error(np.array([0.5, 1.25, np.nan]), np.dtype(np.float32))
    0.0
    >>> float_round_trip_error(np.array([0.1]), np.dtype(np.float32)) > 0
    True
    """
    values = np.asarray(values)
    if float_round_trips(values, dtype):
        return 0.0  # the common case: one vectorised comparison, no per-value errors
    present = values[~np.isnan(values)]
    with np.errstate(over="ignore", invalid="ignore"):
        back = present.astype(dtype).astype(present.dtype)
    return float(relative_error(present, back).max())


def float_round_trips(values: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every float in `values` comes back bit for bit from `dtype`.

    >>> float_round_trips(np.array([0.5, -0.0, np.nan]), np.dtype(np.float32))
    True
    >>> payload = np.array([0x7FF00000000007A2], dtype=np.uint64).view(np.float64)  # R's NA
    >>> float_round_trips(payload, np.dtype(np.float32))
    False
    """
    with np.errstate(over="ignore", invalid="ignore"):
        back = values.astype(dtype).astype(values.dtype)
    return same_bits(back, values)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two float arrays of one dtype hold the same bits (signed zeros, NaN payloads)."""
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))


def nans_are_canonical(values: np.ndarray) -> bool:
    """Whether every NaN in a float array is numpy's own NaN (what a missing value becomes)."""
    nans = values[np.isnan(values)]
    if nans.size == 0:
        return True
    canonical = np.array([np.nan], dtype=values.dtype).view(f"u{values.dtype.itemsize}")[0]
    return bool((nans.view(f"u{values.dtype.itemsize}") == canonical).all())


def canonical_nans(values: np.ndarray, nan: np.ndarray) -> bool:
    """`nans_are_canonical` given the NaN rows already: one masked pass, no copy of them."""
    unsigned = np.dtype(f"u{values.dtype.itemsize}")
    canonical = np.array([np.nan], dtype=values.dtype).view(unsigned)[0]
    return not bool(((values.view(unsigned) != canonical) & nan).any())


def whole_ints(values: np.ndarray) -> np.ndarray | None:
    """The floats as int64 when every one is a whole number int64 holds, else None.

    Casting to int64 and back gives the same bits only for such values: a fraction, an
    infinity, a NaN, -0.0 (which comes back as 0.0) or anything from 2**63 on changes.
    (Whole numbers from 2**63 to 2**64 would need uint64, no smaller than a float64.)

    >>> whole_ints(np.array([1.0, 300.0])).tolist(), whole_ints(np.array([-0.0]))
    ([1, 300], None)
    """
    with np.errstate(invalid="ignore", over="ignore"):
        head = values[:PEEK_ROWS]
        if not same_bits(head.astype(np.int64).astype(values.dtype), head):
            return None
        ints = values.astype(np.int64)
        if not same_bits(ints.astype(values.dtype), values):
            return None
    return ints


def has_negative_zero(values: np.ndarray) -> bool:
    """Whether a float array holds -0.0, whose sign an integer cannot keep."""
    return bool(np.any(np.signbit(values) & (values == 0)))


def integral_range(values: np.ndarray) -> tuple[int, int] | None:
    """(min, max) as Python ints when every non-NaN float is a whole number inside int64/uint64.

    None when a value has a fraction, is infinite, or nothing is present.

    >>> integral_range(np.array([1.0, np.nan, 300.0]))
    (1, 300)
    >>> integral_range(np.array([1.5])) is None
    True
    """
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size == 0 or not np.isfinite(present).all():
        return None
    if not (present == np.trunc(present)).all():
        return None
    lo, hi = float(present.min()), float(present.max())
    # float64 cannot hold 2**63 - 1; the bounds below are exactly representable.
    if lo < -(2.0**63) or hi >= 2.0**64 or (lo < 0 and hi >= 2.0**63):
        return None
    return int(lo), int(hi)
