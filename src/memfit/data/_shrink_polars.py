"""`shrink` for polars frames: polars' own kernels for ranges, casts and strings, numpy for bits.

polars' `Series.shrink_dtype` casts every Float64 to Float32 whatever it loses and never
picks unsigned types; this applies the same rules as the pandas path instead, column by
column, doing only the passes a column needs:

- integers: polars' min and max, then the smallest type holding both;
- floats: a look at the first rows rules out most columns at once (one value with a
  fraction rules out integers, one value float32 cannot hold rules out float32); the
  full test runs on the numpy view of the values and compares bits, so -0.0, NaN
  payloads and subnormals count, as on pandas frames;
- strings: a random sample estimates how many values are distinct (see
  `_shrink_cardinality`); only a column whose category may be smaller is hashed whole,
  and it becomes an Enum (codes of 1, 2 or 4 bytes, the categories stored once) when
  that measures smaller than its strings.

Every new column is then read back in the input's dtype and compared with the input,
missing values included, before it is returned; a column that differs in any row is
kept as it was. Every polars dtype is nullable, so no mask byte decides between an int
and a nullable int. Floats are only narrowed where exact (`rtol` applies to pandas frames).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from memfit.data._shrink_cardinality import (
    FEW_DISTINCT,
    MARGIN,
    estimate_distinct,
    sample_positions,
)
from memfit.data._shrink_columns import FitOptions
from memfit.data._shrink_rules import PEEK_ROWS, float_round_trips, smallest_int_dtype, whole_ints
from memfit.errors import require

_NUMPY_INTS = {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}


def shrink_polars(df, options: FitOptions, lossless: bool):
    from memfit.data.shrink import ColumnReport, ShrinkResult

    pl = require("polars", "polars")
    columns, reports = [], []
    for series in df.get_columns():
        before = int(series.estimated_size())
        report = ColumnReport(series.name, str(series.dtype), str(series.dtype), before, before)
        new, extra = _shrink_series(pl, series, options)
        if new is not None:
            after = int(new.estimated_size()) + extra
            changed = _changed(pl, series, new)
            if changed:
                report.note = f"kept: {new.dtype} would change {changed} values"
            elif after >= before:
                report.note = f"kept: {new.dtype} would take more memory"
            else:
                report.new_dtype, report.after_bytes = str(new.dtype), after
                series = new
        columns.append(series)
        reports.append(report)
    result = pl.DataFrame(columns)
    before_total = sum(r.before_bytes for r in reports)
    after_total = sum(r.after_bytes for r in reports)
    return ShrinkResult(result, before_total, after_total, reports)


def _shrink_series(pl, series, options: FitOptions):
    """(the column in a smaller dtype or None, bytes it holds outside `estimated_size`)."""
    dtype = series.dtype
    if len(series) == series.null_count():
        return None, 0
    if dtype.is_integer() and str(dtype).lower() in _NUMPY_INTS:
        return _integers(pl, series), 0
    if dtype.is_float() and dtype in (pl.Float32, pl.Float64):
        return _floats(pl, series, options), 0
    if dtype == pl.String and options.strings:
        return _strings(pl, series)
    return None, 0  # booleans, dates and times, categoricals, nested types: left as they are


def _integers(pl, series):
    values, valid = _parts(series)
    if valid is None:  # numpy reads the buffer in place; polars' own min and max skip nulls
        lo, hi = values.min(), values.max()
    else:
        lo, hi = series.min(), series.max()
    target = smallest_int_dtype(int(lo), int(hi))
    if target is None or target.itemsize >= values.dtype.itemsize:
        return None
    return _like(pl, series, values.astype(target))  # min and max fit: nothing wraps


def _floats(pl, series, options: FitOptions):
    raw, valid = _parts(series)
    # Missing rows read as 0.0, which every rule below accepts (and which changes no
    # integer type: unsigned ones start at 0 and signed ones hold it).
    values = raw if valid is None else np.where(valid, raw, raw.dtype.type(0))
    if options.float_to_int:
        ints = whole_ints(values)
        if ints is not None:
            target = smallest_int_dtype(int(ints.min()), int(ints.max()))
            if target is not None and target.itemsize < values.dtype.itemsize:
                return _like(pl, series, ints.astype(target))
    single = np.dtype(np.float32)
    if (
        values.dtype.itemsize == 8
        and float_round_trips(values[:PEEK_ROWS], single)  # most columns stop here
        and float_round_trips(values, single)
    ):
        return _like(pl, series, values.astype(single))
    return None


def _parts(series) -> tuple[np.ndarray, np.ndarray | None]:
    """(numpy view of the values buffer, valid rows or None when none is missing).

    Missing rows hold whatever the buffer holds there; callers mask them.
    """
    array = series.to_arrow()
    values = np.frombuffer(
        array.buffers()[1],
        dtype=np.dtype(array.type.to_pandas_dtype()),
        count=len(array) + array.offset,
    )[array.offset :]
    if array.null_count == 0:
        return values, None
    return values, _valid(array)


def _valid(array: pa.Array) -> np.ndarray:
    """The validity bitmap as booleans. numpy unpacks bits several times faster than
    pyarrow's `is_valid().to_numpy()`, which builds a boolean array first."""
    bits = np.frombuffer(array.buffers()[0], dtype=np.uint8)
    unpacked = np.unpackbits(bits, count=array.offset + len(array), bitorder="little")
    return unpacked[array.offset :].view(bool)


def _like(pl, series, values: np.ndarray):
    """A polars column of `values` missing where `series` is (its validity bitmap, shared)."""
    array = series.to_arrow()
    validity = array.buffers()[0] if array.null_count else None
    if validity is not None and array.offset:
        validity = pa.py_buffer(np.packbits(_valid(array), bitorder="little"))
    out = pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype),
        len(values),
        [validity, pa.py_buffer(values)],
        null_count=array.null_count,
    )
    return pl.from_arrow(out).alias(series.name)


def _strings(pl, series):
    """An Enum of the column's values when that may be smaller, with its categories' bytes."""
    positions = sample_positions(len(series))
    if positions is not None:
        drawn = series.gather(positions).drop_nulls()
        sample = drawn.unique(maintain_order=True)
        if len(sample) > FEW_DISTINCT * len(drawn):
            rows = len(series) - series.null_count()
            distinct = estimate_distinct(len(sample), len(drawn), rows)
            mean_bytes = sample.str.len_bytes().mean() or 0.0
            # Codes, and each category's text with a 16-byte view (polars' string layout).
            estimate = len(series) * _code_width(distinct) + distinct * (mean_bytes + 16)
            if estimate > MARGIN * series.estimated_size():
                return None, 0
        elif len(sample):
            # Few distinct values in the sample: most often all of the column's. One pass
            # encodes with them; a value they miss becomes missing, which the count shows.
            new = series.cast(pl.Enum(sample), strict=False)
            if new.null_count() == series.null_count():
                return new, int(sample.estimated_size())
    categories = series.drop_nulls().unique(maintain_order=True)
    enum_bytes = len(series) * _code_width(len(categories)) + categories.estimated_size()
    if enum_bytes >= series.estimated_size():
        return None, 0
    return series.cast(pl.Enum(categories), strict=True), int(categories.estimated_size())


def _code_width(categories: float) -> int:
    """Bytes of an Enum code: polars picks UInt8 below 256 categories, UInt16 below 65536."""
    return 1 if categories < 256 else 2 if categories < 65536 else 4


def _changed(pl, old, new) -> int:
    """Rows whose value or missing-ness differs once `new` is read back in `old`'s dtype;
    floats compared by their bits, so -0.0 and NaN payloads count."""
    if isinstance(new.dtype, pl.Enum):
        back = new.dtype.categories.gather(new.to_physical())  # what an Enum's codes mean
        if old.equals(back, null_equal=True):
            return 0
        return int((~back.eq_missing(old)).sum())
    a, a_valid = _parts(old)
    b, b_valid = _parts(new)
    with np.errstate(invalid="ignore", over="ignore"):
        back = b.astype(a.dtype)
    unsigned = f"u{a.dtype.itemsize}"
    differs = back.view(unsigned) != a.view(unsigned)
    if a_valid is not None:
        differs &= a_valid  # what a missing row's slot holds means nothing
    flipped = 0
    if a_valid is not None or b_valid is not None:
        rows = len(a)
        a_valid = np.ones(rows, bool) if a_valid is None else a_valid
        b_valid = np.ones(rows, bool) if b_valid is None else b_valid
        flipped = int(np.count_nonzero(a_valid != b_valid))
    return int(np.count_nonzero(differs)) + flipped
