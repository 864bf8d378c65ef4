"""Deep memory of a column, measured without asking every Python object its size.

pandas' `memory_usage(deep=True)` calls `__sizeof__` on every object of an object
column (about 0.1 s per million strings). For a column of `str` objects the same
figure follows from the UTF-8 lengths pyarrow gives in one vectorised pass: a
compact ASCII `str` takes `"".__sizeof__()` bytes plus one per character (CPython's
`unicode_sizeof`). Non-ASCII strings and missing values are measured by pandas, one
by one, so the total is exactly what `memory_usage(deep=True)` reports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_EMPTY_STR_BYTES = "".__sizeof__()  # header of a compact ASCII str, with its closing NUL
_MISSING_TYPES = (type(None), float)


def object_strings(series: pd.Series) -> pa.Array | None:
    """An object column holding only `str` (and None/NaN) as one large_string array, else None.

    The type test is exact (`type(v) is str`): a str subclass such as numpy's `str_` has
    another size, and bytes would be decoded, so either makes this None.
    """
    if series.dtype != object or len(series) == 0:
        return None
    values = series.to_numpy()
    types = set(map(type, values))
    if str not in types or not types <= {str, *_MISSING_TYPES}:
        return None
    try:  # from_pandas: NaN and None become null; any other float refuses to convert
        return pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None


def deep_bytes(series: pd.Series, strings: pa.Array | None = None) -> int:
    """`series.memory_usage(deep=True, index=False)`, fast for object columns of str.

    `strings` is `object_strings(series)` when the caller already has it.
    """
    if strings is None or series.dtype != object:
        return int(series.memory_usage(deep=True, index=False))
    values = series.to_numpy()
    ascii_present = pc.string_is_ascii(strings).fill_null(False).to_numpy(zero_copy_only=False)
    counted = int(np.count_nonzero(ascii_present))
    text = int(pc.sum(pc.binary_length(strings.filter(ascii_present))).as_py() or 0)
    others = values[~ascii_present]
    other_bytes = 0
    if others.size:
        other_bytes = (
            int(pd.Series(others, dtype=object, copy=False).memory_usage(deep=True, index=False))
            - others.nbytes
        )
    return values.nbytes + counted * _EMPTY_STR_BYTES + text + other_bytes


def hash_table_bytes(n_categories: int) -> int:
    """Bytes of the hash table pandas builds over `n_categories` categories on first lookup.

    pandas' khash (pandas/_libs/include/pandas/vendored/klib/khash.h): power-of-two
    buckets of a pointer key and a pointer value, grown while the count exceeds
    `buckets * 0.77 + 0.5`; one flag bit per bucket in 32-bit words; a 40-byte header.
    """
    if n_categories <= 0:
        return 0
    buckets = 4
    while int(buckets * 0.77 + 0.5) < n_categories:
        buckets *= 2
    return buckets * 16 + 4 * max(1, buckets >> 5) + 40
