"""Shrink a table to its smallest faithful dtypes, and give another table the same dtypes.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"count": [0, 3, 255], "price": [0.5, 1.25, None]})
    >>> result = shrink(df)
    >>> [str(t) for t in result.frame.dtypes]
    ['uint8', 'float32']
    >>> result.after_bytes < result.before_bytes
    True

What the popular `reduce_mem_usage` gets wrong, and what happens here instead:
float16 is never chosen unless asked for, and then only where it is exact (or within
`rtol`); bounds are inclusive and unsigned types are used; integral floats with
missing values become nullable integers; memory is measured deep; strings become a
category or a pyarrow string only if that is smaller; a fitted `ShrinkPlan` gives test
data the same dtypes and category codes as train data; the input is never changed;
and every column is compared with the input value by value before it is returned.

The row index is left as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from memfit.data._callable_module import make_module_callable
from memfit.data._files import temporary_beside
from memfit.data._shrink_check import compare
from memfit.data._shrink_columns import ColumnPlan, FitOptions, cast_column, fit_column
from memfit.data._shrink_memory import deep_bytes, object_strings
from memfit.errors import DataError, LossyConversionError, OutOfRangeError

_FORMAT = "memfit.shrink_plan"
_VERSION = 1


@dataclass(slots=True)
class ColumnReport:
    """What happened to one column."""

    name: Hashable
    old_dtype: str
    new_dtype: str
    before_bytes: int
    after_bytes: int
    max_error: float = 0.0
    """Largest relative error over the column (0.0 when every value is unchanged)."""
    changed: int = 0
    """How many values differ from the input (0 unless lossy shrinking was allowed)."""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": _json_name(self.name),
            "old_dtype": self.old_dtype,
            "new_dtype": self.new_dtype,
            "before_bytes": int(self.before_bytes),
            "after_bytes": int(self.after_bytes),
            "max_error": float(self.max_error),
            "changed": int(self.changed),
            **({"note": self.note} if self.note else {}),
        }


@dataclass(slots=True)
class ShrinkResult:
    """A shrunk frame with its measured sizes (deep, index included) and a report per column."""

    frame: Any
    before_bytes: int
    after_bytes: int
    columns: list[ColumnReport]
    plan: ShrinkPlan | None = None
    """The plan that produced `frame`: `result.plan.apply(test_df)` shrinks test data alike."""

    @property
    def saved_bytes(self) -> int:
        return self.before_bytes - self.after_bytes

    @property
    def ratio(self) -> float:
        """before / after, e.g. 4.0 for a table that now takes a quarter of the memory."""
        return self.before_bytes / self.after_bytes if self.after_bytes else float("inf")

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of `memfit shrink --json`."""
        return {
            "before_bytes": int(self.before_bytes),
            "after_bytes": int(self.after_bytes),
            "columns": [c.to_dict() for c in self.columns],
        }


@dataclass(slots=True)
class ShrinkPlan:
    """Dtypes fitted on one frame, to be given to others (train, then validation and test).

    Applying a plan gives identical dtypes and identical category codes. Values the
    planned dtype cannot hold raise `OutOfRangeError` (never a wraparound); values it
    would change raise `LossyConversionError`. Save with `save`/`to_json`, load with
    `load`/`from_json`.
    """

    columns: list[ColumnPlan]
    lossless: bool = True
    rtol: float = 0.0
    _by_name: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name = {c.name: c for c in self.columns}

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        """A new frame with the planned dtypes; columns the plan does not know are left as they are.

        >>> train = pd.DataFrame({"city": ["Oslo", "Rome", "Oslo", "Oslo"] * 250})
        >>> plan = fit_shrink(train)  # few distinct values over many rows: a category
        >>> plan.apply(pd.DataFrame({"city": ["Rome"]}))["city"].cat.codes.tolist()
        [1]
        """
        return self._apply(df, strict=True).frame

    def _apply(
        self,
        df,
        strict: bool,
        before: dict | None = None,
        use_precast: bool = False,
        strings: dict | None = None,
    ) -> ShrinkResult:
        _check_frame(df)
        before = before or {}
        strings = strings or {}
        out = df.copy(deep=False)
        reports = []
        for position, name in enumerate(df.columns):
            old = df.iloc[:, position]
            old_bytes = before.get(name)
            if old_bytes is None:
                old_bytes = int(old.memory_usage(deep=True, index=False))
            plan = self._by_name.get(name)
            if plan is None:
                reports.append(_kept(name, old, old_bytes, "not in the plan: left as it is"))
                continue
            new, plan._precast = (plan._precast if use_precast else None), None
            if new is None:
                try:
                    new = cast_column(old, plan)
                except (OutOfRangeError, LossyConversionError) as exc:
                    if strict:
                        raise
                    # Fitted on these very values, a refusal means the values read while
                    # fitting were not these (objects rounded to numbers): keep the column.
                    note = f"kept: {plan.new_dtype} refused ({type(exc).__name__})"
                    reports.append(_kept(name, old, old_bytes, note))
                    continue
            report = ColumnReport(name, str(old.dtype), str(new.dtype), old_bytes, old_bytes)
            if new is not old:
                check = compare(old, new, rtol=self.rtol, old_strings=strings.get(name))
                if check.changed and (self.lossless or check.max_error > self.rtol):
                    if strict:
                        raise LossyConversionError(
                            f"column {name!r}: {check.changed} values would change as "
                            f"{plan.new_dtype} (max relative error {check.max_error:.3g}); "
                            "fit the plan on data like this, or allow loss with lossless=False "
                            "and a larger rtol"
                        )
                    report.new_dtype = str(old.dtype)
                    report.note = f"kept: {plan.new_dtype} would change {check.changed} values"
                    reports.append(report)
                    continue
                new_bytes = int(new.memory_usage(deep=True, index=False))
                if new_bytes > old_bytes and not strict:
                    report.new_dtype = str(old.dtype)
                    report.note = f"kept: {plan.new_dtype} would take more memory"
                    reports.append(report)
                    continue
                out.isetitem(position, new)
                report.after_bytes = new_bytes
                report.max_error, report.changed = check.max_error, check.changed
            reports.append(report)
        index_bytes = int(df.index.memory_usage(deep=True))
        # Each column was measured deep once (kept ones before, replaced ones after the
        # cast): their sum is what out.memory_usage(deep=True) would measure again.
        before_total = sum(r.before_bytes for r in reports) + index_bytes
        after_total = sum(r.after_bytes for r in reports) + index_bytes
        return ShrinkResult(out, before_total, after_total, reports, self)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "lossless": self.lossless,
            "rtol": self.rtol,
            "columns": [_column_to_dict(c) for c in self.columns],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShrinkPlan:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DataError(
                "not a memfit shrink plan: expected a JSON object with "
                f'"format": "{_FORMAT}"; save one with ShrinkPlan.save'
            )
        if data.get("version") != _VERSION:
            raise DataError(
                f"shrink plan version {data.get('version')} is not supported; "
                f"fit the plan again with this memfit (version {_VERSION})"
            )
        try:
            columns = [ColumnPlan(**c) for c in data["columns"]]
        except (KeyError, TypeError) as exc:
            raise DataError(f"shrink plan has a malformed column ({exc}); fit it again") from exc
        return cls(
            columns, lossless=bool(data.get("lossless", True)), rtol=float(data.get("rtol", 0.0))
        )

    @classmethod
    def from_json(cls, text: str) -> ShrinkPlan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DataError(f"shrink plan is not valid JSON ({exc}); fit it again") from exc

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as JSON, atomically (a temporary file renamed into place)."""
        path = Path(path)
        text = self.to_json()
        fd, tmp = temporary_beside(path)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShrinkPlan:
        return cls.from_json(Path(path).read_text())


def _kept(name: Hashable, old: pd.Series, old_bytes: int, note: str) -> ColumnReport:
    """The report of a column left as it was."""
    return ColumnReport(name, str(old.dtype), str(old.dtype), old_bytes, old_bytes, note=note)


def fit_shrink(
    df: pd.DataFrame,
    *,
    lossless: bool = True,
    rtol: float = 0.0,
    float16: bool = False,
    float_to_int: bool = True,
    strings: bool = True,
) -> ShrinkPlan:
    """Decide each column's smallest faithful dtype on `df` (train data), to apply to others.

    >>> plan = fit_shrink(pd.DataFrame({"n": [1, 2, 300]}))
    >>> plan.apply(pd.DataFrame({"n": [7]}))["n"].dtype
    dtype('uint16')
    """
    plan = _fit(df, _options(lossless, rtol, float16, float_to_int, strings), lossless, {})
    for column in plan.columns:
        column._precast = None
    return plan


def shrink(
    df,
    lossless: bool = True,
    *,
    rtol: float = 0.0,
    float16: bool = False,
    float_to_int: bool = True,
    strings: bool = True,
) -> ShrinkResult:
    """A copy of `df` in the smallest dtypes that keep every value, checked value by value.

    lossless: keep every value exactly; with False, floats may round within `rtol`.
    rtol: relative tolerance for float32/float16 (only with lossless=False).
    float16: also try float16 (exact, or within rtol), never tried otherwise.
    float_to_int: whole-number float columns become (nullable) integers.
    strings: string columns become a category or compact strings when smaller.

    A pandas DataFrame is expected; a polars DataFrame is shrunk by polars' own casts
    (strings with few distinct values to an Enum) and checked the same way.
    """
    if type(df).__module__.startswith("polars"):
        from memfit.data._shrink_polars import shrink_polars

        return shrink_polars(df, _options(lossless, rtol, float16, float_to_int, strings), lossless)
    _check_frame(df)
    options = _options(lossless, rtol, float16, float_to_int, strings)
    # Object columns of str are turned into pyarrow strings once: that array measures
    # their deep size, is hashed for the category decision, and is the reference
    # (pyarrow's UTF-8 encoding of the original objects) for the value check.
    strings = {}
    for name in df.columns:
        array = object_strings(df[name])
        if array is not None:
            strings[name] = array
    before = {name: deep_bytes(df[name], strings.get(name)) for name in df.columns}
    plan = _fit(df, options, lossless, before, strings)
    return plan._apply(df, strict=False, before=before, use_precast=True, strings=strings)


def _options(lossless, rtol, float16, float_to_int, strings) -> FitOptions:
    if rtol < 0:
        raise DataError(f"rtol must be >= 0, got {rtol}")
    if lossless and rtol > 0:
        raise DataError(f"rtol={rtol} allows loss: pass lossless=False together with rtol")
    return FitOptions(
        rtol=float(rtol),
        float16=bool(float16),
        float_to_int=bool(float_to_int),
        strings=bool(strings),
    )


def _fit(
    df, options: FitOptions, lossless: bool, before: dict, strings: dict | None = None
) -> ShrinkPlan:
    _check_frame(df)
    strings = strings or {}
    columns = []
    for name in df.columns:
        series = df[name]
        size = before.get(name)
        if size is None:
            size = int(series.memory_usage(deep=True, index=False))
        columns.append(fit_column(series, options, size, strings.get(name)))
    return ShrinkPlan(columns, lossless=lossless, rtol=options.rtol)


def _check_frame(df) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"expected a pandas DataFrame, got {type(df).__name__}; wrap a Series with .to_frame()"
        )
    if not df.columns.is_unique:
        dupes = df.columns[df.columns.duplicated()].unique().tolist()
        raise DataError(f"column names must be unique to shrink, duplicated: {dupes}; rename them")


def _json_name(name: Hashable):
    return name if isinstance(name, (str, int)) and not isinstance(name, bool) else str(name)


def _column_to_dict(column: ColumnPlan) -> dict[str, Any]:
    if not isinstance(column.name, (str, int)) or isinstance(column.name, bool):
        raise DataError(
            f"column name {column.name!r} cannot be saved in JSON; "
            "rename columns to strings before fitting a plan to save"
        )
    categories = column.categories
    if categories is not None:
        categories = [_plain(v, column.name) for v in categories]
    return {
        "name": column.name,
        "old_dtype": column.old_dtype,
        "new_dtype": column.new_dtype,
        "kind": column.kind,
        "categories": categories,
        "ordered": column.ordered,
        "min": _plain(column.min, column.name),
        "max": _plain(column.max, column.name),
    }


def _plain(value, name):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item"):
        return value.item()
    raise DataError(
        f"column {name!r} holds {type(value).__name__} categories, which cannot be "
        "saved in JSON; keep the plan in memory or convert the categories to strings"
    )


make_module_callable(__name__, shrink)
