"""Readers that cut a table on disk into numbered blocks and read any block alone.

A block is a run of consecutive rows whose count is known before it is read,
so that a stream can plan an epoch (which worker reads which block, where a
resumed run starts) without touching the data. Each reader yields a block as
pyarrow record batches of bounded size; nothing reads the whole file.

- CSV: one pass over the bytes records where every block-th record starts
  (quote-aware); a block is then one seek and one read.
- Parquet: a block is a slice of one row group, read with `iter_batches`.
- SQLite: a table is cut by rowid (one pass over the rowid index); a query
  is cut with LIMIT/OFFSET, so it must have a stable order (ORDER BY).

CSV and Parquet files may be fsspec URLs (`s3://`, `gs://`, `https://`, ...): they
are read through pyarrow's filesystems by range, like a local file, with the same
memory bound.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from memfit.data._files import Location, is_url, locate
from memfit.errors import StreamError

_SCAN_CHUNK_BYTES = 4 * 2**20  # CSV indexing reads this much at a time
_SQL_FETCH_ROWS = 4096  # rows per cursor fetch: Python tuples cost ~100 B/value
_PARQUET_READ_ROWS = 65536
_CSV_PIECE_BYTES = 2**20


class Source:
    """One table on disk, cut into blocks. Subclasses open files lazily (per process)."""

    description: str

    def names(self) -> list[str]:
        """Every column, in file order (reads no rows)."""
        raise NotImplementedError

    def block_rows(self, rows_per_block: int) -> np.ndarray:
        """Cut the table into blocks of at most `rows_per_block` rows; rows in each (int64)."""
        raise NotImplementedError

    def read_block(
        self, index: int, columns: list[str], types: dict[str, pa.DataType] | None = None
    ) -> Iterator[pa.RecordBatch | pa.Table]:
        """Block `index` as record batches of `columns`. `types` is a hint for text formats
        (CSV), whose types are otherwise guessed per piece; typed formats ignore it."""
        raise NotImplementedError

    def __getstate__(self) -> dict:
        # Open handles (sqlite connections, parquet readers) stay in the process that
        # made them; DataLoader workers reopen their own.
        state = dict(self.__dict__)
        for key in [k for k in state if k.startswith("_open")]:
            state[key] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def open_source(
    path: str | os.PathLike,
    table: str | None = None,
    query: str | None = None,
    format: str | None = None,
) -> Source:
    """The reader for `path`: a .csv, a .parquet, or `sqlite:///file.db` with a table or query."""
    text = str(path)
    if format is None:
        lower = text.lower()
        if lower.startswith("sqlite:"):
            format = "sqlite"
        elif lower.endswith((".parquet", ".pq")):
            format = "parquet"
        elif lower.endswith(".csv"):
            format = "csv"
        elif lower.endswith((".db", ".sqlite", ".sqlite3")):
            format = "sqlite"
        elif lower.endswith((".gz", ".bz2", ".xz", ".zst", ".zip")):
            raise StreamError(
                f"{text}: a compressed file cannot be read by block; decompress it "
                "or convert it to Parquet first (memfit convert)"
            )
        else:
            raise StreamError(
                f"{text}: unknown format; name it .csv, .parquet or "
                "sqlite:///file.db, or pass format='csv'|'parquet'|'sqlite'"
            )
    if format == "sqlite":
        return SqliteSource(_sqlite_path(text), table, query)
    if table is not None or query is not None:
        raise StreamError("table= and query= apply to SQLite only; drop them for a file")
    if format == "parquet":
        return ParquetSource(_existing(text))
    if format == "csv":
        return CsvSource(_existing(text))
    raise StreamError(f"unknown format {format!r}; use 'csv', 'parquet' or 'sqlite'")


def _existing(text: str) -> Path | Location:
    if is_url(text):
        location = locate(text, StreamError)
        location.info()  # a clear error now for a missing object or a folder
        return location
    path = Path(text)
    if path.is_dir():
        raise StreamError(f"{text} is a folder, not a file; name one file inside it")
    if not path.is_file():
        raise StreamError(f"{text}: no such file; check the path")
    return path


def _open_binary(path: Path | Location):
    """A seekable binary file: the local file itself, or a remote one read by range."""
    if isinstance(path, Location):
        return path.open_random()
    return open(path, "rb")


def _sqlite_path(text: str) -> Path:
    # SQLAlchemy's spelling: sqlite:///relative.db and sqlite:////absolute.db
    if text.lower().startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    elif text.lower().startswith("sqlite:"):
        raise StreamError(
            f"{text}: write a SQLite URL as sqlite:///file.db (or sqlite:////absolute/path.db)"
        )
    return _existing(text)


def _first_line(handle) -> bytes:
    """The first line with its newline (pyarrow's remote files have no readline)."""
    line = b""
    while b"\n" not in line:
        piece = handle.read(1 << 16)
        if not piece:
            return line
        line += piece
    return line[: line.index(b"\n") + 1]


def equal_blocks(total_rows: int, rows_per_block: int) -> np.ndarray:
    """Row counts of `total_rows` cut into blocks of `rows_per_block` (the last may be short)."""
    full, rest = divmod(total_rows, rows_per_block)
    counts = np.full(full, rows_per_block, dtype=np.int64)
    return np.append(counts, np.int64(rest)) if rest else counts


class ParquetSource(Source):
    def __init__(self, path: Path | Location) -> None:
        self.path = path
        self.description = path.text if isinstance(path, Location) else str(path)
        self._open_file = None
        self._pieces: list[tuple[int, int, int]] = []

    def _file(self):
        import pyarrow.parquet as pq

        if self._open_file is None:
            try:
                # buffer_size > 0 streams each column chunk instead of loading it whole.
                source = self.path.open_random() if isinstance(self.path, Location) else self.path
                self._open_file = pq.ParquetFile(source, buffer_size=2**20)
            except (pa.ArrowInvalid, OSError) as exc:
                raise StreamError(f"{self.path}: not a readable Parquet file ({exc})") from exc
        return self._open_file

    def names(self) -> list[str]:
        return list(self._file().schema_arrow.names)

    def block_rows(self, rows_per_block: int) -> np.ndarray:
        meta = self._file().metadata
        self._pieces = []
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            # A row group larger than a block is read in slices; slice k re-decodes the
            # k slices before it (Parquet has no random row access), a time cost only.
            for start in range(0, rows, rows_per_block):
                self._pieces.append((group, start, min(rows, start + rows_per_block)))
        return np.array([stop - start for _, start, stop in self._pieces], dtype=np.int64)

    def read_block(
        self, index: int, columns: list[str], types: dict[str, pa.DataType] | None = None
    ) -> Iterator[pa.RecordBatch]:
        group, start, stop = self._pieces[index]
        offset = 0
        read_rows = min(_PARQUET_READ_ROWS, stop - start)
        for batch in self._file().iter_batches(
            batch_size=read_rows, row_groups=[group], columns=columns, use_threads=False
        ):
            lo, hi = max(start - offset, 0), min(stop - offset, batch.num_rows)
            if lo < hi:
                yield batch.slice(lo, hi - lo)
            offset += batch.num_rows
            if offset >= stop:
                return


class CsvSource(Source):
    def __init__(self, path: Path | Location) -> None:
        self.path = path
        self.description = path.text if isinstance(path, Location) else str(path)
        self._names: list[str] = []
        self._data_start = 0
        self._offsets = np.zeros(1, dtype=np.int64)

    def names(self) -> list[str]:
        if not self._names:
            with _open_binary(self.path) as handle:
                header = _first_line(handle)
            names = next(csv.reader([header.decode("utf-8-sig")]), [])
            if not names:
                raise StreamError(f"{self.path}: the first line must be a header of column names")
            self._names = [n.strip() for n in names]
            self._data_start = len(header)
        return self._names

    def block_rows(self, rows_per_block: int) -> np.ndarray:
        self.names()
        data_start = self._data_start
        with _open_binary(self.path) as handle:
            handle.seek(data_start)
            cut, total = _block_ends(handle, data_start, rows_per_block)
        self._offsets = np.concatenate([[data_start], cut]).astype(np.int64)
        return equal_blocks(total, rows_per_block)

    def read_block(
        self, index: int, columns: list[str], types: dict[str, pa.DataType] | None = None
    ) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pacsv

        start, stop = int(self._offsets[index]), int(self._offsets[index + 1])
        with _open_binary(self.path) as handle:
            try:
                # Parse the block's bytes piece by piece (about 1 MB of text at a time) rather
                # than reading it whole: text and parsed columns together cost ~4x the floats.
                yield from pacsv.open_csv(
                    _ByteRange(handle, start, stop),
                    read_options=pacsv.ReadOptions(
                        column_names=self._names, use_threads=False, block_size=_CSV_PIECE_BYTES
                    ),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=columns, column_types=types or {}
                    ),
                )
            except pa.ArrowInvalid as exc:
                found = re.search(r"CSV column #(\d+)", str(exc))
                if found and "conversion error" in str(exc):
                    name = self._names[int(found.group(1))]
                    raise StreamError(
                        f"column {name!r} is not numeric near byte {start} "
                        f"({exc}); encode it as numbers first or leave it out "
                        "of columns"
                    ) from exc
                raise StreamError(
                    f"{self.path}: cannot parse rows between bytes {start} and "
                    f"{stop} ({exc}); fix the file or convert it with memfit "
                    "convert"
                ) from exc


class _ByteRange(io.RawIOBase):
    """Bytes start..stop of an open file, as a file that ends at stop."""

    def __init__(self, handle, start: int, stop: int) -> None:
        self.handle, self.left = handle, stop - start
        handle.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[: self.left]
        n = self.handle.readinto(view)
        self.left -= n
        return n


def _block_ends(handle, data_start: int, rows_per_block: int) -> tuple[np.ndarray, int]:
    """Byte offsets just past every rows_per_block-th non-empty CSV record (and the last
    one), and the number of records; quoted newlines are honoured.

    Written by hand because no reader reports where records start: pyarrow and pandas
    stream a CSV but cannot seek to row k. A newline ends a record when the number of
    quotes before it is even (RFC 4180 doubles quotes inside quoted fields). Only block
    ends are kept, so the index is one int per block, not per row.
    """
    ends: list[np.ndarray] = []
    total = 0
    last_record_end = data_start
    quotes_before = 0  # quotes seen in earlier chunks
    last_end = data_start  # where the current record began
    previous_byte = 10  # last byte of the previous chunk
    position = data_start
    while True:
        chunk = handle.read(_SCAN_CHUNK_BYTES)
        if not chunk:
            break
        raw = np.frombuffer(chunk, dtype=np.uint8)
        newlines = np.flatnonzero(raw == 10)
        quote_at = np.flatnonzero(raw == 34)
        if len(quote_at):
            parity = (quotes_before + np.searchsorted(quote_at, newlines)) % 2
            newlines = newlines[parity == 0]
        quotes_before += len(quote_at)
        if len(newlines):
            record_end = newlines.astype(np.int64) + position + 1
            starts = np.concatenate([[last_end], record_end[:-1]])
            length = record_end - 1 - starts
            # Empty lines (or a lone \r) are skipped by CSV readers, so not counted.
            blank = length == 0
            one = np.flatnonzero(length == 1)
            first = starts[one] - position  # -1: the record began in the previous chunk
            byte = np.where(first >= 0, raw[np.maximum(first, 0)], previous_byte)
            blank[one] = byte == 13
            records = record_end[~blank]
            if len(records):
                # Global record k ends a block when (k + 1) % rows_per_block == 0.
                first = (rows_per_block - 1 - total) % rows_per_block
                ends.append(records[first::rows_per_block].copy())  # a view would pin records
                total += len(records)
                last_record_end = int(records[-1])
            last_end = int(record_end[-1])
        position += len(chunk)
        previous_byte = int(raw[-1])
    if position > last_end and not _only_whitespace(handle, last_end, position):
        total += 1  # a last line without a newline
        last_record_end = position
    cut = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    if total and (len(cut) == 0 or cut[-1] != last_record_end):
        cut = np.append(cut, np.int64(last_record_end))  # the short last block
    return cut, total


def _only_whitespace(handle, start: int, stop: int) -> bool:
    handle.seek(start)
    return not handle.read(stop - start).strip()


class SqliteSource(Source):
    def __init__(self, path: Path, table: str | None, query: str | None) -> None:
        if (table is None) == (query is None):
            raise StreamError(
                "for SQLite pass exactly one of table='name' or query='SELECT ... ORDER BY ...'"
            )
        self.path, self.table, self.query = path, table, query
        self.description = f"sqlite:///{path} ({table or 'query'})"
        self._open_db = None
        self._rowid_bounds = np.zeros(1, dtype=np.int64)
        self._offsets = np.zeros(1, dtype=np.int64)

    def _db(self) -> sqlite3.Connection:
        if self._open_db is None:
            uri = f"file:{self.path}?mode=ro"
            self._open_db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._open_db

    def _from(self) -> str:
        if self.table is not None:
            return '"' + self.table.replace('"', '""') + '"'
        return f"({self.query})"

    def names(self) -> list[str]:
        try:
            cursor = self._db().execute(f"SELECT * FROM {self._from()} LIMIT 0")
        except sqlite3.Error as exc:
            raise StreamError(f"{self.description}: {exc}; check the table name or query") from exc
        return [d[0] for d in cursor.description]

    def block_rows(self, rows_per_block: int) -> np.ndarray:
        db = self._db()
        if self.table is None:
            total = db.execute(f"SELECT COUNT(*) FROM {self._from()}").fetchone()[0]
            counts = equal_blocks(total, rows_per_block)
            self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            return counts
        try:
            rowids = db.execute(f"SELECT rowid FROM {self._from()} ORDER BY rowid")
        except sqlite3.Error as exc:
            raise StreamError(
                f"{self.description}: has no rowid ({exc}); "
                "pass query='SELECT ... ORDER BY key' instead"
            ) from exc
        bounds, total, last = [], 0, 0
        # One pass over the rowid index: keep the rowid that starts every block.
        while rows := rowids.fetchmany(65536):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            starts = np.arange(-total % rows_per_block, len(ids), rows_per_block)
            bounds.append(ids[starts])
            total += len(ids)
            last = int(ids[-1])
        starts = np.concatenate(bounds) if bounds else np.zeros(0, dtype=np.int64)
        self._rowid_bounds = np.append(starts, last + 1).astype(np.int64)
        return equal_blocks(total, rows_per_block)

    def read_block(
        self, index: int, columns: list[str], types: dict[str, pa.DataType] | None = None
    ) -> Iterator[pa.Table]:
        picked = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        if self.table is not None:
            lo, hi = int(self._rowid_bounds[index]), int(self._rowid_bounds[index + 1])
            sql = (
                f"SELECT {picked} FROM {self._from()} WHERE rowid >= ? AND rowid < ? ORDER BY rowid"
            )
            cursor = self._db().execute(sql, (lo, hi))
        else:
            lo, hi = int(self._offsets[index]), int(self._offsets[index + 1])
            sql = f"SELECT {picked} FROM {self._from()} LIMIT ? OFFSET ?"
            cursor = self._db().execute(sql, (hi - lo, lo))
        while rows := cursor.fetchmany(_SQL_FETCH_ROWS):
            values = list(zip(*rows, strict=True))
            yield pa.table({name: pa.array(values[i]) for i, name in enumerate(columns)})
