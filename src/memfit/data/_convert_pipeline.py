"""The conversion pass: chunks parsed on a thread pool, merged, cast and written in file order.

Workers parse and measure chunks; the calling thread merges their statistics in
order, decides the types, rewrites what a widening invalidates, and writes row
groups. pyarrow releases the GIL while it parses, casts and encodes, so parsing
and writing overlap on separate cores.
"""

from __future__ import annotations

import contextlib
import copy
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memfit.data._convert_budget import MAX_ROW_GROUP_ROWS, ConvertBudget
from memfit.data._convert_columns import (
    ColumnStats,
    ColumnTarget,
    decide,
    join_kinds,
    kind_of_type,
)
from memfit.data._convert_memory import release_unused
from memfit.data._convert_output import PartialParquet
from memfit.data._convert_parse import ParsedChunk, parse_text, text_column
from memfit.data._convert_text import CsvText
from memfit.data._files import Location
from memfit.errors import ConvertError

_CATEGORY_SAMPLE_SHARE = 0.5  # parsed straight into a dictionary below this distinct share
_DICTIONARY_SHARE = 0.2  # Parquet dictionary pages pay off below this share


class _Pipeline:
    text_input = True

    def __init__(self, names: list[str], budget: ConvertBudget, shrink: bool) -> None:
        self.names = names
        self.budget = budget
        self.shrink = shrink
        self.stats = [ColumnStats(n) for n in names]
        self.hints = [ColumnStats(n) for n in names]
        self.kinds = ["null"] * len(names)
        self.categories: set[int] = set()
        self.dictionary: set[str] = set()
        self.rows = 0
        self.physical: list[pa.DataType] | None = None
        self.ranges: list[tuple[int, int]] = []  # text range of each written row group
        self.buffer: list[ParsedChunk] = []
        self.writer: PartialParquet | None = None

    # ------------------------------------------------------------------ running

    def chunks(self) -> Iterator[tuple[int, int, object]]:
        raise NotImplementedError

    def work(self, start, stop, data, kinds, categories, physical, settled) -> ParsedChunk:
        raise NotImplementedError

    def position(self) -> int:
        raise NotImplementedError

    def run(
        self, pool: Executor, writer: PartialParquet | None, report: Callable[[int], None]
    ) -> list[ColumnTarget]:
        self.writer = writer
        pending: deque = deque()
        for start, stop, data in self.chunks():
            pending.append(
                pool.submit(
                    self.work,
                    start,
                    stop,
                    data,
                    list(self.kinds),
                    set(self.categories),
                    None if self.physical is None else list(self.physical),
                    [s.settled() for s in self.stats],
                )
            )
            del data
            report(self.position())
            if len(pending) > self.budget.workers:
                self._consume(pending.popleft().result())
        while pending:
            self._consume(pending.popleft().result())
        self._flush()
        targets = [decide(s, self.text_input, self.shrink) for s in self._final_stats()]
        self._restate(self._physical_types(targets), set())
        return targets

    def _final_stats(self) -> list[ColumnStats]:
        return self.stats

    # ------------------------------------------------------------------ one chunk

    def _consume(self, chunk: ParsedChunk) -> None:
        to_text = set()
        for i, (known, seen) in enumerate(zip(self.stats, chunk.stats, strict=True)):
            kind = join_kinds(known.kind, seen.kind, known, seen)
            if kind == "string" and seen.kind != "string":
                self._as_text(chunk, i)
            if kind == "string" and known.kind not in ("string", "null") and known.rows:
                to_text.add(i)  # the rows kept so far are read again as text
                self.stats[i] = ColumnStats(self.names[i])
            self.kinds[i] = join_kinds(self.kinds[i], kind, known, chunk.stats[i])
        for known, seen in zip(self.stats, chunk.stats, strict=True):
            known.merge(seen)
        self._restate(self._physical_types(self._predicted()), to_text)
        self.rows += chunk.table.num_rows
        self._keep(chunk)

    def _keep(self, chunk: ParsedChunk) -> None:
        if self.writer is None:
            self.ranges.append((chunk.start, chunk.stop))
            return
        chunk.table = self._cast(chunk.table)
        self.buffer.append(chunk)
        rows = sum(c.table.num_rows for c in self.buffer)
        size = sum(c.table.nbytes for c in self.buffer)
        if size >= self.budget.row_group_bytes or rows >= MAX_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer or self.writer is None:
            return
        table = pa.concat_tables([c.table for c in self.buffer])
        self.writer.write(table)
        release_unused()
        self.ranges.append((self.buffer[0].start, self.buffer[-1].stop))
        self.buffer = []

    def _as_text(self, chunk: ParsedChunk, i: int) -> None:
        column = self.text_of(chunk.start, chunk.stop, i)
        chunk.table = chunk.table.set_column(i, self.names[i], column)
        chunk.stats[i] = ColumnStats(self.names[i], "string")
        chunk.stats[i].add_typed(column, "string")
        chunk.kinds[i] = "string"

    def text_of(self, start: int, stop: int, i: int) -> pa.Array:
        raise ConvertError(f"column {self.names[i]!r} changed type; this input cannot be re-read")

    # ------------------------------------------------------------------ types

    def _predicted(self) -> list[ColumnTarget]:
        """Types from the chunks seen so far, widened by what the sample saw further on."""
        targets = []
        for known, hint in zip(self.stats, self.hints, strict=True):
            guess = copy.copy(known)
            seen = copy.copy(hint)
            seen.rows = seen.nulls = seen.text_bytes = 0
            guess.merge(seen)
            targets.append(decide(guess, self.text_input, self.shrink))
        return targets

    def _physical_types(self, targets: list[ColumnTarget]) -> list[pa.DataType]:
        types = []
        for i, target in enumerate(targets):
            kind = self.stats[i].kind if self.stats[i].rows else self.kinds[i]
            if kind == "string" and i in self.categories:
                types.append(pa.dictionary(pa.int32(), pa.large_string()))
            else:
                types.append(target.write_type)
        return types

    def dictionary_columns(self, schema: pa.Schema) -> list[str]:
        return [
            f.name for f in schema if pa.types.is_dictionary(f.type) or f.name in self.dictionary
        ]

    def _restate(self, physical: list[pa.DataType], to_text: set[int]) -> None:
        """Give everything kept so far the types `physical` (and text for `to_text`)."""
        if self.physical is None:
            self.physical = physical
            return
        if physical == self.physical and not to_text:
            return
        self.physical = physical
        if self.writer is None:
            for start, stop in self.ranges:
                for i in to_text:
                    self.stats[i].add_typed(self.text_of(start, stop, i), "string")
            return
        for chunk in self.buffer:
            for i in to_text:
                column = self.text_of(chunk.start, chunk.stop, i)
                self.stats[i].add_typed(column, "string")
                chunk.table = chunk.table.set_column(i, self.names[i], column)
        ranges = list(self.ranges)

        def transform(table: pa.Table, index: int) -> pa.Table:
            for i in to_text:
                start, stop = ranges[index]
                column = self.text_of(start, stop, i)
                self.stats[i].add_typed(column, "string")
                table = table.set_column(i, self.names[i], column)
            return self._cast(table)

        self.writer.rewrite(self._schema(), transform)
        for chunk in self.buffer:
            chunk.table = self._cast(chunk.table)

    def _schema(self) -> pa.Schema:
        return pa.schema(list(zip(self.names, self.physical, strict=True)))

    def _cast(self, table: pa.Table) -> pa.Table:
        columns = [
            cast_exact(column, target, name)
            for column, target, name in zip(table.columns, self.physical, self.names, strict=True)
        ]
        return pa.Table.from_arrays(columns, schema=self._schema())


def cast_exact(column, target: pa.DataType, name: str):
    """`column` in `target`, which the statistics say holds every value (checked anyway)."""
    if column.type == target:
        return column
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type) and not pa.types.is_dictionary(target):
        column = column.dictionary_decode()
    if pa.types.is_dictionary(target):
        if column.type != target.value_type:
            column = column.cast(target.value_type)
        return pc.dictionary_encode(column).cast(target)
    try:
        if pa.types.is_floating(target) and pa.types.is_floating(column.type):
            cast = pc.cast(column, target, safe=False)
            back = pc.cast(cast, column.type)
            same = pc.or_kleene(pc.equal(back, column), pc.is_nan(column))
            if not pc.all(same).as_py():
                raise pa.ArrowInvalid(f"{target} would change values")
            return cast
        # safe=True: an overflow or a dropped fraction raises instead of changing a value.
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConvertError(
            f"column {name!r}: {str(exc).splitlines()[0]}; the input changed while it was read"
        ) from exc


def _fits(column: pa.Array, stats: ColumnStats, target: pa.DataType | None) -> bool:
    """Whether a worker may cast a fresh chunk's column already (the writer checks again)."""
    if target is None or column.type == target:
        return False
    kind = kind_of_type(column.type)
    if kind in ("int", "uint", "float") and pa.types.is_integer(target):
        return not (kind == "float" and (not stats.integral or stats.negative_zero))
    if kind == "float" and pa.types.is_float32(target):
        return stats.float32_exact
    return kind == "string" and (pa.types.is_dictionary(target) or pa.types.is_large_string(target))


def measure_and_cast(
    table: pa.Table, names, kinds, physical, settled
) -> tuple[pa.Table, list[ColumnStats]]:
    stats, columns = [], []
    for i, column in enumerate(table.columns):
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        state = ColumnStats(names[i])
        state.skip(settled[i])  # what earlier chunks already ruled out is not measured again
        state.add_typed(array, kinds[i])
        stats.append(state)
        target = physical[i] if physical is not None else None
        if _fits(array, state, target):
            with contextlib.suppress(ConvertError):  # else the writer widens and casts
                array = cast_exact(array, target, names[i])
        columns.append(array)
    return pa.Table.from_arrays(columns, names=names), stats


# ----------------------------------------------------------------------------- CSV


class CsvPipeline(_Pipeline):
    def __init__(self, location: Location, budget: ConvertBudget, shrink, delimiter, encoding):
        self.text = CsvText(location, delimiter, encoding)
        super().__init__(self.text.names, budget, shrink)
        self._mean_text = [0.0] * len(self.names)
        self._guess_types()

    def _guess_types(self) -> None:
        text_bytes = [0] * len(self.names)
        present = [0] * len(self.names)
        distinct = [pa.array([], pa.large_string()) for _ in self.names]
        quoted_newlines = False
        for number, piece in enumerate(self.text.sample()):
            if number and quoted_newlines and b'"' in piece:
                continue  # a piece may start inside a quoted field: its columns would be off
            try:
                table, _ = parse_text(
                    self.text, piece, self.names, ["string"] * len(self.names), set()
                )
            except ConvertError:
                if number == 0:
                    raise
                continue
            if number == 0:
                quoted_newlines = _has_quoted_newline(piece)
            for i, column in enumerate(table.columns):
                column = column.combine_chunks()
                self.hints[i].add_text(column)
                text_bytes[i] += pc.sum(pc.binary_length(column)).as_py() or 0
                present[i] += len(column) - column.null_count
                distinct[i] = pc.unique(pa.concat_arrays([distinct[i], column.drop_null()]))
        for i, hint in enumerate(self.hints):
            self.kinds[i] = hint.kind
            self._mean_text[i] = text_bytes[i] / max(present[i], 1)
            share = len(distinct[i]) / max(present[i], 1)
            if hint.kind == "string" and share <= _CATEGORY_SAMPLE_SHARE:
                self.categories.add(i)
            # Parquet dictionary pages pay off for few distinct values; for many, building
            # the dictionary until pyarrow gives up on it only costs time.
            if hint.kind in ("bool", "null") or share <= _DICTIONARY_SHARE:
                self.dictionary.add(self.names[i])

    def chunks(self):
        return self.text.chunks(self.budget.chunk_bytes)

    def position(self) -> int:
        return self.text.raw_position()

    def work(self, start, stop, data, kinds, categories, physical, settled) -> ParsedChunk:
        table, used = parse_text(self.text, data, self.names, kinds, categories)
        table, stats = measure_and_cast(table, self.names, used, physical, settled)
        return ParsedChunk(start, stop, table, used, stats, categories)

    def text_of(self, start: int, stop: int, i: int) -> pa.Array:
        return text_column(self.text, start, stop, self.names, self.names[i])

    def _final_stats(self) -> list[ColumnStats]:
        # pandas.read_csv keeps dates and times as text: their text is estimated from the sample.
        for i, state in enumerate(self.stats):
            if state.kind in ("date", "time", "timestamp"):
                state.text_bytes = int((state.rows - state.nulls) * self._mean_text[i])
        return self.stats


def _has_quoted_newline(piece: bytes) -> bool:
    if b'"' not in piece:
        return False
    raw = np.frombuffer(piece, dtype=np.uint8)  # the head sample: 1 MB at most
    quotes = np.cumsum(raw == 34)
    return bool(((raw == 10) & (quotes % 2 == 1)).any())


# ----------------------------------------------------------------------------- Parquet


class ParquetPipeline(_Pipeline):
    text_input = False

    def __init__(self, location: Location, budget: ConvertBudget, shrink: bool) -> None:
        try:
            self.file = pq.ParquetFile(location.open_random())
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConvertError(
                f"cannot read {location.name} as Parquet ({str(exc).splitlines()[0]})"
            ) from exc
        schema = self.file.schema_arrow
        super().__init__(schema.names, budget, shrink)
        meta = self.file.metadata
        row_bytes = 64
        if meta.num_rows:
            total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            row_bytes = max(total // meta.num_rows, 1)
        self.batch_rows = max(budget.chunk_bytes // row_bytes, 1024)
        self._done = 0
        self._file_bytes = location.size()
        for i, f in enumerate(schema):
            self.kinds[i] = kind_of_type(f.type)
            self.stats[i].source_type = f.type
            self.hints[i].kind = self.kinds[i]
            if self.kinds[i] == "string":
                self.dictionary.add(f.name)
            self._hint_bounds(i)

    def _hint_bounds(self, i: int) -> None:
        """Integer ranges from the row groups' statistics: no rewrite for a growing id."""
        if self.kinds[i] not in ("int", "uint"):
            return
        meta = self.file.metadata
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(i).statistics
            if stats is not None and stats.has_min_max:
                self.hints[i]._bounds(stats.min, stats.max)

    def chunks(self):
        rows = max(self.file.metadata.num_rows, 1)
        for batch in self.file.iter_batches(batch_size=self.batch_rows):
            self._done += batch.num_rows
            self._position = self._file_bytes * self._done // rows
            yield 0, 0, pa.Table.from_batches([batch])

    def position(self) -> int:
        return getattr(self, "_position", 0)

    def work(self, start, stop, data, kinds, categories, physical, settled) -> ParsedChunk:
        kinds = [None] * len(self.names)
        table, stats = measure_and_cast(data, self.names, kinds, physical, settled)
        for state, f in zip(stats, self.file.schema_arrow, strict=True):
            state.source_type = f.type
        return ParsedChunk(start, stop, table, [s.kind for s in stats], stats, categories)

    def _physical_types(self, targets: list[ColumnTarget]) -> list[pa.DataType]:
        return [t.write_type for t in targets]
