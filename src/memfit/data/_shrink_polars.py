"""`shrink` for polars frames, with polars' own expressions: two parallel passes.

polars' `Series.shrink_dtype` casts every Float64 to Float32 whatever it loses and
never picks unsigned types; this applies the same rules as the pandas path instead.
One `select` measures every column at once on polars' threads (range, whole numbers,
-0.0, the float32 round trip, distinct strings); a second casts every column to its
decided type and compares it with the input in the same pass. Every polars dtype is
nullable, so no mask byte decides between int and nullable int. polars compares NaN
equal to NaN, so a NaN's payload is not checked here (the pandas path checks bits),
and floats are only narrowed where exact (`rtol` applies to pandas frames).
"""

from __future__ import annotations

import numpy as np

from memfit.data._shrink_columns import FitOptions
from memfit.data._shrink_rules import smallest_int_dtype
from memfit.errors import require

_CATEGORY_SHARE = 0.5  # a string column becomes a category below this distinct share


def shrink_polars(df, options: FitOptions, lossless: bool):
    from memfit.data.shrink import ColumnReport, ShrinkResult

    pl = require("polars", "polars")
    facts = df.select([e for s in df.get_columns() for e in _measure(pl, s, options)]).row(
        0, named=True
    )
    targets = {s.name: _target(pl, s, facts, options) for s in df.get_columns()}
    cast, checks = [], []
    for series in df.get_columns():
        target = targets[series.name]
        if target is None:
            cast.append(pl.col(series.name))
            continue
        new = pl.col(series.name).cast(target, strict=False)
        cast.append(new)
        back = new.cast(series.dtype, strict=False)
        checks.append((~back.eq_missing(pl.col(series.name))).sum().alias(series.name))
    out = df.select(cast)
    changed = df.select(checks).row(0, named=True) if checks else {}
    columns, reports = [], []
    for series, new in zip(df.get_columns(), out.get_columns(), strict=True):
        before, after = int(series.estimated_size()), int(new.estimated_size())
        report = ColumnReport(series.name, str(series.dtype), str(new.dtype), before, before)
        count = int(changed.get(series.name, 0))
        if new.dtype != series.dtype:
            if after >= before or count:
                report.new_dtype, report.note = str(series.dtype), "kept"
                new = series
            else:
                report.after_bytes = after
        columns.append(new)
        reports.append(report)
    result = pl.DataFrame(columns)
    return ShrinkResult(result, int(df.estimated_size()), int(result.estimated_size()), reports)


def _measure(pl, series, options: FitOptions) -> list:
    name, dtype = series.name, series.dtype
    col = pl.col(name)
    exprs = []
    if dtype.is_integer() or dtype.is_float():
        exprs += [col.min().alias(f"{name}\0min"), col.max().alias(f"{name}\0max")]
    if dtype.is_float():
        present = col.drop_nulls()
        exprs += [
            (present.is_finite() & (present == present.floor())).all().alias(f"{name}\0whole"),
            ((present == 0) & (1.0 / present < 0)).any().alias(f"{name}\0negzero"),
        ]
        if dtype == pl.Float64:
            back = present.cast(pl.Float32).cast(pl.Float64)
            exact = ((back == present) | (back.is_nan() & present.is_nan())).all()
            exprs.append(exact.alias(f"{name}\0float32"))
    if dtype == pl.String and options.strings:
        exprs += [col.n_unique().alias(f"{name}\0distinct"), col.len().alias(f"{name}\0rows")]
    return exprs


def _target(pl, series, facts: dict, options: FitOptions):
    name, dtype = series.name, series.dtype
    if dtype.is_integer() or dtype.is_float():
        lo, hi = facts[f"{name}\0min"], facts[f"{name}\0max"]
        if lo is None:
            return None
        if dtype.is_float():
            whole = facts[f"{name}\0whole"] and not facts[f"{name}\0negzero"]
            if options.float_to_int and whole and abs(lo) < 2.0**63 and abs(hi) < 2.0**64:
                target = smallest_int_dtype(int(lo), int(hi))
                if target is not None and target.itemsize < (4 if dtype == pl.Float32 else 8):
                    return _polars_int(pl, target)
            if dtype == pl.Float64 and facts.get(f"{name}\0float32"):
                return pl.Float32
            return None
        target = smallest_int_dtype(int(lo), int(hi))
        if target is not None and _polars_int(pl, target) != dtype:
            return _polars_int(pl, target)
        return None
    if dtype == pl.String and options.strings:
        rows = max(facts[f"{name}\0rows"], 1)
        if facts[f"{name}\0distinct"] / rows <= _CATEGORY_SHARE:
            return pl.Categorical
    return None


def _polars_int(pl, dtype: np.dtype):
    return getattr(pl, dtype.name.capitalize().replace("Uint", "UInt"))
