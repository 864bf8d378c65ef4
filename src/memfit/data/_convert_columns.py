"""Whole-file column statistics for streaming conversion, and the types they lead to.

Every chunk of a file is parsed with the narrowest kind that has held so far; a
chunk that does not fit widens the column (int -> float -> string, date ->
timestamp -> string, anything -> string), so a column whose first decimal or first
text comes in the last row still gets one type that holds every value. Each chunk's
statistics (range, whole numbers, float32 round trip, signed zeros, distinct strings
up to a cap) are merged in file order, and `decide` turns them into the smallest
faithful type with the rules in `_shrink_rules`, the ones `shrink` uses in memory.

pyarrow's streaming reader cannot do this itself: it fixes the types from the first
block and fails on a later one that does not match.
"""

from __future__ import annotations

import datetime
import sys
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
KINDS = ("null", "int", "uint", "float", "bool", "date", "time", "timestamp", "string")
# The kinds a column of each kind may widen to, narrowest first.
_WIDER = {
    "null": ("int", "uint", "float", "bool", "date", "time", "timestamp", "string"),
    "int": ("int", "uint", "float", "string"),
    "uint": ("uint", "string"),
    "float": ("float", "string"),
    "bool": ("bool", "string"),
    "date": ("date", "timestamp", "string"),
    "time": ("time", "string"),
    "timestamp": ("timestamp", "string"),
    "string": ("string",),
}
READ_TYPES = {
    "null": pa.null(),
    "int": pa.int64(),
    "uint": pa.uint64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("ns"),
    "string": pa.large_string(),
}
_INTEGER_TEXT = r"^[-+]?[0-9]+$"
_TIME_TEXT = r"^[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?$"
_EXACT_IN_FLOAT64 = 2**53
_EXACT_IN_FLOAT32 = 2**24


def join_kinds(a: str, b: str, stats_a: ColumnStats, stats_b: ColumnStats) -> str:
    """The narrowest kind that holds the values of two chunks of one column."""
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    pair = {a, b}
    if pair == {"int", "uint"}:
        ints = stats_a if a == "int" else stats_b
        return "uint" if ints.lo is None or ints.lo >= 0 else "string"
    if pair == {"int", "float"}:
        ints = stats_a if a == "int" else stats_b
        big = ints.lo is not None and max(abs(ints.lo), abs(ints.hi)) > _EXACT_IN_FLOAT64
        return "string" if big else "float"
    if pair == {"date", "timestamp"}:
        return "timestamp"
    return "string"


@dataclass(slots=True)
class ColumnStats:
    """What one column holds over the chunks seen so far."""

    name: str
    kind: str = "null"
    """null (nothing seen yet) | int | uint | float | bool | date | time | timestamp | string |
    other (a Parquet type left as it is)."""
    rows: int = 0
    nulls: int = 0
    text_bytes: int = 0
    """UTF-8 bytes of the present values as text (string columns; what pandas would hold)."""
    lo: int | float | None = None
    hi: int | float | None = None
    integral: bool = True
    float32_exact: bool = True
    negative_zero: bool = False
    """A float -0.0 was seen: an integer type would lose its sign."""
    distinct: pa.Array | None = field(default=None, repr=False)
    distinct_overflow: bool = False
    source_type: pa.DataType | None = None
    """Parquet input: the column's own type."""

    # ------------------------------------------------------------------ settled facts

    def settled(self) -> tuple[bool, bool, bool]:
        """What no later chunk can change: (not integral, not float32-exact, too many
        distinct strings). Chunk statistics skip measuring those (`skip`)."""
        return (not self.integral, not self.float32_exact, self.distinct_overflow)

    def skip(self, settled: tuple[bool, bool, bool]) -> None:
        not_integral, not_float32, overflow = settled
        self.integral &= not not_integral
        self.float32_exact &= not not_float32
        self.distinct_overflow |= overflow

    # ------------------------------------------------------------------ text

    def kind_of_text(self, text: pa.Array) -> tuple[str, pa.Array]:
        """The narrowest kind (from this column's kind up) that parses every value of `text`,
        with the values in that kind."""
        present = text.drop_null() if text.null_count else text
        if len(present) == 0:
            return self.kind if self.kind != "other" else "string", text
        for kind in _WIDER[self.kind]:
            typed = parse_text(text, kind)
            if typed is not None:
                return kind, typed
        raise AssertionError("unreachable: every text parses as string")

    def add_text(self, text: pa.Array) -> None:
        """Take one chunk of a column read as strings (missing values already null)."""
        kind, typed = self.kind_of_text(text)
        chunk = ColumnStats(self.name, kind)
        chunk.add_typed(typed, kind)
        self.merge(chunk)

    # ------------------------------------------------------------------ typed

    def add_typed(self, array: pa.Array, kind: str | None = None) -> None:
        """Take one chunk of a typed column (a parsed CSV chunk, or Parquet input)."""
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if self.source_type is None and kind is None:
            self.source_type = array.type
        kind = kind or kind_of_type(array.type)
        if self.rows and self.kind != kind:
            other = ColumnStats(self.name, kind)
            other.add_typed(array, kind)
            self.merge(other)
            return
        self.kind = kind
        self.rows += len(array)
        self.nulls += array.null_count
        if kind in ("other", "null") or array.null_count == len(array):
            return
        if kind == "string":
            self._add_strings(array)
            return
        if kind in ("int", "uint", "float", "date", "time", "timestamp"):
            bounds = pc.min_max(array)
            self._bounds(bounds["min"].as_py(), bounds["max"].as_py())
        if kind == "float":
            present = array.drop_null() if array.null_count else array
            if self.integral:
                whole = pc.and_(pc.is_finite(present), pc.equal(pc.trunc(present), present))
                self.integral = bool(pc.all(whole).as_py())
            if not self.negative_zero and self.integral:  # -0.0 matters for integers only
                zeros = present.filter(pc.equal(present, 0.0))
                if len(zeros):
                    signs = np.signbit(zeros.to_numpy(zero_copy_only=False))
                    self.negative_zero = bool(signs.any())
            if self.float32_exact:
                back = pc.cast(pc.cast(present, pa.float32(), safe=False), pa.float64())
                same = pc.or_(pc.equal(back, present), pc.is_nan(present))
                self.float32_exact = bool(pc.all(same).as_py())

    def _bounds(self, lo, hi) -> None:
        if lo is None:
            return
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def _add_strings(self, array: pa.Array) -> None:
        if pa.types.is_dictionary(array.type):
            lengths = pc.binary_length(array.dictionary)
            self.text_bytes += int(pc.sum(lengths.take(array.indices)).as_py() or 0)
            uniques = array.dictionary
            if array.null_count or len(uniques) > len(array):
                uniques = pc.unique(array.indices.drop_null()).cast(pa.int64())
                uniques = array.dictionary.take(uniques)
        else:
            self.text_bytes += int(pc.sum(pc.binary_length(array)).as_py() or 0)
            if self.distinct_overflow:
                return
            uniques = pc.unique(array.drop_null() if array.null_count else array)
        self._add_distinct(uniques)

    def _add_distinct(self, uniques: pa.Array | None) -> None:
        if self.distinct_overflow or uniques is None:
            return
        uniques = uniques.cast(pa.large_string())
        if self.distinct is not None:
            uniques = pc.unique(pa.concat_arrays([self.distinct, uniques]))
        if len(uniques) > MAX_TRACKED_CATEGORIES:
            self.distinct, self.distinct_overflow = None, True
        else:
            self.distinct = uniques

    # ------------------------------------------------------------------ merging

    def merge(self, other: ColumnStats) -> None:
        """Add the statistics of a later chunk of the same column."""
        kind = join_kinds(self.kind, other.kind, self, other)
        if kind != self.kind and self.kind != "null":
            self._widen(kind, other)
        if kind != other.kind and other.kind != "null":
            other._widen(kind, self)
        self.kind = kind
        self.rows += other.rows
        self.nulls += other.nulls
        self.text_bytes += other.text_bytes
        self.source_type = self.source_type or other.source_type
        if kind == "string":
            if other.distinct_overflow:
                self.distinct, self.distinct_overflow = None, True
            else:
                self._add_distinct(other.distinct)
            return
        self._bounds(other.lo, other.hi)
        self.integral &= other.integral
        self.float32_exact &= other.float32_exact
        self.negative_zero |= other.negative_zero

    def _widen(self, kind: str, other: ColumnStats) -> None:
        """Re-express this side's statistics in a wider kind."""
        if kind == "float" and self.kind in ("int", "uint"):
            small = self.lo is None or (
                self.lo >= -_EXACT_IN_FLOAT32 and self.hi <= _EXACT_IN_FLOAT32
            )
            self.float32_exact = small
        if kind == "timestamp" and self.kind == "date" and self.lo is not None:
            self.lo = datetime.datetime.combine(self.lo, datetime.time())
            self.hi = datetime.datetime.combine(self.hi, datetime.time())
        if kind == "string":
            # Earlier chunks were not tracked as text: the caller re-reads them as text.
            self.lo = self.hi = None
            self.distinct, self.distinct_overflow = None, True
        self.kind = kind


def kind_of_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_unsigned_integer(arrow_type):
        return "uint"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) and arrow_type.bit_width >= 32:
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_date32(arrow_type):
        return "date"
    if pa.types.is_time64(arrow_type) and arrow_type.unit == "us":
        return "time"
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "ns" and arrow_type.tz is None:
        return "timestamp"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_dictionary(arrow_type) and (
        pa.types.is_string(arrow_type.value_type) or pa.types.is_large_string(arrow_type.value_type)
    ):
        return "string"
    return "other"


def parse_text(text: pa.Array, kind: str) -> pa.Array | None:
    """`text` in `kind`, or None when some value does not parse as it."""
    if kind == "string":
        return text.cast(pa.large_string())
    if kind == "null":
        return text if text.null_count == len(text) else None
    # A failing cast over a whole chunk is slow (about 0.2 s per 500k values): try a
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
            and pc.any(pc.match_substring_regex(text, _INTEGER_TEXT)).as_py()
        ):
            return None  # whole numbers beyond int64/uint64: float64 would round them
    return typed


def _cast_or_none(text: pa.Array, kind: str) -> pa.Array | None:
    try:
        if kind == "time":  # pyarrow casts no string to a time: parse it as a time of 1970-01-01
            if not pc.all(pc.match_substring_regex(text, _TIME_TEXT)).as_py():
                return None
            day, none = pa.scalar("1970-01-01 ", text.type), pa.scalar("", text.type)
            stamped = pc.binary_join_element_wise(day, text, none)
            return pc.cast(stamped, pa.timestamp("us")).cast(READ_TYPES["time"])
        return pc.cast(text, READ_TYPES[kind])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


# ----------------------------------------------------------------------------- decisions

_DATE_BYTES = sys.getsizeof(datetime.date(2000, 1, 1))


@dataclass(slots=True)
class ColumnTarget:
    """The type a column is written with, and its sizes as pandas holds it."""

    name: str
    write_type: pa.DataType
    """The Arrow type of the data pages (dictionary and large types set at the end)."""
    read_type: pa.DataType
    """The Arrow type readers get back (a dictionary for a category)."""
    write_dtype: object
    """The pandas dtype the column has when the output is loaded with pandas."""
    old_dtype: str
    new_dtype: str
    before_bytes: int
    after_bytes: int


def decide(stats: ColumnStats, text_input: bool, shrink: bool = True) -> ColumnTarget:
    """The smallest faithful type for a column, from its statistics."""
    before_dtype, before = _loaded_by_pandas(stats, text_input)
    write_dtype = _shrunk_dtype(stats) if shrink else before_dtype
    if write_dtype is None or (isinstance(write_dtype, str) and write_dtype == "keep"):
        write_dtype = before_dtype
    after = _pandas_bytes(write_dtype, stats)
    if after > before and not isinstance(before_dtype, str):
        write_dtype, after = before_dtype, before
    read_type = _arrow_type(write_dtype, stats)
    write_type = read_type
    if pa.types.is_dictionary(read_type):
        write_type = pa.large_string()
    return ColumnTarget(
        stats.name,
        write_type,
        read_type,
        write_dtype,
        _label(before_dtype),
        _label(write_dtype),
        int(before),
        int(after),
    )


def _label(dtype) -> str:
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    return "keep" if isinstance(dtype, str) and dtype == "keep" else str(dtype)


def _arrow_type(dtype, stats: ColumnStats) -> pa.DataType:
    if isinstance(dtype, str) and dtype == "keep":
        return stats.source_type or pa.large_string()
    if isinstance(dtype, pd.CategoricalDtype):
        return pa.dictionary(pa.int32(), pa.large_string())
    if isinstance(dtype, pd.ArrowDtype):
        return dtype.pyarrow_dtype
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "O"):
        return pa.large_string() if stats.kind != "bool" else pa.bool_()
    if isinstance(dtype, pd.BooleanDtype):
        return pa.bool_()
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return pa.timestamp("ns")
    numpy_dtype = np.dtype(getattr(dtype, "numpy_dtype", dtype))
    return pa.from_numpy_dtype(numpy_dtype)


def _loaded_by_pandas(stats: ColumnStats, text_input: bool):
    """(dtype, deep bytes) of the column as pandas.read_csv / read_parquet would hold it."""
    has_nulls = stats.nulls > 0
    kind = stats.kind
    if text_input:
        if kind in ("int", "uint"):
            dtype = (
                np.dtype(np.float64)
                if has_nulls
                else np.dtype(np.int64 if kind == "int" else np.uint64)
            )
        elif kind == "float":
            dtype = np.dtype(np.float64)
        elif kind == "bool":
            dtype = np.dtype(object) if has_nulls else np.dtype(bool)
        else:  # pandas.read_csv leaves dates, times and timestamps as text
            dtype = default_string_dtype()
    else:
        source = stats.source_type
        if kind in ("int", "uint"):
            dtype = np.dtype(np.float64) if has_nulls else np.dtype(source.to_pandas_dtype())
        elif kind == "float":
            dtype = np.dtype(source.to_pandas_dtype())
        elif kind == "string":
            dtype = default_string_dtype()
        else:
            return "keep", _arrow_bytes_hint(stats)
    return dtype, _pandas_bytes(dtype, stats)


def _shrunk_dtype(stats: ColumnStats):
    nullable = stats.nulls > 0
    kind = stats.kind
    whole = kind in ("int", "uint") or (
        kind == "float" and stats.integral and not stats.negative_zero
    )
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
    if kind in ("date", "time"):
        return pd.ArrowDtype(READ_TYPES[kind])
    if kind in ("string", "null"):
        string_dtype = default_string_dtype()
        if stats.distinct is None or stats.distinct_overflow or kind == "null":
            return string_dtype
        category = pd.CategoricalDtype(pd.Index(pd.array(stats.distinct, dtype=string_dtype)))
        as_category = _pandas_bytes(category, stats)
        return category if as_category < _pandas_bytes(string_dtype, stats) else string_dtype
    return None


def _nullable_int(dtype: np.dtype):
    return pd.api.types.pandas_dtype(dtype.name.capitalize().replace("Uint", "UInt"))


def _pandas_bytes(dtype, stats: ColumnStats) -> int:
    """Deep bytes pandas uses for the column in `dtype` (as `memory_usage(deep=True)` says)."""
    n, nulls = stats.rows, stats.nulls
    present = n - nulls
    bitmap = (n + 7) // 8 if nulls else 0
    if isinstance(dtype, pd.CategoricalDtype):
        categories = stats.distinct
        texts = int(pc.sum(pc.binary_length(categories)).as_py() or 0) if categories else 0
        count = len(categories) if categories is not None else 0
        return n * code_dtype(count).itemsize + 8 * (count + 1) + texts
    if isinstance(dtype, pd.StringDtype):
        if dtype.storage == "python":
            return 8 * n + 49 * present + stats.text_bytes + 16 * nulls
        return 8 * (n + 1) + stats.text_bytes + bitmap
    if isinstance(dtype, pd.ArrowDtype):
        return n * max(dtype.pyarrow_dtype.bit_width // 8, 1) + bitmap
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        if stats.kind == "date":
            return 8 * n + _DATE_BYTES * present
        return 8 * n + 28 * present + 16 * nulls  # bools with missing values: Python objects
    if isinstance(dtype, np.dtype):
        return n * dtype.itemsize
    numpy_dtype = np.dtype(dtype.numpy_dtype)  # pandas nullable: values plus a byte mask
    return n * (numpy_dtype.itemsize + 1)


def _arrow_bytes_hint(stats: ColumnStats) -> int:
    width = getattr(stats.source_type, "bit_width", 64) if stats.source_type else 64
    return stats.rows * max(width // 8, 1) + stats.text_bytes


def output_schema(targets: list[ColumnTarget]) -> pa.Schema:
    """The schema readers get, with pandas metadata so pandas loads the shrunk dtypes back."""
    empty = {}
    for t in targets:
        if isinstance(t.write_dtype, pd.CategoricalDtype):
            empty[t.name] = pd.Series(pd.Categorical([], dtype=t.write_dtype))
        elif isinstance(t.write_dtype, str) and t.write_dtype == "keep":
            empty[t.name] = pd.Series([], dtype=object)
        else:
            empty[t.name] = pd.Series([], dtype=t.write_dtype)
    frame = pd.DataFrame(empty)
    pandas_schema = pa.Schema.from_pandas(frame, preserve_index=False)
    fields = [
        pa.field(t.name, t.read_type, nullable=True, metadata=f.metadata)
        for t, f in zip(targets, pandas_schema, strict=True)
    ]
    return pa.schema(fields, metadata=pandas_schema.metadata)
