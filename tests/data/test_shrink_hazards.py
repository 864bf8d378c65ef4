"""The float hazards contract: every column rule of shrink, fed every value that trips floats.

Each hazard is put in columns of each float family (numpy, pandas nullable, pyarrow) and
next to values that tempt a rule (whole numbers tempt an integer, float32-exact values
tempt float32, one repeated value tempts a category). Whatever dtype shrink picks, the
column read back in its old dtype must give the same bits in every row: pandas' own
`astype` reads it back and numpy views compare the bits, not memfit's check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from memfit.data import shrink


def _bits(*words: int) -> np.ndarray:
    return np.array(words, dtype=np.uint64).view(np.float64)


HAZARDS = {
    "negative zero": np.array([-0.0]),
    "negative zero and zero": np.array([-0.0, 0.0]),
    "R's NA (a NaN payload)": _bits(0x7FF00000000007A2),
    "negative NaN (x86's default)": _bits(0xFFF8000000000000),
    "signalling NaN": _bits(0x7FF0000000000001),
    "quiet NaN with payload": _bits(0x7FF8000000000123),
    "infinities": np.array([np.inf, -np.inf]),
    "float64 subnormal": np.array([5e-324, -2.5e-320]),
    "float32 subnormal": np.array([np.float32(1e-45)], dtype=np.float64),
    "float16 subnormal": np.array([np.float16(6e-8)], dtype=np.float64),
    "beyond float16": np.array([65520.0, 70000.0]),
    "float16 max": np.array([65504.0]),
    "2**53 + 2": np.array([2.0**53 + 2]),
    "2**63": np.array([2.0**63]),
    "near 2**64": np.array([2.0**64 - 2048]),
    "beyond 2**64": np.array([2.0**64, 1e300]),
    "integer bounds": np.array([-129.0, 127.0, 128.0, 255.0, 256.0, 65535.0, -32769.0]),
    "tenth": np.array([0.1]),
    "largest float": np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max]),
}
CARRIERS = {
    "alone": np.array([], dtype=np.float64),
    "whole numbers with NaN": np.array([1.0, 2.0, np.nan, 3.0] * 50),
    "float32-exact": np.array([0.5, 0.25, 1.5] * 50),
    "one value": np.full(200, 7.0),
}
FAMILIES = ("float64", "float32", "Float64", "double[pyarrow]")
OPTIONS = (
    {},
    {"float16": True},
    {"float_to_int": False},
    {"strings": False, "float16": True},
)


def _column(values: np.ndarray, family: str) -> pd.Series:
    if family == "float64":
        return pd.Series(values)
    if family == "float32":
        with np.errstate(over="ignore", invalid="ignore"):
            return pd.Series(values.astype(np.float32))
    nan = np.isnan(values)
    # Half the NaNs stay values and half are missing: both kinds must survive as they are.
    missing = nan & (np.cumsum(nan) % 2 == 0)
    if family == "Float64":
        return pd.Series(pd.arrays.FloatingArray(values.copy(), missing))
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, mask=missing)))


def _unchanged(old: pd.Series, new: pd.Series) -> bool:
    back = new.astype(old.dtype)
    if isinstance(old.dtype, np.dtype):  # a numpy NaN is a value with bits: all rows count
        a, b = old.to_numpy(), back.to_numpy()
        return np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))
    missing = old.isna().to_numpy()
    if not np.array_equal(missing, back.isna().to_numpy()):
        return False
    numpy_dtype = np.dtype(
        getattr(old.dtype, "numpy_dtype", None) or old.dtype.pyarrow_dtype.to_pandas_dtype()
    )
    a = old.to_numpy(dtype=numpy_dtype, na_value=0.0)[~missing]
    b = back.to_numpy(dtype=numpy_dtype, na_value=0.0)[~missing]
    return np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


@pytest.mark.parametrize("hazard", list(HAZARDS))
def test_every_rule_keeps_every_bit(hazard):
    failures = []
    for carrier, base in CARRIERS.items():
        values = np.concatenate([base, HAZARDS[hazard]])
        for family in FAMILIES:
            column = _column(values, family)
            for options in OPTIONS:
                result = shrink(pd.DataFrame({"x": column}), **options)
                new = result.frame["x"]
                if not _unchanged(column, new):
                    failures.append(f"{carrier} / {family} / {options}: -> {new.dtype}")
                assert result.columns[0].changed == 0
    assert not failures, "\n".join(failures)


def test_the_rules_still_shrink_around_the_hazards():
    # Not a contract that keeps everything as it is: ordinary columns still shrink.
    frame = pd.DataFrame(
        {
            "whole": [1.0, 2.0, np.nan, 3.0] * 50,
            "halves": [0.5, 0.25, 1.5, -0.0] * 50,
            "signed zero": [-0.0, 1.0, 2.0, 3.0] * 50,
        }
    )
    dtypes = {k: str(v) for k, v in shrink(frame).frame.dtypes.items()}
    assert dtypes == {"whole": "UInt8", "halves": "float32", "signed zero": "float32"}


def test_smallest_exact_representation_wins_by_measured_bytes():
    rows = 30_000
    # Whole numbers with missing values that float16 holds exactly: float16 (2 bytes a row)
    # beats a nullable Int16 (2 bytes and a mask byte).
    whole = pd.Series(np.where(np.arange(rows) % 3 == 0, np.nan, np.arange(rows) % 2000.0))
    out = shrink(whole.to_frame("x"), float16=True).frame["x"]
    as_int = whole.astype("UInt16").memory_usage(deep=True, index=False)
    as_half = whole.astype("float16").memory_usage(deep=True, index=False)
    assert out.memory_usage(deep=True, index=False) == min(as_int, as_half) == as_half
    # Without float16, the nullable integer is the smallest exact choice left.
    assert str(shrink(whole.to_frame("x")).frame["x"].dtype) == "UInt16"
    # A constant column: a category of its one value (a byte a row), not an integer width.
    for constant in (pd.Series(np.full(rows, 10**6)), pd.Series(np.full(rows, 3.14))):
        out = shrink(constant.to_frame("c")).frame["c"]
        narrowest = constant.astype(np.uint32 if constant.dtype.kind == "i" else np.float64)
        assert (
            out.memory_usage(deep=True, index=False)
            < narrowest.memory_usage(deep=True, index=False) / 3
        )
        assert out.astype(constant.dtype).equals(constant)
    # A tie keeps the plainer dtype: whole numbers without missing values stay integers.
    assert str(
        shrink(pd.DataFrame({"n": np.arange(rows) % 2000.0}), float16=True).frame["n"].dtype
    ) == ("uint16")
