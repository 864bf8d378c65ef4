"""Convert a CSV (or gzipped CSV, or Parquet) file to a shrunk Parquet file in bounded memory.

    memfit convert big.csv.gz big.parquet --max-memory 256MB

Two streaming passes, each holding one block of the file at a time:

1. read every column as text and find, over the *whole* file, the narrowest type
   that holds every value (a column whose first decimal or first missing value
   comes in the last block still gets one consistent type), with the statistics that
   pick the smallest faithful dtype (range, whole numbers, float32 round trip,
   distinct strings);
2. read again with those types, cast each block to the shrunk types and append it
   to a Parquet file.

The Parquet file is written under a temporary name in the destination folder and
renamed only when the row count matches the input's, so a crash or a bad input
never leaves a half-written file under the final name. pandas metadata is stored
with the schema, so `pandas.read_parquet` gives back the shrunk dtypes (uint8,
nullable UInt16, category, ...).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from memfit.budget import Budget, format_bytes
from memfit.data._callable_module import make_module_callable
from memfit.data._convert_columns import (
    ColumnStats,
    ColumnTarget,
    decide,
    pandas_metadata_schema,
)
from memfit.data.shrink import ColumnReport
from memfit.errors import ConvertError

DEFAULT_MAX_MEMORY = "512MB"
"""The command line's default bound on the whole process."""
DEFAULT_WORKING_MEMORY = 256 * 10**6
"""The library's default: memory for the conversion on top of what the process holds."""
# Bytes held per byte of block. pyarrow's streaming CSV reader reads up to 32 blocks
# ahead on its I/O thread (arrow's MakeBackgroundGenerator, kDefaultBackgroundMaxQ = 32),
# whatever `use_threads` says, and one block in work holds about 12 times its size
# (its text columns, the parsed and the shrunk copies, the Parquet writer's pages):
# 32 + 12, rounded up. The block size is the data budget divided by this.
_BYTES_PER_BLOCK_BYTE = 48
_MIN_BLOCK = 1 << 18
_MAX_BLOCK = 64 << 20


@dataclass(slots=True)
class ConvertResult:
    """What a conversion read, wrote and saved."""

    source: str
    destination: str | None
    rows: int
    before_bytes: int
    """Deep memory of the table as pandas would load the input (read_csv / read_parquet)."""
    after_bytes: int
    """Deep memory of the table as pandas loads the shrunk output."""
    columns: list[ColumnReport]
    input_file_bytes: int
    output_file_bytes: int | None
    block_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of `memfit convert --json` and `memfit shrink --json`."""
        return {
            "source": self.source,
            "destination": self.destination,
            "rows": int(self.rows),
            "before_bytes": int(self.before_bytes),
            "after_bytes": int(self.after_bytes),
            "input_file_bytes": int(self.input_file_bytes),
            "output_file_bytes": (
                None if self.output_file_bytes is None else int(self.output_file_bytes)
            ),
            "block_bytes": int(self.block_bytes),
            "seconds": round(self.seconds, 3),
            "columns": [c.to_dict() for c in self.columns],
        }


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike | None = None,
    *,
    max_memory: str | int | Budget | None = None,
    shrink: bool = True,
    delimiter: str = ",",
    progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Stream `source` (CSV, CSV.gz or Parquet) into a shrunk Parquet `destination`.

    With `destination=None` nothing is written: the result reports the sizes only.
    `max_memory` bounds this process's whole memory (the command line's `--max-memory`);
    left out, the conversion gets `DEFAULT_WORKING_MEMORY` on top of what the process
    already holds, so a long-running program can convert without knowing its own size.
    `progress(done, total)` is called with bytes of the input file read over both passes.

    >>> import tempfile, pathlib, pandas as pd
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.csv").write_text("n,x\\n1,0.5\\n2,\\n300,1.5\\n")
    >>> result = convert(folder / "t.csv", folder / "t.parquet")
    >>> result.rows, [c.new_dtype for c in result.columns]
    (3, ['uint16', 'float32'])
    >>> pd.read_parquet(folder / "t.parquet")["n"].tolist()
    [1, 2, 300]
    """
    start = time.perf_counter()
    source_path = Path(source)
    if not source_path.is_file():
        raise ConvertError(f"input file {str(source)!r} does not exist; check the path")
    if destination is not None and Path(destination).resolve() == source_path.resolve():
        raise ConvertError("the output file is the input file; name a different output")
    reader = _reader_for(source_path, delimiter, _block_bytes(max_memory))
    file_bytes = source_path.stat().st_size
    report = _Progress(progress, 2 * file_bytes if destination is not None else file_bytes)

    stats = reader.scan(report)
    targets = [decide(s, reader.text_input, shrink=shrink) for s in stats]
    rows = stats[0].rows if stats else 0
    output_bytes = None
    if destination is not None:
        output_bytes = _write(reader, targets, Path(destination), rows, report)
    index_bytes = int(pd.RangeIndex(rows).memory_usage(deep=True))
    columns = [
        ColumnReport(t.name, t.old_dtype, t.new_dtype, t.before_bytes, t.after_bytes)
        for t in targets
    ]
    return ConvertResult(
        source=str(source),
        destination=None if destination is None else str(destination),
        rows=rows,
        before_bytes=index_bytes + sum(t.before_bytes for t in targets),
        after_bytes=index_bytes + sum(t.after_bytes for t in targets),
        columns=columns,
        input_file_bytes=file_bytes,
        output_file_bytes=output_bytes,
        block_bytes=reader.block_bytes,
        seconds=time.perf_counter() - start,
    )


def _block_bytes(max_memory) -> int:
    import psutil

    in_use = psutil.Process().memory_info().rss
    budget = (
        in_use + DEFAULT_WORKING_MEMORY if max_memory is None else Budget.parse(max_memory).bytes
    )
    data = budget - in_use
    if data < 8 * _MIN_BLOCK * 4:
        raise ConvertError(
            f"--max-memory {format_bytes(budget)} leaves {format_bytes(max(data, 0))} for data "
            f"after the {format_bytes(in_use)} this process already uses; give at least "
            f"{format_bytes(in_use + 64 * 10**6)}"
        )
    return int(min(max(data // _BYTES_PER_BLOCK_BYTE, _MIN_BLOCK), _MAX_BLOCK))


class _Progress:
    def __init__(self, callback, total: int) -> None:
        self.callback, self.total, self.done_before = callback, total, 0

    def update(self, position: int) -> None:
        if self.callback is not None:
            self.callback(min(self.done_before + position, self.total), self.total)

    def next_pass(self, file_bytes: int) -> None:
        self.done_before += file_bytes


# ----------------------------------------------------------------------------- readers


class _CsvReader:
    text_input = True

    def __init__(self, path: Path, delimiter: str, block_bytes: int) -> None:
        self.path, self.block_bytes = path, block_bytes
        self.parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
        self.names = self._header()

    def _open(self, column_types: dict[str, pa.DataType] | None, block_bytes: int | None = None):
        raw = pa.OSFile(str(self.path), "rb")
        codec = (
            pa.Codec.detect(str(self.path))
            if self.path.suffix in (".gz", ".bz2", ".zst", ".lz4")
            else None
        )
        stream = pa.CompressedInputStream(raw, codec.name) if codec is not None else raw
        convert = pacsv.ConvertOptions(
            column_types=column_types or {},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        # use_threads=False: with threads, parsed blocks pile up ahead of the casts too.
        options = pacsv.ReadOptions(block_size=block_bytes or self.block_bytes, use_threads=False)
        try:
            return raw, pacsv.open_csv(
                stream, read_options=options, parse_options=self.parse, convert_options=convert
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raw.close()
            raise ConvertError(
                f"cannot read {self.path.name} as CSV ({_first_line(exc)}); "
                "check the delimiter and the quoting"
            ) from exc

    def _header(self) -> list[str]:
        # A small first block: only the header is needed, not type inference on a big block.
        raw, reader = self._open(None, block_bytes=min(self.block_bytes, 1 << 20))
        with raw:
            names = reader.schema.names
        if len(set(names)) != len(names):
            raise ConvertError(f"{self.path.name} has duplicate column names; rename them")
        return names

    def batches(self, types: dict[str, pa.DataType], report: _Progress) -> Iterator[pa.RecordBatch]:
        raw, reader = self._open(types)
        with raw:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise ConvertError(
                        f"{self.path.name}: {_first_line(exc)}; the file may be "
                        "malformed (unbalanced quotes, ragged rows)"
                    ) from exc
                report.update(raw.tell())
                yield batch

    def scan(self, report: _Progress) -> list[ColumnStats]:
        stats = [ColumnStats(name) for name in self.names]
        text = dict.fromkeys(self.names, pa.large_string())
        for batch in self.batches(text, report):
            for column, state in zip(batch.columns, stats, strict=True):
                state.add_text(column)
        report.next_pass(self.path.stat().st_size)
        return stats


class _ParquetReader:
    text_input = False

    def __init__(self, path: Path, block_bytes: int) -> None:
        self.path, self.block_bytes = path, block_bytes
        try:
            self.file = pq.ParquetFile(str(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConvertError(f"cannot read {path.name} as Parquet ({_first_line(exc)})") from exc
        self.names = self.file.schema_arrow.names
        meta = self.file.metadata
        row_bytes = max(meta.serialized_size, 1)
        if meta.num_rows:
            uncompressed = sum(
                meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)
            )
            row_bytes = max(uncompressed // meta.num_rows, 1)
        self.batch_rows = max(block_bytes // row_bytes, 1024)

    def batches(self, types, report: _Progress) -> Iterator[pa.RecordBatch]:
        total_rows = max(self.file.metadata.num_rows, 1)
        file_bytes = self.path.stat().st_size
        done = 0
        for batch in self.file.iter_batches(batch_size=self.batch_rows):
            done += batch.num_rows
            report.update(file_bytes * done // total_rows)
            yield batch

    def scan(self, report: _Progress) -> list[ColumnStats]:
        stats = [ColumnStats(name) for name in self.names]
        for batch in self.batches(None, report):
            for column, state in zip(batch.columns, stats, strict=True):
                state.add_typed(column)
        report.next_pass(self.path.stat().st_size)
        if self.file.metadata.num_rows == 0:
            for state, f in zip(stats, self.file.schema_arrow, strict=True):
                state.source_type, state.kind = f.type, "other"
        return stats


def _reader_for(path: Path, delimiter: str, block_bytes: int):
    if path.suffix.lower() in (".parquet", ".pq"):
        return _ParquetReader(path, block_bytes)
    if path.stat().st_size == 0:
        raise ConvertError(f"{path.name} is empty: a CSV needs at least a header line")
    return _CsvReader(path, delimiter, block_bytes)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ----------------------------------------------------------------------------- writing


def _write(
    reader, targets: list[ColumnTarget], destination: Path, rows: int, report: _Progress
) -> int:
    if destination.suffix.lower() not in (".parquet", ".pq"):
        raise ConvertError(
            f"output {destination.name} must end in .parquet: only Parquet keeps the shrunk dtypes"
        )
    if not destination.parent.is_dir():
        raise ConvertError(f"output folder {str(destination.parent)!r} does not exist")
    schema = pandas_metadata_schema(targets)
    read_types = {t.name: t.read_type for t in targets}
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    written = 0
    try:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            for batch in reader.batches(read_types, report):
                arrays = [
                    _cast(column, target, field.type)
                    for column, target, field in zip(batch.columns, targets, schema, strict=True)
                ]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                written += batch.num_rows
        stored = pq.ParquetFile(str(tmp)).metadata.num_rows
        if not written == stored == rows:
            raise ConvertError(
                f"row count mismatch: {rows} rows scanned, {written} converted, "
                f"{stored} stored; the input changed while it was read"
            )
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return destination.stat().st_size


def _cast(column: pa.Array, target: ColumnTarget, write_type: pa.DataType) -> pa.Array:
    if column.type == write_type:
        return column
    if pa.types.is_dictionary(write_type):
        return _encode(column, target, write_type)
    try:
        # safe=True: an overflow or a dropped fraction raises instead of changing a value.
        cast = pc.cast(column, write_type, safe=not pa.types.is_float32(write_type))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConvertError(
            f"column {target.name!r}: {_first_line(exc)}; the input changed "
            "between the two passes, or the reader disagreed with the scan"
        ) from exc
    if pa.types.is_float32(write_type):
        back = pc.cast(cast, column.type)
        same = pc.or_kleene(pc.equal(back, column), pc.is_nan(column))
        if not pc.all(same).as_py():
            raise ConvertError(
                f"column {target.name!r}: float32 would change values "
                "the scan saw as exact; the input changed while it was read"
            )
    return cast


def _encode(column: pa.Array, target: ColumnTarget, write_type: pa.DictionaryType) -> pa.Array:
    dictionary = target.categories.cast(write_type.value_type)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    column = column.cast(write_type.value_type)
    indices = pc.index_in(column, value_set=dictionary)
    if indices.null_count != column.null_count:
        raise ConvertError(
            f"column {target.name!r} has values the scan did not see; "
            "the input changed while it was read"
        )
    return pa.DictionaryArray.from_arrays(indices.cast(write_type.index_type), dictionary)


make_module_callable(__name__, convert)
