"""Value-by-value comparison of a shrunk column against the original.

Every shrink is checked this way before it is returned: missing values must stay
missing (and only those), and every present value must be equal (or, when the user
allowed it, within a relative tolerance). Integers are compared as integers, never
through float64, so a wrapped-around uint64 cannot hide behind rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as ptypes

from memfit.data._shrink_rules import relative_error


@dataclass(frozen=True, slots=True)
class Comparison:
    """How far a new column is from the old one."""

    changed: int
    """Values that differ by more than the tolerance, missing-ness included."""
    max_error: float
    """Largest relative error over present values (inf if a value went missing or appeared)."""


def is_numeric(dtype) -> bool:
    """Numbers stored natively: numpy, pandas nullable or pyarrow ints, floats and bools."""
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    return bool(
        ptypes.is_integer_dtype(dtype)
        or ptypes.is_float_dtype(dtype)
        or ptypes.is_bool_dtype(dtype)
    ) and not ptypes.is_object_dtype(dtype)


def numeric_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as a numpy array with missing slots filled, missing mask) for a numeric column."""
    missing = series.isna().to_numpy(dtype=bool)
    dtype = series.dtype
    if isinstance(dtype, np.dtype):
        return series.to_numpy(), missing
    numpy_dtype = np.dtype(dtype.numpy_dtype)
    fill = np.nan if numpy_dtype.kind == "f" else numpy_dtype.type(0)
    return series.to_numpy(dtype=numpy_dtype, na_value=fill), missing


def compare(
    old: pd.Series, new: pd.Series, rtol: float = 0.0, old_strings: pa.Array | None = None
) -> Comparison:
    """Compare two columns of equal length value by value.

    >>> compare(pd.Series([1.0, None, 3.0]), pd.Series([1, None, 3], dtype="UInt8"))
    Comparison(changed=0, max_error=0.0)
    >>> compare(pd.Series([0.1]), pd.Series([0.1], dtype="float32")).changed
    1
    """
    if old.array is new.array:
        return Comparison(0, 0.0)
    new = _numbers_of_category(old, new)
    if is_numeric(old.dtype) and is_numeric(new.dtype) and _numbers_identical(old, new):
        return Comparison(0, 0.0)  # most columns: a few vectorised passes, no error arrays
    if old_strings is not None:  # nulls of the encoding: no pass over the Python objects
        old_missing = old_strings.is_null().to_numpy(zero_copy_only=False)
    else:
        old_missing = old.isna().to_numpy(dtype=bool)
    new_missing = new.isna().to_numpy(dtype=bool)
    flipped = int(np.count_nonzero(old_missing != new_missing))
    flipped += _missing_kinds_changed(old, new, old_missing)
    present = ~(old_missing | new_missing)
    if is_numeric(old.dtype) and is_numeric(new.dtype):
        old_values, new_values = numeric_values(old)[0], numeric_values(new)[0]
        err = _numeric_error(old_values[present], new_values[present])
        if old_values.dtype.kind == "f":
            err = np.maximum(err, _bit_changes(old_values, new_values, present))
            flipped += _nan_bits_lost(old, old_values, new_missing, new)
    else:
        # `old_strings`: the caller's pyarrow encoding of the original objects, made once.
        old_strings = old_strings if old_strings is not None else _arrow_strings(old)
        new_strings = _arrow_strings(new)
        if old_strings is None and new_strings is not None and old.dtype == object:
            # Encoding the original str objects to UTF-8 is cheaper than making a Python
            # object for every new value; a non-str value makes this None (and is compared
            # as an object below).
            old_strings = _objects_as_arrow(old)
        if old_strings is not None and new_strings is not None:
            equal = (
                pc.equal(old_strings, new_strings).fill_null(True).to_numpy(zero_copy_only=False)
            )
            err = np.where(equal[present], 0.0, np.inf)
        else:
            err = _object_error(_as_objects(old)[present], _as_objects(new)[present])
    changed = int(np.count_nonzero(err > rtol)) + flipped
    max_error = float(err.max()) if err.size else 0.0
    if flipped:
        max_error = float("inf")
    return Comparison(changed, max_error)


def _numbers_identical(old: pd.Series, new: pd.Series) -> bool:
    """True when both columns are missing in the same rows and equal in every other one
    (bit for bit where the old column holds floats).

    False also when the fast test cannot decide exactly (uint64 against signed integers,
    integers beyond 2**53 against floats): the caller then counts errors one by one.
    """
    old_values, old_missing = numeric_values(old)
    new_values, new_missing = numeric_values(new)
    if not np.array_equal(old_missing, new_missing):
        return False
    if old_values.dtype.kind == "f":
        if _nan_bits_lost(old, old_values, new_missing, new):
            return False
        # One masked pass over all rows, no copy of the present ones.
        with np.errstate(invalid="ignore", over="ignore"):
            back = new_values.astype(old_values.dtype)
        unsigned = np.dtype(f"u{old_values.dtype.itemsize}")
        differs = back.view(unsigned) != old_values.view(unsigned)
        if not _nan_keeps_bits(old, new):
            differs &= ~old_missing  # a missing row's slot holds nothing to keep
        return not differs.any()
    if old_missing.any():
        old_values, new_values = old_values[~old_missing], new_values[~old_missing]
    kinds = old_values.dtype.kind + new_values.dtype.kind
    if "f" not in kinds:
        signed = "i" in kinds
        if signed and np.uint64 in (old_values.dtype, new_values.dtype):
            return False  # numpy would compare them as float64
        return bool(np.array_equal(old_values, new_values))
    floats = new_values
    if floats.size and not np.nanmax(np.abs(floats)) <= 2.0**53:
        return False  # float64 holds every integer only up to 2**53
    with np.errstate(invalid="ignore"):
        return bool(
            np.array_equal(
                old_values.astype(np.float64, copy=False),
                new_values.astype(np.float64, copy=False),
                equal_nan=True,
            )
        )


def _bit_changes(old: np.ndarray, new: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per present row of a float column: eps where the new value, read back in the old
    dtype, differs in its bits (a sign of zero, a NaN payload), 0 elsewhere."""
    with np.errstate(invalid="ignore", over="ignore"):
        back = new[present].astype(old.dtype)
    unsigned = np.dtype(f"u{old.dtype.itemsize}")
    differs = back.view(unsigned) != old[present].view(unsigned)
    return np.where(differs, np.finfo(np.float64).eps, 0.0)


def _nan_keeps_bits(old: pd.Series, new: pd.Series) -> bool:
    numpy_float = [isinstance(s.dtype, np.dtype) and s.dtype.kind == "f" for s in (old, new)]
    return all(numpy_float)


def _nan_bits_lost(
    old: pd.Series, old_values: np.ndarray, new_missing: np.ndarray, new: pd.Series
) -> int:
    """NaNs of a numpy float column that became missing values but were not numpy's NaN
    (a missing value comes back as that one NaN, so their sign or payload would be lost)."""
    if not isinstance(old.dtype, np.dtype) or not new_missing.any() or _nan_keeps_bits(old, new):
        return 0
    lost = old_values[new_missing]
    unsigned = np.dtype(f"u{lost.dtype.itemsize}")
    canonical = np.array([np.nan], dtype=lost.dtype).view(unsigned)[0]
    return int(np.count_nonzero(lost.view(unsigned) != canonical))


def _missing_kinds_changed(old: pd.Series, new: pd.Series, old_missing: np.ndarray) -> int:
    """Missing values of an object column of another kind than the new dtype's only marker,
    when the column mixes kinds (None and NaN): pandas keeps those apart."""
    if old.dtype != object or new.dtype == object or not old_missing.any():
        return 0
    kinds = [type(v) for v in old.to_numpy()[old_missing]]
    if len(set(kinds)) < 2:
        return 0
    common = max(set(kinds), key=kinds.count)
    return sum(kind is not common for kind in kinds)


def _numbers_of_category(old: pd.Series, new: pd.Series) -> pd.Series:
    """A category of numbers given for a numeric column, as numbers in the old dtype."""
    if not (is_numeric(old.dtype) and isinstance(new.dtype, pd.CategoricalDtype)):
        return new
    if not ptypes.is_numeric_dtype(new.dtype.categories.dtype):
        return new
    numpy_dtype = np.dtype(getattr(old.dtype, "numpy_dtype", old.dtype))
    if numpy_dtype.kind != "f":
        numpy_dtype = np.dtype(np.float64) if new.isna().any() else numpy_dtype
    values = np.asarray(new.astype(object).to_numpy(na_value=np.nan), dtype=numpy_dtype)
    return pd.Series(values, index=new.index, name=new.name, copy=False)


def _numeric_error(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    if old.dtype.kind in "iub" and new.dtype.kind in "iub":
        equal = _integers_equal(old, new)
        err = relative_error(old, new)
        # float64 can call two different large integers equal; the integer test decides.
        err[~equal] = np.maximum(err[~equal], np.finfo(np.float64).eps)
        err[equal] = 0.0
        return err
    if old.dtype.kind in "iub" and new.dtype.kind == "f":
        equal = _float_equals_int(new, old)
        err = relative_error(old, new)
        err[~equal] = np.maximum(err[~equal], np.finfo(np.float64).eps)
        err[equal] = 0.0
        return err
    return relative_error(old, new)


def _integers_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint64 and b.dtype != np.uint64:
        return a.astype(np.int64) == b.astype(np.int64)
    a_negative = a < 0 if a.dtype.kind == "i" else np.zeros(a.shape, dtype=bool)
    b_negative = b < 0 if b.dtype.kind == "i" else np.zeros(b.shape, dtype=bool)
    same_unsigned = a.astype(np.uint64) == b.astype(np.uint64)
    return (a_negative == b_negative) & same_unsigned


def _float_equals_int(floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    floats = floats.astype(np.float64)
    upper = 2.0**64 if ints.dtype == np.uint64 else 2.0**63
    whole = np.isfinite(floats) & (floats == np.trunc(floats)) & (floats >= -(2.0**63))
    whole &= floats < upper
    equal = np.zeros(floats.shape, dtype=bool)
    equal[whole] = _integers_equal(
        floats[whole].astype(ints.dtype if ints.dtype.kind != "b" else np.int64),
        ints[whole],
    )
    return equal


def _object_error(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    if old.size == 0:
        return np.zeros(0)
    equal = np.asarray(old == new, dtype=bool)
    if equal.shape != old.shape:  # elements that compare as containers: fall back to one by one
        equal = np.fromiter(
            (bool(x == y) for x, y in zip(old, new, strict=True)), dtype=bool, count=old.size
        )
    err = np.zeros(old.shape)
    err[~equal] = np.inf
    return err


def _arrow_strings(series: pd.Series) -> pa.Array | None:
    """A string column (or a category of strings) as one large_string array, without copying
    Python objects; None for anything else."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _arrow_strings(pd.Series(dtype.categories))
        if categories is None:
            return None
        codes = series.cat.codes.to_numpy()
        return categories.take(pa.array(codes, mask=codes < 0))
    string = isinstance(dtype, pd.StringDtype) or (
        isinstance(dtype, pd.ArrowDtype)
        and pa.types.is_string(dtype.pyarrow_dtype)
        or isinstance(dtype, pd.ArrowDtype)
        and pa.types.is_large_string(dtype.pyarrow_dtype)
    )
    if not string:
        return None
    array = pa.array(series.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string())


def _as_objects(series: pd.Series) -> np.ndarray:
    """Values as a numpy object array; a categorical makes one Python object per category."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        lookup = np.append(series.cat.categories.to_numpy(dtype=object), None)
        return lookup[series.cat.codes.to_numpy()]  # code -1 picks the trailing None
    return series.to_numpy(dtype=object)


def _objects_as_arrow(series: pd.Series) -> pa.Array | None:
    values = series.to_numpy(dtype=object)
    if ptypes.infer_dtype(values, skipna=True) != "string":
        return None
    try:
        return pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None
