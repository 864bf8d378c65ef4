"""Freed memory goes back to the OS during a conversion, so the bound holds for resident memory.

pyarrow's default allocator (mimalloc) keeps freed pages for reuse; under a bound
on resident memory that slack is counted as if it were held. While a conversion
runs, pyarrow allocates from jemalloc with a decay time of 0, which returns pages
as soon as they are free (measured: 15% less peak RSS for about the same time, see
benchmarks/convert_rss.py). Where pyarrow was built without jemalloc the default
pool is kept and asked to release what it can after each row group. glibc's own
heap (numpy and Python objects) is trimmed after each row group too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

_LIBC = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        _LIBC = None


@contextmanager
def returning_memory() -> Iterator[None]:
    previous = pa.default_memory_pool()
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        yield
        return
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def release_unused() -> None:
    pa.default_memory_pool().release_unused()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
