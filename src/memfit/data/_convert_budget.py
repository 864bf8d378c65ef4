"""How big a chunk, how many parsing threads and how big a row group fit a memory bound.

The bound is on the whole process (what the OS reports as its resident memory),
so what the process already holds (the interpreter, pandas, pyarrow) is measured
first and only the rest is shared out. Measured on generated CSV files (see
benchmarks/convert_rss.py), each byte of a chunk in flight costs about this many
bytes of resident memory at the peak: the text, pyarrow's parse (tokens, then
columns), the statistics and casts, the chunks waiting to be written, the row
group being gathered, the Parquet writer's pages, and allocator slack; on top of
that a fixed part, about the same for any chunk size: pyarrow's code pages touched
by parsing, casting and compressing, the Parquet writer's per-column encoders and
buffers (about 20 MB for 14 columns), and the sample that guesses the types.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from memfit.budget import Budget, format_bytes
from memfit.errors import ConvertError

_FIXED_BYTES = 65 * 10**6
_BYTES_PER_CHUNK_BYTE_PER_WORKER = 4  # text, tokens, columns, statistics and casts
_BYTES_PER_ROW_GROUP_BYTE = 1.25  # the gathered row group and its encoded pages
_ROW_GROUP_CHUNKS = 4
_MIN_CHUNK = 1 << 20
_MAX_CHUNK = 32 << 20
MAX_ROW_GROUP_ROWS = 1 << 20
"""Rows per row group at most: pyarrow's default, and what readers parallelise over."""


@dataclass(frozen=True, slots=True)
class ConvertBudget:
    bound: int
    """Resident bytes the process may reach."""
    held: int
    """Resident bytes the process held before the conversion."""
    chunk_bytes: int
    workers: int

    @property
    def row_group_bytes(self) -> int:
        return self.chunk_bytes * _ROW_GROUP_CHUNKS

    @classmethod
    def for_process(cls, max_memory, default_working: int, workers: int | None) -> ConvertBudget:
        import psutil

        held = psutil.Process().memory_info().rss
        bound = held + default_working if max_memory is None else Budget.parse(max_memory).bytes
        data = bound - held
        wanted = workers or _usable_cores()
        if workers is not None and workers < 1:
            raise ConvertError(f"workers must be at least 1, got {workers}")
        for count in range(wanted, 0, -1):
            chunk = int((data - _FIXED_BYTES) // _per_chunk_byte(count))
            if chunk >= _MIN_CHUNK or count == 1:
                break
        if chunk < _MIN_CHUNK:
            need = held + _FIXED_BYTES + int(_MIN_CHUNK * _per_chunk_byte(1))
            raise ConvertError(
                f"--max-memory {format_bytes(bound)} leaves {format_bytes(max(data, 0))} for "
                f"data after the {format_bytes(held)} this process already uses; give at "
                f"least {format_bytes(need)}"
            )
        return cls(bound, held, int(min(chunk, _MAX_CHUNK)), count)


def _per_chunk_byte(workers: int) -> float:
    # workers parsing, one parsed chunk waiting, the row group being gathered and written
    return (
        _BYTES_PER_CHUNK_BYTE_PER_WORKER * (workers + 1)
        + _BYTES_PER_ROW_GROUP_BYTE * _ROW_GROUP_CHUNKS
    )


def _usable_cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return max(os.cpu_count() or 1, 1)
