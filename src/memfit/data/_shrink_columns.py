"""Per-column work of shrinking: decide a column's smaller dtype, and cast to a decided one.

`fit_column` looks at one column and returns a `ColumnPlan`; `cast_column` turns a
column (the same one, or the same column of another frame) into the planned dtype,
refusing values the planned dtype cannot hold instead of wrapping them around.
Everything is vectorised: numpy for numbers, pyarrow compute for strings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api import types as ptypes

from memfit.data._shrink_cardinality import (
    FEW_DISTINCT,
    MARGIN,
    estimate_distinct,
    sample_positions,
)
from memfit.data._shrink_check import is_numeric, numeric_values
from memfit.data._shrink_memory import hash_table_bytes
from memfit.data._shrink_rules import (
    FLOAT16_MAX,
    PEEK_ROWS,
    canonical_nans,
    code_dtype,
    fits_int_dtype,
    float_round_trip_error,
    float_round_trips,
    integral_range,
    smallest_int_dtype,
    whole_ints,
)
from memfit.errors import DataError, LossyConversionError, OutOfRangeError

KINDS = ("keep", "numpy", "masked", "arrow", "category", "string")


@dataclass(slots=True)
class ColumnPlan:
    """The dtype one column gets, and what is needed to give it again to another frame."""

    name: Any
    old_dtype: str
    new_dtype: str
    kind: str
    """keep | numpy | masked (pandas nullable) | arrow (pd.ArrowDtype) | category | string."""
    categories: list | None = None
    ordered: bool = False
    min: Any = None
    """Smallest value seen when fitting (numbers only; for information)."""
    max: Any = None
    _categories_cache: Any = field(default=None, repr=False, compare=False)
    _precast: Any = field(default=None, repr=False, compare=False)
    """The column already cast while fitting (shrink uses it once, then drops it)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(
                f"unknown column plan kind {self.kind!r}; use one of {', '.join(KINDS)}"
            )

    def target_dtype(self):
        """The pandas dtype this plan casts to (None for keep)."""
        if self.kind == "keep":
            return None
        if self.kind == "numpy":
            return np.dtype(self.new_dtype)
        if self.kind == "masked":
            return ptypes.pandas_dtype(self.new_dtype)
        if self.kind == "arrow":
            return pd.ArrowDtype(pa.type_for_alias(self.new_dtype.removesuffix("[pyarrow]")))
        if self.kind == "string":
            return default_string_dtype()
        return pd.CategoricalDtype(self.categories_index(), ordered=self.ordered)

    def categories_index(self) -> pd.Index:
        if self._categories_cache is None:
            values = self.categories or []
            strings = values and all(isinstance(v, str) for v in values)
            dtype = default_string_dtype() if strings else None
            self._categories_cache = pd.Index(values, dtype=dtype)
        return self._categories_cache


def default_string_dtype():
    """The compact string dtype of the running pandas: `str` on pandas 3, string[pyarrow] before."""
    if int(pd.__version__.split(".")[0]) >= 3:
        return pd.StringDtype(na_value=np.nan)
    return pd.StringDtype("pyarrow")


@dataclass(frozen=True, slots=True)
class FitOptions:
    rtol: float = 0.0
    float16: bool = False
    float_to_int: bool = True
    strings: bool = True


# ----------------------------------------------------------------------------- fitting


def fit_column(
    series: pd.Series, options: FitOptions, before_bytes: int, strings: pa.Array | None = None
) -> ColumnPlan:
    """Decide the smallest faithful dtype for one column.

    `strings`: the column as pyarrow strings when the caller already converted it.
    """
    dtype = series.dtype
    base = {"name": series.name, "old_dtype": str(dtype)}
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        return ColumnPlan(
            **base,
            new_dtype="category",
            kind="category",
            categories=cats.tolist(),
            ordered=bool(dtype.ordered),
            _categories_cache=cats,
        )
    if _is_string_like(dtype):
        return _fit_strings(series, options, before_bytes, base) if options.strings else _keep(base)
    if ptypes.is_object_dtype(dtype):
        if strings is not None:
            return (
                _fit_strings(series, options, before_bytes, base, strings)
                if options.strings
                else _keep(base)
            )
        return _fit_object(series, options, before_bytes, base)
    if not is_numeric(dtype) or ptypes.is_bool_dtype(dtype):
        return _keep(base)  # datetimes, timedeltas, periods, intervals, sparse, complex, bools
    family = _family(dtype)
    if ptypes.is_integer_dtype(dtype):
        return _fit_integers(series, family, base)
    return _fit_floats(series, family, options, base)


def _keep(base: dict) -> ColumnPlan:
    return ColumnPlan(**base, new_dtype=base["old_dtype"], kind="keep")


def _family(dtype) -> str:
    if isinstance(dtype, np.dtype):
        return "numpy"
    if isinstance(dtype, pd.ArrowDtype):
        return "arrow"
    return "masked"


def _is_string_like(dtype) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return True
    return isinstance(dtype, pd.ArrowDtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    )


def _int_name(dtype: np.dtype, family: str, nullable: bool) -> tuple[str, str]:
    """(kind, dtype name) for an integer target in the source's family of dtypes."""
    if family == "arrow":
        return "arrow", f"{dtype.name}[pyarrow]"
    if family == "masked" or nullable:
        return "masked", dtype.name.capitalize().replace("Uint", "UInt")
    return "numpy", dtype.name


def _float_name(dtype: np.dtype, family: str) -> tuple[str, str]:
    if family == "arrow":
        return "arrow", f"{'halffloat' if dtype.itemsize == 2 else 'float'}[pyarrow]"
    if family == "masked":
        return "masked", dtype.name.capitalize()
    return "numpy", dtype.name


def _fit_integers(series: pd.Series, family: str, base: dict) -> ColumnPlan:
    if family == "numpy":  # nothing can be missing: no mask, no copy of the present values
        values, missing = series.to_numpy(), None
        present = values
    else:
        values, missing = numeric_values(series)
        present = values[~missing]
    if present.size == 0:
        return _keep(base)
    lo, hi = int(present.min()), int(present.max())
    target = smallest_int_dtype(lo, hi)
    current = np.dtype(values.dtype)
    keep = ColumnPlan(**base, new_dtype=base["old_dtype"], kind="keep", min=lo, max=hi)
    plans = [(measured_bytes(series.dtype, len(series)), keep)]
    if target is not None and target.itemsize < current.itemsize:
        kind, name = _int_name(target, family, nullable=False)
        plan = ColumnPlan(**base, new_dtype=name, kind=kind, min=lo, max=hi)
        plans.append((measured_bytes(plan.target_dtype(), len(series)), plan))
    if lo == hi:
        plans.append(_constant_category(series, present[0], base))
    best = _smallest(plans)
    if best.kind == "numpy" and family == "numpy":
        # lo and hi were read from these very values, so the cast cannot wrap around;
        # the value-by-value check still runs on the result.
        best._precast = _rebuild(series, values.astype(target))
    return best


def _smallest(plans: list[tuple[int, ColumnPlan]]) -> ColumnPlan:
    """The plan with the fewest bytes; on a tie the earliest (the one listed as plainer)."""
    return min(enumerate(plans), key=lambda item: (item[1][0], item[0]))[1][1]


@functools.lru_cache(maxsize=256)
def _bytes_per_row(dtype) -> float:
    """Bytes a row of `dtype` takes in pandas, measured on a column of 4096 zeros."""
    sample = pd.Series(np.zeros(4096, dtype=np.uint8)).astype(dtype)
    return sample.memory_usage(deep=True, index=False) / len(sample)


def measured_bytes(dtype, rows: int) -> int:
    """Deep bytes of `rows` values of a fixed-width `dtype`, as pandas measures them."""
    return int(round(_bytes_per_row(dtype) * rows))


def _constant_category(series: pd.Series, value, base: dict) -> tuple[int, ColumnPlan]:
    """A column holding one value is a category of that value: one byte of code a row."""
    categories = pd.Index([value.item() if hasattr(value, "item") else value])
    size = len(series) * code_dtype(1).itemsize + int(categories.memory_usage(deep=True))
    size += hash_table_bytes(1)
    plan = ColumnPlan(
        **base,
        new_dtype="category",
        kind="category",
        categories=categories.tolist(),
        _categories_cache=categories,
    )
    return size, plan


def _constant(values: np.ndarray, missing: np.ndarray, has_missing: bool):
    """The one value of a float column holding a single value (bit for bit), else None."""
    head = values[:PEEK_ROWS][~missing[:PEEK_ROWS]] if has_missing else values[:PEEK_ROWS]
    unsigned = head.view(f"u{head.dtype.itemsize}")
    if unsigned.size and not bool((unsigned == unsigned[0]).all()):
        return None  # two values among the first rows: no need to look at the rest
    present = values[~missing] if has_missing else values
    if present.size == 0:
        return None
    unsigned = present.view(f"u{present.dtype.itemsize}")
    return present[0] if bool((unsigned == unsigned[0]).all()) else None


def _fit_floats(series: pd.Series, family: str, options: FitOptions, base: dict) -> ColumnPlan:
    if family == "numpy":  # NaN is the only missing value: no separate mask to build
        values = series.to_numpy()
        missing = np.isnan(values)
    else:
        values, missing = numeric_values(series)
    itemsize = values.dtype.itemsize
    values = values.astype(np.float64, copy=False) if itemsize < 4 else values
    has_missing = bool(missing.any())
    rows = len(series)
    plans = [(measured_bytes(series.dtype, rows), _keep(base))]
    casts = {}  # id(plan) -> the values in that plan's dtype, made while testing it
    # A missing value of a nullable int comes back as numpy's NaN: other NaNs would change.
    canonical = family != "numpy" or not has_missing or canonical_nans(values, missing)
    if options.float_to_int and canonical and not missing.all():
        # Missing rows read as 0, which passes the test and changes no integer type
        # (unsigned types start at 0, signed ones hold it); min and max skip them.
        filled = np.where(missing, values.dtype.type(0), values) if has_missing else values
        ints = whole_ints(filled)
        if ints is not None:
            present = ~missing if has_missing else True
            lo = int(ints.min(where=present, initial=np.iinfo(np.int64).max))
            hi = int(ints.max(where=present, initial=np.iinfo(np.int64).min))
            target = smallest_int_dtype(lo, hi)
            if target is not None:
                kind, name = _int_name(target, family, nullable=has_missing)
                plan = ColumnPlan(**base, new_dtype=name, kind=kind, min=lo, max=hi)
                plans.append((measured_bytes(plan.target_dtype(), rows), plan))
                casts[id(plan)] = (ints, target)
    # pandas has no nullable Float16: masked columns stop at Float32.
    half = options.float16 and family != "masked"
    candidates = [np.dtype(np.float16)] if half else []
    candidates.append(np.dtype(np.float32))
    for target in candidates:
        if target.itemsize >= itemsize:
            continue
        if target == np.float16:
            finite = np.abs(values[np.isfinite(values)])
            if finite.size and finite.max() > FLOAT16_MAX:
                continue
        if options.rtol == 0 and not float_round_trips(values[:PEEK_ROWS], target):
            continue  # one value among the first rows changes: the full pass would say so
        exact = float_round_trips(values, target)
        if exact or (options.rtol > 0 and float_round_trip_error(values, target) <= options.rtol):
            kind, name = _float_name(target, family)
            plan = ColumnPlan(**base, new_dtype=name, kind=kind)
            plans.append((measured_bytes(plan.target_dtype(), rows), plan))
            casts[id(plan)] = (values, target)
    constant = _constant(values, missing, has_missing)
    if constant is not None and canonical:
        plans.append(_constant_category(series, constant, base))
    best = _smallest(plans)
    if id(best) in casts:
        # The column in its new dtype now, from the values already read: the check that
        # follows compares it with the input value by value.
        source, target = casts[id(best)]
        with np.errstate(over="ignore", invalid="ignore"):
            converted = source.astype(target)
        best._precast = _rebuild(series, _wrap(converted, missing, best.kind, best.target_dtype()))
    return best


def _fit_object(series: pd.Series, options: FitOptions, before_bytes: int, base: dict):
    inferred = ptypes.infer_dtype(series, skipna=True)
    if inferred == "string":
        return _fit_strings(series, options, before_bytes, base) if options.strings else _keep(base)
    if inferred == "boolean":
        kind, name = ("masked", "boolean") if series.isna().any() else ("numpy", "bool")
        return ColumnPlan(**base, new_dtype=name, kind=kind)
    if inferred in ("integer", "floating", "mixed-integer-float"):
        # Python ints beyond 64 bits would round as Float64: such a column stays objects.
        kinds = ("Int64", "UInt64") if inferred == "integer" else ("Int64", "UInt64", "Float64")
        numbers = _object_to_numbers(series, kinds)
        if numbers is None:
            return _keep(base)
        plan = fit_column(numbers, options, before_bytes)
        if plan.kind == "keep":  # still narrower than Python objects: take the native dtype
            plan.kind = "masked" if not isinstance(numbers.dtype, np.dtype) else "numpy"
            plan.new_dtype = str(numbers.dtype)
        plan.old_dtype = base["old_dtype"]
        return plan
    return _keep(base)


def _object_to_numbers(
    series: pd.Series, kinds: tuple[str, ...] = ("Int64", "UInt64", "Float64")
) -> pd.Series | None:
    for dtype in kinds:
        try:
            array = pd.array(series.to_numpy(dtype=object), dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            continue
        if not array.isna().any():  # nothing missing: plain numpy, no mask byte per row
            array = array.to_numpy(dtype=array.dtype.numpy_dtype)
        return pd.Series(array, index=series.index, name=series.name, copy=False)
    return None


def _fit_strings(
    series: pd.Series,
    options: FitOptions,
    before_bytes: int,
    base: dict,
    strings: pa.Array | None = None,
):
    strings = to_arrow_strings(series) if strings is None else strings
    if strings is None:
        return _keep(base)
    string_dtype = default_string_dtype()
    if series.dtype == string_dtype:
        string_bytes = before_bytes
    else:
        string_bytes = int(
            pd.Series(pd.array(strings, dtype=string_dtype)).memory_usage(deep=True, index=False)
        )
    keep_or_string = min(before_bytes, string_bytes)
    if not _category_may_be_smaller(strings, keep_or_string):
        return (
            _keep(base)
            if keep_or_string == before_bytes
            else ColumnPlan(**base, new_dtype=str(string_dtype), kind="string")
        )
    # One hash pass gives both the categories and the codes. Categories keep the order
    # of first appearance: sorting half a million strings would cost more than the rest.
    encoded = pc.dictionary_encode(strings)
    if len(encoded.dictionary) == 0:
        return _keep(base)
    categories = pd.Index(pd.array(encoded.dictionary, dtype=string_dtype))
    code_type = code_dtype(len(categories))
    # A categorical's categories get a hash table on first lookup (pandas builds it for
    # every ==, isin or merge): count it, or a high-cardinality column looks smaller as
    # a category than it will be in use.
    category_bytes = (
        len(series) * code_type.itemsize
        + categories.memory_usage(deep=True)
        + hash_table_bytes(len(categories))
    )
    best = min(before_bytes, category_bytes, string_bytes)
    if best == before_bytes:
        return _keep(base)
    if best == string_bytes:
        return ColumnPlan(**base, new_dtype=str(string_dtype), kind="string")
    # Build the table now, so the size reported for the result is the size in use.
    categories.get_loc(categories[0])
    plan = ColumnPlan(
        **base,
        new_dtype="category",
        kind="category",
        categories=categories.tolist(),
        _categories_cache=categories,
    )
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(code_type)
    plan._precast = _rebuild(series, pd.Categorical.from_codes(codes, dtype=plan.target_dtype()))
    return plan


def _category_may_be_smaller(strings: pa.Array, other_bytes: int) -> bool:
    """False when a random sample already shows the category would be bigger.

    The sample's distinct values estimate the column's (see `_shrink_cardinality`); their
    count, mean text, the hash table pandas builds and the code width they force give
    the category's size. Only a column whose estimate is not clearly above `other_bytes`
    is hashed whole (which then measures the category exactly).
    """
    n = len(strings)
    positions = sample_positions(n)
    if positions is None:
        return True
    sample = strings.take(pa.array(positions)).drop_null()
    if len(sample) == 0:
        return True
    distinct_sample = pc.unique(sample)
    seen = len(distinct_sample)
    if seen <= FEW_DISTINCT * len(sample):
        return True
    present_rows = n - strings.null_count
    count = estimate_distinct(seen, len(sample), present_rows)
    text_bytes = count * float(pc.mean(pc.binary_length(distinct_sample)).as_py() or 0.0)
    # pandas' str categories: 8-byte offsets plus the text; codes as wide as the count needs.
    # Past a million categories pandas may search sorted ones instead of hashing them.
    table_bytes = hash_table_bytes(int(count)) if count < 1_000_000 else 0
    estimate = n * code_dtype(int(count)).itemsize + 8 * (count + 1) + text_bytes + table_bytes
    return estimate <= MARGIN * other_bytes


def to_arrow_strings(series: pd.Series) -> pa.Array | None:
    """The column as one pyarrow string array, or None if some value is not a valid str."""
    try:
        if isinstance(series.dtype, (pd.StringDtype, pd.ArrowDtype)):
            array = pa.array(series.array)
        else:
            array = pa.array(
                series.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True
            )
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array


# ----------------------------------------------------------------------------- casting


def cast_column(series: pd.Series, plan: ColumnPlan) -> pd.Series:
    """Give `series` the dtype `plan` decided; raise instead of losing or wrapping values."""
    if plan.kind == "keep":
        if str(series.dtype) == plan.new_dtype:
            return series
        return _rebuild(series, series.astype(_parse_dtype(plan)))
    if plan.kind == "category":
        return _cast_category(series, plan)
    if plan.kind == "string":
        return series.astype(default_string_dtype())
    target = plan.target_dtype()
    if ptypes.is_bool_dtype(target):
        return series.astype(target)
    source = series
    if not is_numeric(series.dtype):
        source = _object_to_numbers(series)
        if source is None:
            raise DataError(
                f"column {plan.name!r} is not numeric ({series.dtype}) but the plan has "
                f"{plan.new_dtype}; fit the plan on a frame like this one"
            )
    values, missing = numeric_values(source)
    numpy_target = np.dtype(target.numpy_dtype) if not isinstance(target, np.dtype) else target
    if missing.any() and plan.kind == "numpy" and numpy_target.kind in "iu":
        raise OutOfRangeError(
            f"column {plan.name!r} has missing values, which {plan.new_dtype} cannot hold; "
            "fit the plan on data that has missing values in this column too"
        )
    present = values[~missing]
    if numpy_target.kind in "iu" and present.size:
        _check_integer_range(plan, present, numpy_target)
    with np.errstate(over="ignore", invalid="ignore"):
        # Integers have no NaN: fill missing slots (the mask keeps them missing); floats keep NaN.
        fill = missing.any() and numpy_target.kind in "iu"
        filled = np.where(missing, 0, values) if fill else values
        converted = filled.astype(numpy_target)
    return _rebuild(series, _wrap(converted, missing, plan.kind, target))


def _check_integer_range(plan: ColumnPlan, present: np.ndarray, target: np.dtype) -> None:
    if present.dtype.kind == "f":
        bounds = integral_range(present)
        if bounds is None:
            raise LossyConversionError(
                f"column {plan.name!r} has non-integer values but the plan has {plan.new_dtype}; "
                "fit the plan on data that includes such values"
            )
        lo, hi = bounds
    else:
        lo, hi = int(present.min()), int(present.max())
    if not fits_int_dtype(lo, hi, target):
        raise OutOfRangeError(
            f"column {plan.name!r} has values from {lo} to {hi}, outside {plan.new_dtype} "
            f"(fitted on {plan.min}..{plan.max}); refit the plan on data covering this range"
        )


def _wrap(values: np.ndarray, missing: np.ndarray, kind: str, target):
    if kind == "numpy":
        return values
    if kind == "masked":
        if values.dtype.kind == "f":
            return pd.arrays.FloatingArray(values, missing.copy())
        return pd.arrays.IntegerArray(values, missing.copy())
    arrow = pa.array(values, type=target.pyarrow_dtype, mask=missing if missing.any() else None)
    return pd.arrays.ArrowExtensionArray(arrow)


def _rebuild(series: pd.Series, values) -> pd.Series:
    if isinstance(values, pd.Series):
        return values
    return pd.Series(values, index=series.index, name=series.name, copy=False)


def _cast_category(series: pd.Series, plan: ColumnPlan) -> pd.Series:
    dtype = plan.target_dtype()
    if isinstance(series.dtype, pd.CategoricalDtype):
        if series.dtype == dtype and series.dtype.categories.equals(dtype.categories):
            return series
        result = series.astype(dtype)
        _refuse_unseen(series, result, plan)
        return result
    strings = to_arrow_strings(series) if all(isinstance(c, str) for c in plan.categories) else None
    if strings is None:
        result = series.astype(dtype)
        _refuse_unseen(series, result, plan)
        return result
    categories = pa.array(plan.categories, type=strings.type)
    codes = pc.index_in(strings, value_set=categories)
    unseen = pc.and_(codes.is_null(), strings.is_valid())
    if pc.any(unseen).as_py():
        examples = strings.filter(unseen).unique().slice(0, 3).to_pylist()
        raise OutOfRangeError(
            f"column {plan.name!r} has values not among the {len(categories)} fitted categories "
            f"(for example {examples}); fit the plan on data that includes them"
        )
    code_type = code_dtype(len(categories))
    codes_np = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(code_type)
    categorical = pd.Categorical.from_codes(codes_np, dtype=dtype)
    return _rebuild(series, categorical)


def _refuse_unseen(old: pd.Series, new: pd.Series, plan: ColumnPlan) -> None:
    unseen = new.isna().to_numpy(dtype=bool) & ~old.isna().to_numpy(dtype=bool)
    if unseen.any():
        examples = pd.unique(old[unseen])[:3].tolist()
        raise OutOfRangeError(
            f"column {plan.name!r} has values not among the fitted categories "
            f"(for example {examples}); fit the plan on data that includes them"
        )


def _parse_dtype(plan: ColumnPlan):
    try:
        return ptypes.pandas_dtype(plan.new_dtype)
    except TypeError as exc:
        raise DataError(
            f"column {plan.name!r}: cannot rebuild dtype {plan.new_dtype!r} with pandas "
            f"{pd.__version__}; fit the plan again with this pandas"
        ) from exc
