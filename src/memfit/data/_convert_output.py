"""The Parquet file a conversion writes: under a recognisable temporary name, then renamed.

The file is written as `.NAME.HOST-PID-N.memfit-partial` next to the destination
and renamed to NAME only once its row count matches the input's. SIGINT, SIGTERM
and SIGHUP remove it (they are turned into an exception while a conversion runs);
SIGKILL cannot be caught, so the next conversion into the same folder removes every
such file whose process (same host, that PID) is gone.

Row groups hold the types written so far. When a later chunk needs a wider type
(a late decimal, a larger integer, late text), the row groups already written are
copied into a new temporary file with the new types (`rewrite`); the schema that
readers get (category or string, nullable or not, and pandas' metadata) is stored
at the end, so those choices never cost a rewrite.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from memfit.data._files import create_following_umask
from memfit.errors import ConvertError

PARTIAL_SUFFIX = ".memfit-partial"
COMPRESSIONS = ("zstd", "snappy", "lz4", "gzip", "brotli", "none")
_HOST = socket.gethostname().replace(".", "_").replace("-", "_")


def partial_path(destination: Path, attempt: int) -> Path:
    return (
        destination.parent / f".{destination.name}.{_HOST}-{os.getpid()}-{attempt}{PARTIAL_SUFFIX}"
    )


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the temporary files of conversions killed on this host (their PID is gone)."""
    removed = []
    for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
        owner = path.name[: -len(PARTIAL_SUFFIX)].rsplit(".", 1)[-1]
        host, _, rest = owner.rpartition("-")
        host, _, pid = host.rpartition("-")
        if host != _HOST or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived during a conversion (re-raised as exit after cleanup)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextmanager
def termination_raises() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception while the block runs, so `finally` runs.

    Only from the main thread, and only where the default action (die at once) is set:
    a program's own handlers are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def _raise(signum, frame):
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_compression(compression: str, level: int | None) -> tuple[str, int | None]:
    name = (compression or "none").lower()
    if name not in COMPRESSIONS:
        raise ConvertError(
            f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}"
        )
    if name != "none" and not pa.Codec.is_available(name):
        raise ConvertError(f"this pyarrow was built without {name}; use zstd or snappy")
    if level is not None:
        if name in ("none", "snappy", "lz4"):
            raise ConvertError(f"{name} has no compression level; drop --compression-level")
        try:
            pa.Codec(name, compression_level=level)
        except (ValueError, pa.ArrowException) as exc:
            raise ConvertError(
                f"compression level {level} is not valid for {name} ({exc})"
            ) from exc
    return name, level


class PartialParquet:
    """A Parquet file being written under a temporary name, rewritable with wider types."""

    def __init__(
        self,
        destination: Path,
        compression: str,
        level: int | None,
        dictionary_columns: Callable[[pa.Schema], list[str]],
    ) -> None:
        self.destination = destination
        self.compression, self.level = compression, level
        self.dictionary_columns = dictionary_columns
        self.attempt = 0
        self.path: Path | None = None
        self.schema: pa.Schema | None = None
        self.rows = 0
        self.row_groups = 0
        self.rewritten_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def _open(self, schema: pa.Schema) -> None:
        self.attempt += 1
        path = partial_path(self.destination, self.attempt)
        try:
            os.close(create_following_umask(path))
        except OSError as exc:
            raise ConvertError(
                f"cannot create a file in {str(self.destination.parent)!r} ({exc.strerror}); "
                "choose a writable output folder"
            ) from exc
        self.path, self.schema = path, schema
        self._writer = pq.ParquetWriter(
            str(path),
            schema,
            compression=self.compression,
            compression_level=self.level,
            use_dictionary=self.dictionary_columns(schema),
            # Readers get the schema stored at the end (see `finish`).
            store_schema=False,
            write_statistics=True,
        )

    def write(self, table: pa.Table) -> None:
        """Write `table` (already in `self.schema`'s types) as one row group."""
        if self._writer is None:
            self._open(table.schema)
        self._write(self._writer, table)
        self.rows += table.num_rows
        self.row_groups += 1

    def _write(self, writer: pq.ParquetWriter, table: pa.Table) -> None:
        try:
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
        except OSError as exc:
            raise ConvertError(
                f"cannot write {self.destination.name} ({exc}); free some disk space "
                "or choose another output folder"
            ) from exc

    def rewrite(self, schema: pa.Schema, transform: Callable[[pa.Table, int], pa.Table]) -> None:
        """Copy every row group written so far into a new file with `schema`'s types."""
        if self._writer is None:
            self.schema = schema
            return
        old_path = self.path
        self._writer.close()
        self._writer = None
        source = pq.ParquetFile(str(old_path))
        try:
            self._open(schema)
            for index in range(source.metadata.num_row_groups):
                table = transform(source.read_row_group(index), index)
                self._write(self._writer, table)
                self.rewritten_rows += table.num_rows
        finally:
            source.close()
            old_path.unlink(missing_ok=True)

    def finish(self, final: pa.Schema, expected_rows: int) -> int:
        """Store the readers' schema, check the row count, rename into place; the file size."""
        if self._writer is None:
            self._open(pa.schema([f.with_type(_physical(f.type)) for f in final]))
        # The same key pyarrow stores (an IPC schema, base64): pyarrow, pandas and polars
        # read categories, large strings, time zones and pandas dtypes from it.
        self._writer.add_key_value_metadata(
            {
                "ARROW:schema": base64.b64encode(final.serialize().to_pybytes()).decode(),
                **{k.decode(): v.decode() for k, v in (final.metadata or {}).items()},
            }
        )
        self._writer.close()
        self._writer = None
        stored = pq.ParquetFile(str(self.path)).metadata.num_rows
        if not self.rows == stored == expected_rows:
            raise ConvertError(
                f"row count mismatch: {expected_rows} rows read, {self.rows} written, "
                f"{stored} stored; the input changed while it was read"
            )
        os.replace(self.path, self.destination)
        self.path = None
        return self.destination.stat().st_size

    def discard(self) -> None:
        if self._writer is not None:
            with suppress(OSError, pa.ArrowException):
                self._writer.close()
            self._writer = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _physical(arrow_type: pa.DataType) -> pa.DataType:
    return pa.large_string() if pa.types.is_dictionary(arrow_type) else arrow_type
