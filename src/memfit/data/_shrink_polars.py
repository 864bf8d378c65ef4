"""`shrink` for polars frames, with polars' own casts.

polars' `Series.shrink_dtype` casts every Float64 to Float32 whatever it loses and
never picks unsigned types; this applies the same rules as the pandas path instead.
Every polars dtype is nullable, so no mask byte decides between int and nullable int.
"""

from __future__ import annotations

import numpy as np

from memfit.data._shrink_columns import FitOptions
from memfit.data._shrink_rules import float_round_trips, has_negative_zero, smallest_int_dtype
from memfit.errors import require


def shrink_polars(df, options: FitOptions, lossless: bool):
    from memfit.data.shrink import ColumnReport, ShrinkResult

    pl = require("polars", "polars")
    columns, reports = [], []
    for series in df.get_columns():
        new = _shrunk(pl, series, options)
        before, after = int(series.estimated_size()), int(new.estimated_size())
        report = ColumnReport(series.name, str(series.dtype), str(new.dtype), before, before)
        if new.dtype != series.dtype:
            changed, max_error = _compare(pl, series, new)
            if after >= before or (changed and (lossless or max_error > options.rtol)):
                report.new_dtype, report.note = str(series.dtype), "kept"
                new = series
            else:
                report.after_bytes, report.changed, report.max_error = after, changed, max_error
        columns.append(new)
        reports.append(report)
    out = pl.DataFrame(columns)
    return ShrinkResult(out, int(df.estimated_size()), int(out.estimated_size()), reports)


def _shrunk(pl, series, options: FitOptions):
    dtype = series.dtype
    present = series.drop_nulls()
    if dtype.is_integer() and len(present):
        target = smallest_int_dtype(present.min(), present.max())
        return series.cast(_polars_int(pl, target)) if target is not None else series
    if dtype.is_float() and len(present):
        values = present.to_numpy().astype(np.float64)
        finite = np.isfinite(values).all()
        if (
            options.float_to_int
            and finite
            and (values == np.trunc(values)).all()
            and abs(values).max() < 2.0**63
            and not has_negative_zero(values)
        ):
            target = smallest_int_dtype(int(values.min()), int(values.max()))
            if target is not None and target.itemsize < (4 if dtype == pl.Float32 else 8):
                return series.cast(_polars_int(pl, target))
        candidates = [pl.Float16] if options.float16 and hasattr(pl, "Float16") else []
        for target in [*candidates, pl.Float32]:
            if dtype == target:
                break
            cast = series.cast(target, strict=False)
            exact = float_round_trips(
                values,
                np.dtype(np.float16 if target == getattr(pl, "Float16", None) else np.float32),
            )
            if exact or (options.rtol > 0 and _compare(pl, series, cast)[1] <= options.rtol):
                return cast
        return series
    if dtype == pl.String and options.strings:
        return series.cast(pl.Categorical)
    return series


def _polars_int(pl, dtype: np.dtype):
    return getattr(pl, dtype.name.capitalize().replace("Uint", "UInt"))


def _compare(pl, old, new) -> tuple[int, float]:
    """(values changed, max relative error), nulls and NaNs compared as equal to themselves."""
    same_null = old.is_null() == new.is_null()
    if old.dtype.is_numeric() and new.dtype.is_numeric():
        a = old.cast(pl.Float64).to_numpy()
        b = new.cast(pl.Float64).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(b - a) / np.abs(a)
        equal = (a == b) | (np.isnan(a) & np.isnan(b))
        err[equal] = 0.0
        err[~equal & ~np.isfinite(err)] = np.inf
        if old.dtype.is_integer() or new.dtype.is_integer():  # integers exactly, not via float64
            exact = old.cast(pl.Int128, strict=False).eq_missing(new.cast(pl.Int128, strict=False))
            err[~exact.to_numpy()] = np.maximum(err[~exact.to_numpy()], 1e-300)
        changed = int((err > 0).sum()) + int((~same_null).sum())
        return changed, float(err.max()) if len(err) else 0.0
    equal = old.cast(pl.String).eq_missing(new.cast(pl.String))
    changed = int((~equal).sum())
    return changed, float("inf") if changed else 0.0
