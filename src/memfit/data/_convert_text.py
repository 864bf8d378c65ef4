"""A CSV file as a stream of UTF-8 chunks that each end where a record ends.

The chunks are what lets several threads parse one file: pyarrow's streaming
reader parses one block at a time on one core and fixes its types from the first
block, while a chunk that ends on a record boundary can be parsed alone, on any
core, with whatever types the column needs by then.

A record ends at a newline outside quotes. Each chunk starts outside quotes, so
a newline ends a record when the quotes before it in the chunk are even in
number (RFC 4180 doubles quotes inside quoted fields); no reader reports record
offsets, so this is done here with numpy over the bytes.

Offsets are in the decoded text (after decompression and transcoding): chunks
can be read again by range, straight from the file when it is plain UTF-8 on a
filesystem that seeks, by decoding again from the start otherwise.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from memfit.data._files import Location
from memfit.errors import ConvertError

_CODECS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
_UTF8 = {"utf-8", "utf8", "ascii", "us-ascii"}
_SAMPLE_PIECES = 16
_SAMPLE_PIECE_BYTES = 1 << 18
_HEAD_SAMPLE_BYTES = 1 << 20


class CsvText:
    """The text of one CSV file: its header, its chunks, and any range of it again."""

    def __init__(self, location: Location, delimiter: str, encoding: str | None) -> None:
        self.location = location
        self.delimiter = delimiter
        self.encoding = _check_encoding(encoding or "utf-8")
        self.codec = next((_CODECS[s] for s in reversed(location.suffixes) if s in _CODECS), None)
        self.file_bytes = location.size()
        if self.file_bytes == 0:
            raise ConvertError(f"{location.name} is empty: a CSV needs at least a header line")
        self.random_access = self.codec is None and self.encoding in _UTF8
        self._raw: pa.NativeFile | None = None
        self._decoded = 0
        self.names, self.data_start = self._header()

    # ------------------------------------------------------------------ opening

    def _open(self, tracked: bool = False) -> pa.NativeFile:
        raw = None
        if tracked and self.location.seekable:
            raw = self.location.open_random()  # its position is the progress
        if raw is None:
            raw = self.location.open_sequential()
        if tracked:
            self._raw, self._decoded = raw, 0
        stream = raw
        if self.codec is not None:
            stream = pa.CompressedInputStream(raw, self.codec)
        if self.encoding not in _UTF8 and self.encoding != "utf-8-sig":
            stream = pa.transcoding_input_stream(stream, self.encoding, "utf-8")
        return stream

    def raw_position(self) -> int:
        """Bytes of the file itself read so far (compressed bytes for a compressed file)."""
        try:
            return int(self._raw.tell()) if self._raw is not None else 0
        except (OSError, pa.ArrowException):
            return self._decoded

    def parse_options(self, quoted: bool = True) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=quoted)

    def _header(self) -> tuple[list[str], int]:
        with self._open() as stream:
            head = self._read(stream, _HEAD_SAMPLE_BYTES)
            while True:
                end = record_end(head, 0, len(head))
                if end is not None or len(head) % _HEAD_SAMPLE_BYTES:
                    break
                more = self._read(stream, _HEAD_SAMPLE_BYTES)
                if not more:
                    break
                head += more
        bom = 3 if head.startswith(codecs.BOM_UTF8) else 0
        end = record_end(head, 0, len(head))
        line = head[bom : end if end is not None else len(head)]
        if not line.strip():
            raise ConvertError(
                f"{self.location.name} has no header line; a CSV needs column names first"
            )
        try:
            names = pacsv.read_csv(
                pa.py_buffer(line),
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=self.parse_options(),
            ).column_names
        except pa.ArrowInvalid as exc:
            raise ConvertError(
                f"cannot read the header of {self.location.name} ({_first_line(exc)}); "
                "check the delimiter (--delimiter) and the quoting"
            ) from exc
        if len(set(names)) != len(names):
            raise ConvertError(f"{self.location.name} has duplicate column names; rename them")
        return names, end if end is not None else len(head)

    def _read(self, stream, size: int) -> bytes:
        try:
            return stream.read(size)
        except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            raise self.read_error(exc) from exc

    def read_error(self, exc: BaseException) -> ConvertError:
        text = str(exc).lower()
        name = self.location.name
        if isinstance(exc, UnicodeDecodeError) or "decode" in text or "utf" in text:
            return ConvertError(
                f"{name} has bytes that are not valid {self.encoding} ({_first_line(exc)}); "
                "name the file's encoding with --encoding (for example latin-1 or cp1252)"
            )
        if self.codec is not None and (
            "truncated" in text or "inflate" in text or "corrupt" in text or "invalid" in text
        ):
            return ConvertError(
                f"{name} is a truncated or damaged {self.codec} file ({_first_line(exc)}); "
                "download or copy it again"
            )
        return ConvertError(f"cannot read {name} ({_first_line(exc)})")

    # ------------------------------------------------------------------ chunks

    def chunks(self, chunk_bytes: int) -> Iterator[tuple[int, int, bytes]]:
        """(start, stop, text) of consecutive chunks of records, about `chunk_bytes` each."""
        with self._open(tracked=True) as stream:
            self._skip(stream, self.data_start)
            position, pending = self.data_start, b""
            while True:
                more = self._read(stream, chunk_bytes)
                text = pending + more if pending else more
                if not more:
                    if text.strip():
                        yield position, position + len(text), text
                    return
                end = record_end(text, max(len(pending) - 1, 0), len(text), last=True)
                if end is None:  # one record longer than a chunk: read on
                    pending = text
                    continue
                yield position, position + end, text[:end]
                position += end
                self._decoded = position
                pending = text[end:]

    def _skip(self, stream, count: int) -> None:
        while count > 0:
            got = len(self._read(stream, min(count, 1 << 23)))
            if not got:
                return
            count -= got

    def read_range(self, start: int, stop: int) -> bytes:
        """The text between two chunk offsets, read again."""
        if self.random_access:
            with self.location.open_random() as handle:
                handle.seek(start)
                return self._read(handle, stop - start)
        with self._open() as stream:
            self._skip(stream, start)
            return self._read(stream, stop - start)

    def sample(self) -> list[bytes]:
        """Pieces of whole records from across the file (only its head when it cannot seek),
        to guess column types before the chunks are read."""
        pieces = []
        with self._open() as stream:
            self._skip(stream, self.data_start)
            head = self._read(stream, _HEAD_SAMPLE_BYTES)
        end = record_end(head, 0, len(head), last=True)
        head = head[:end] if end is not None else head
        if not head.strip():
            return []
        pieces.append(head)
        size = self.file_bytes
        if not self.random_access or size < 4 * _HEAD_SAMPLE_BYTES or not _SAMPLE_PIECES:
            return pieces
        with self.location.open_random() as handle:
            starts = np.linspace(_HEAD_SAMPLE_BYTES, size - _SAMPLE_PIECE_BYTES, _SAMPLE_PIECES)
            for start in starts.astype(np.int64):
                handle.seek(int(start))
                piece = self._read(handle, _SAMPLE_PIECE_BYTES)
                first = piece.find(b"\n") + 1
                last = piece.rfind(b"\n") + 1
                if 0 < first < last:
                    pieces.append(piece[first:last])
            handle.seek(max(size - _SAMPLE_PIECE_BYTES, 0))
            tail = self._read(handle, _SAMPLE_PIECE_BYTES)
            first = tail.find(b"\n") + 1
            if 0 < first < len(tail):
                pieces.append(tail[first:])
        return pieces


def record_end(text: bytes, start: int, stop: int, last: bool = False) -> int | None:
    """The offset just past the first (or, with `last`, the last) newline in text[start:stop]
    that ends a record, given that `text` begins outside quotes; None if there is none.

    Quotes are counted with `bytes.count` (C speed, nothing allocated): a candidate newline
    ends a record when the quotes before it are even in number, which is almost always
    the first candidate tried.
    """
    find = text.rfind if last else text.find
    newline = find(b"\n", start, stop)
    if text.find(b'"', 0, stop) < 0:
        return newline + 1 if newline >= 0 else None
    while newline >= 0:
        if text.count(b'"', 0, newline) % 2 == 0:
            return newline + 1
        newline = text.rfind(b"\n", start, newline) if last else text.find(b"\n", newline + 1, stop)
    return None


def _check_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name.replace("_", "-")
    except LookupError as exc:
        raise ConvertError(
            f"unknown encoding {encoding!r}; use a Python codec name such as utf-8, "
            "latin-1 or cp1252"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
