"""Whole-file column statistics for streaming conversion, and the types they lead to.

A CSV column is read as text, chunk by chunk. Each chunk is parsed with the
narrowest type that has held so far and widened when it fails (int -> float ->
string, bool -> string, timestamp -> string), so a column whose first decimal or
first missing value comes late in the file still gets one type that holds every
value. Statistics gathered on the way (range, whole numbers, float32 round trip,
distinct strings up to a cap) decide the shrunk type with the rules in
`_shrink_rules`, the same ones `shrink` uses for frames in memory.

pyarrow's streaming reader cannot do this itself: it fixes the types from the first
block and fails on a later one that does not match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from memfit.data._shrink_columns import default_string_dtype
from memfit.data._shrink_rules import code_dtype, smallest_int_dtype

# Past this many distinct values a string column stays a string: tracking them would
# cost memory that grows with the file, and a category would save little.
MAX_TRACKED_CATEGORIES = 1 << 15
_WIDER = {
    "null": ("int", "uint", "float", "bool", "timestamp", "string"),
    "int": ("int", "uint", "float", "string"),
    "uint": ("uint", "float", "string"),
    "float": ("float", "string"),
    "bool": ("bool", "string"),
    "timestamp": ("timestamp", "string"),
    "string": ("string",),
}
_ARROW = {
    "int": pa.int64(),
    "uint": pa.uint64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("ns"),
    "string": pa.large_string(),
}
_INTEGER_TEXT = r"^[-+]?[0-9]+$"


@dataclass(slots=True)
class ColumnStats:
    """What one column holds over the whole file."""

    name: str
    kind: str = "null"
    """null (nothing seen yet) | int | uint | float | bool | timestamp | string | other."""
    rows: int = 0
    nulls: int = 0
    text_bytes: int = 0
    """UTF-8 bytes of the present values as text (CSV input: pandas would hold these)."""
    lo: int | float | None = None
    hi: int | float | None = None
    integral: bool = True
    float32_exact: bool = True
    distinct: pa.Array | None = field(default=None, repr=False)
    distinct_overflow: bool = False
    source_type: pa.DataType | None = None
    """Parquet input: the column's own type (the CSV reader's type otherwise)."""

    # ------------------------------------------------------------------ text input

    def add_text(self, text: pa.Array) -> None:
        """Take one chunk of a CSV column read as strings (missing values already null)."""
        self.rows += len(text)
        self.nulls += text.null_count
        if text.null_count == len(text):
            return
        self.text_bytes += int(pc.sum(pc.binary_length(text)).as_py() or 0)
        for kind in _WIDER[self.kind]:
            typed = _parse(text, kind)
            if typed is not None:
                if kind != self.kind:
                    self._widen(kind)
                self._add_typed(typed if kind != "string" else text)
                return
        raise AssertionError("unreachable: every text parses as string")

    def _widen(self, kind: str) -> None:
        if self.kind in ("int", "uint") and kind == "float":
            # Whole numbers seen so far are exact in float32 only up to 2**24.
            self.float32_exact = self.lo is None or (self.lo >= -(2**24) and self.hi <= 2**24)
        if kind == "string" and self.kind != "null":
            self.distinct_overflow = True  # earlier chunks were not tracked as text
        self.kind = kind

    # ------------------------------------------------------------------ typed input

    def add_typed(self, array: pa.Array) -> None:
        """Take one chunk of a typed column (Parquet input)."""
        self.rows += len(array)
        self.nulls += array.null_count
        if self.source_type is None:
            self.source_type = array.type
            self.kind = _kind_of(array.type)
        if self.kind == "string" and pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if self.kind == "string":
            self.text_bytes += int(pc.sum(pc.binary_length(array)).as_py() or 0)
        if self.kind not in ("other", "null") and array.null_count < len(array):
            self._add_typed(array)

    def _add_typed(self, typed: pa.Array) -> None:
        kind = self.kind
        if kind in ("int", "uint", "float"):
            bounds = pc.min_max(typed)
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            if lo is not None:
                self.lo = lo if self.lo is None else min(self.lo, lo)
                self.hi = hi if self.hi is None else max(self.hi, hi)
        if kind == "float":
            present = typed.drop_null()
            if self.integral:
                finite = pc.all(pc.is_finite(present)).as_py()
                self.integral = bool(finite) and bool(
                    pc.all(pc.equal(pc.trunc(present), present)).as_py()
                )
            if self.float32_exact:
                back = pc.cast(pc.cast(present, pa.float32(), safe=False), pa.float64())
                same = pc.or_(pc.equal(back, present), pc.is_nan(present))
                self.float32_exact = bool(pc.all(same).as_py())
        if kind == "string" and not self.distinct_overflow:
            uniques = pc.unique(typed.drop_null())
            if self.distinct is not None:
                uniques = pc.unique(
                    pa.concat_arrays([self.distinct, uniques.cast(self.distinct.type)])
                )
            if len(uniques) > MAX_TRACKED_CATEGORIES:
                self.distinct, self.distinct_overflow = None, True
            else:
                self.distinct = uniques


def _parse(text: pa.Array, kind: str) -> pa.Array | None:
    if kind == "string":
        return text
    # A failing cast over a whole block is slow (about 0.2 s per 500k values): try a
    # few values first, and cast everything only when they parse.
    sample = text.slice(0, 256).drop_null()
    if len(sample) and _cast_or_none(sample, kind) is None:
        return None
    if kind == "uint" and not pc.all(pc.match_substring_regex(text, _INTEGER_TEXT)).as_py():
        return None
    typed = _cast_or_none(text, kind)
    if typed is not None and kind == "float":
        biggest = pc.max(pc.abs(typed)).as_py()
        if (
            biggest is not None
            and biggest >= 2.0**53
            and pc.all(pc.match_substring_regex(text, _INTEGER_TEXT)).as_py()
        ):
            return None  # whole numbers beyond int64/uint64: float64 would round them
    return typed


def _cast_or_none(text: pa.Array, kind: str) -> pa.Array | None:
    try:
        return pc.cast(text, _ARROW[kind])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _kind_of(arrow_type: pa.DataType) -> str:
    if pa.types.is_unsigned_integer(arrow_type):
        return "uint"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) and arrow_type.bit_width >= 32:
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_dictionary(arrow_type) and (
        pa.types.is_string(arrow_type.value_type) or pa.types.is_large_string(arrow_type.value_type)
    ):
        return "string"
    return "other"


# ----------------------------------------------------------------------------- decisions


@dataclass(slots=True)
class ColumnTarget:
    """The type a column is read with, the one it is written with, and their sizes."""

    name: str
    read_type: pa.DataType
    write_dtype: object
    """The pandas dtype the column has when the output is loaded with pandas."""
    old_dtype: str
    new_dtype: str
    before_bytes: int
    after_bytes: int
    categories: pa.Array | None = None


def decide(stats: ColumnStats, text_input: bool, shrink: bool = True) -> ColumnTarget:
    """The smallest faithful type for a column, from its whole-file statistics."""
    read_type = _ARROW.get(stats.kind, pa.large_string()) if text_input else stats.source_type
    if read_type is None or stats.kind == "null":
        read_type = pa.large_string()
    before_dtype, before = _loaded_by_pandas(stats, text_input)
    write_dtype = _shrunk_dtype(stats, text_input) if shrink else before_dtype
    if write_dtype is None:
        write_dtype = before_dtype
    categories = None
    if isinstance(write_dtype, pd.CategoricalDtype):
        categories = stats.distinct
    after = _pandas_bytes(write_dtype, stats, categories)
    if after > before and not isinstance(before_dtype, str):
        write_dtype, after, categories = before_dtype, before, None
    return ColumnTarget(
        stats.name,
        read_type,
        write_dtype,
        _label(before_dtype),
        _label(write_dtype),
        int(before),
        int(after),
        categories,
    )


def _label(dtype) -> str:
    return "category" if isinstance(dtype, pd.CategoricalDtype) else str(dtype)


def _loaded_by_pandas(stats: ColumnStats, text_input: bool):
    """(dtype, deep bytes) of the column as pandas.read_csv / read_parquet would hold it."""
    has_nulls = stats.nulls > 0
    if text_input:
        if stats.kind in ("int", "uint"):
            dtype = (
                np.dtype(np.float64)
                if has_nulls
                else np.dtype(np.int64 if stats.kind == "int" else np.uint64)
            )
        elif stats.kind == "float":
            dtype = np.dtype(np.float64)
        elif stats.kind == "bool":
            dtype = "object" if has_nulls else np.dtype(bool)
        else:  # pandas.read_csv leaves timestamps as text
            dtype = default_string_dtype()
    else:
        source = stats.source_type
        if stats.kind in ("int", "uint"):
            dtype = np.dtype(np.float64) if has_nulls else np.dtype(source.to_pandas_dtype())
        elif stats.kind == "float":
            dtype = np.dtype(source.to_pandas_dtype())
        elif stats.kind == "string":
            dtype = default_string_dtype()
        else:
            return "keep", _arrow_bytes_hint(stats)
    return dtype, _pandas_bytes(dtype, stats, None)


def _shrunk_dtype(stats: ColumnStats, text_input: bool):
    nullable = stats.nulls > 0
    kind = stats.kind
    whole = kind in ("int", "uint") or (kind == "float" and stats.integral)
    if whole and stats.lo is not None:
        target = smallest_int_dtype(stats.lo, stats.hi)
        if target is not None:
            return _nullable_int(target) if nullable else target
    if kind == "float":
        return np.dtype(np.float32) if stats.float32_exact else np.dtype(np.float64)
    if kind == "bool":
        return pd.BooleanDtype() if nullable else np.dtype(bool)
    if kind == "timestamp":
        return np.dtype("datetime64[ns]")
    if kind in ("string", "null"):
        string_dtype = default_string_dtype()
        if stats.distinct is None or stats.distinct_overflow or kind == "null":
            return string_dtype
        category = pd.CategoricalDtype(pd.Index(pd.array(stats.distinct, dtype=string_dtype)))
        as_category = _pandas_bytes(category, stats, stats.distinct)
        return category if as_category < _pandas_bytes(string_dtype, stats, None) else string_dtype
    return None


def _nullable_int(dtype: np.dtype):
    return pd.api.types.pandas_dtype(dtype.name.capitalize().replace("Uint", "UInt"))


def _pandas_bytes(dtype, stats: ColumnStats, categories: pa.Array | None) -> int:
    """Deep bytes pandas uses for the column in `dtype` (as `memory_usage(deep=True)` says)."""
    n, nulls = stats.rows, stats.nulls
    present = n - nulls
    if isinstance(dtype, pd.CategoricalDtype):
        texts = int(pc.sum(pc.binary_length(categories)).as_py() or 0) if categories else 0
        count = len(categories) if categories is not None else 0
        return n * code_dtype(count).itemsize + 8 * (count + 1) + texts
    if isinstance(dtype, pd.StringDtype) or dtype == "str":
        if getattr(dtype, "storage", "") == "python" or dtype == "object":
            return 8 * n + 49 * present + stats.text_bytes + 16 * nulls
        bitmap = (n + 7) // 8 if nulls else 0
        return 8 * (n + 1) + stats.text_bytes + bitmap
    if dtype == "object":  # bools with missing values: one Python object per row
        return 8 * n + 28 * present + 16 * nulls
    if isinstance(dtype, np.dtype):
        return n * dtype.itemsize
    numpy_dtype = np.dtype(dtype.numpy_dtype)  # pandas nullable: values plus a byte mask
    return n * (numpy_dtype.itemsize + 1)


def _arrow_bytes_hint(stats: ColumnStats) -> int:
    width = getattr(stats.source_type, "bit_width", 64) if stats.source_type else 64
    return stats.rows * max(width // 8, 1) + stats.text_bytes


def pandas_metadata_schema(targets: list[ColumnTarget]) -> pa.Schema:
    """The Parquet schema, with pandas metadata so pandas loads the shrunk dtypes back."""
    empty = {}
    for t in targets:
        if isinstance(t.write_dtype, pd.CategoricalDtype):
            empty[t.name] = pd.Series(pd.Categorical([], dtype=t.write_dtype))
        elif t.write_dtype == "keep":
            empty[t.name] = pd.Series([], dtype=object)
        else:
            empty[t.name] = pd.Series([], dtype=t.write_dtype)
    frame = pd.DataFrame(empty)
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    fields = []
    for t, f in zip(targets, schema, strict=True):
        if t.write_dtype == "keep":
            f = f.with_type(t.read_type)
        elif pa.types.is_string(f.type):
            f = f.with_type(pa.large_string())
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)
