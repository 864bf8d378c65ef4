"""Parse one chunk of CSV text with the types the columns have so far, widening where needed.

pyarrow parses a chunk with the types it is given and stops at the first value
that does not convert, naming the column. That column is read again as text, the
narrowest kind holding every value of the chunk is found (`ColumnStats.kind_of_text`),
and the chunk goes on with it: a late decimal or a late word costs one more parse
of one chunk, not a failed conversion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv

from memfit.data._convert_columns import READ_TYPES, ColumnStats
from memfit.data._convert_text import CsvText
from memfit.errors import ConvertError

_COLUMN = re.compile(r"CSV column #(\d+)")


@dataclass(slots=True)
class ParsedChunk:
    """One chunk: its place in the text, its columns, and their statistics."""

    start: int
    stop: int
    table: pa.Table
    kinds: list[str]
    stats: list[ColumnStats]
    dictionary: set[int]
    """Columns parsed straight into dictionaries (a category is expected)."""


def read_types(kinds: list[str], dictionary: set[int]) -> list[pa.DataType]:
    types = []
    for i, kind in enumerate(kinds):
        if kind == "string" and i in dictionary:
            types.append(pa.dictionary(pa.int32(), pa.large_string()))
        else:
            types.append(READ_TYPES[kind])
    return types


def parse_text(
    text: CsvText, data: bytes, names: list[str], kinds: list[str], dictionary: set[int]
) -> tuple[pa.Table, list[str]]:
    """`data` parsed with `kinds` (widened where a value does not fit), and the kinds used."""
    kinds = list(kinds)
    if not data or (len(data) < 4096 and not bytes(data).strip()):
        return pa.table(
            {n: pa.array([], READ_TYPES[k]) for n, k in zip(names, kinds, strict=True)}
        ), kinds
    quoted = b'"' in data
    while True:
        types = read_types(kinds, dictionary)
        try:
            table = _read(text, data, names, dict(zip(names, types, strict=True)), quoted)
        except pa.ArrowInvalid as exc:
            found = _COLUMN.search(str(exc))
            if found is None or "conversion error" not in str(exc):
                raise _parse_error(text, exc) from exc
            column = int(found.group(1))
            if kinds[column] == "string":
                raise _parse_error(text, exc) from exc
            strings = dict(zip(names, types, strict=True))
            strings[names[column]] = pa.large_string()
            as_text = _read(text, data, names, strings, quoted, only=[names[column]])
            kind, _ = ColumnStats(names[column], kinds[column]).kind_of_text(
                as_text.column(0).combine_chunks()
            )
            if kind == kinds[column]:  # pyarrow and pyarrow.compute disagree: keep the text
                kind = "string"
            kinds[column] = kind
            continue
        return table, kinds


def _read(text: CsvText, data: bytes, names, types, quoted: bool, only=None) -> pa.Table:
    try:
        return pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 20)
            ),
            parse_options=text.parse_options(quoted),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=only,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
            raise text.read_error(UnicodeError(str(exc))) from exc
        raise


def text_column(text: CsvText, start: int, stop: int, names: list[str], name: str) -> pa.Array:
    """Column `name` of the records in text[start:stop], read again as text."""
    data = text.read_range(start, stop)
    types = {name: pa.large_string()}
    table = _read(text, data, names, types, b'"' in data, only=[name])
    return table.column(0).combine_chunks()


def _parse_error(text: CsvText, exc: BaseException) -> ConvertError:
    message = str(exc).strip().splitlines()[0]
    return ConvertError(
        f"{text.location.name}: {message}; the file may be malformed (unbalanced quotes, "
        "ragged rows) or use another delimiter (--delimiter)"
    )
