"""Convert a CSV (plain or compressed, local or remote) or Parquet file to a shrunk Parquet file.

    memfit convert big.csv.gz big.parquet --max-memory 256MB

One optimistic pass, on every core:

1. a sample from across the file (its head, evenly spaced pieces and its tail,
   when the file can seek) guesses each column's type;
2. the file is cut into chunks that end on record boundaries, parsed in parallel
   with the types guessed so far (a chunk that does not fit widens its column and
   is parsed again), and each chunk's statistics are merged in file order;
3. chunks are cast to the smallest faithful types the statistics allow and written
   as row groups; should a later chunk need a wider type than the rows already
   written, those rows are rewritten with it, so a column whose first decimal or
   first text comes in the last row still gets one type that holds every value;
4. the schema readers get (category or string, nullable or not, pandas metadata so
   `pandas.read_parquet` gives back uint8, UInt16, category...) is stored at the end.

The output is written under a temporary name in the destination folder and renamed
only when the row count matches the input's (see `_convert_output` for signals and
what a SIGKILL leaves).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from memfit import progress as progress_display
from memfit.budget import Budget
from memfit.data._callable_module import make_module_callable
from memfit.data._convert_budget import ConvertBudget
from memfit.data._convert_columns import output_schema
from memfit.data._convert_memory import returning_memory
from memfit.data._convert_output import (
    PartialParquet,
    check_compression,
    remove_stale_partials,
    termination_raises,
)
from memfit.data._convert_pipeline import CsvPipeline, ParquetPipeline
from memfit.data._files import check_output_folder, is_url, locate
from memfit.data.shrink import ColumnReport
from memfit.errors import ConvertError

DEFAULT_MAX_MEMORY = "512MB"
"""The command line's default bound on the whole process."""
DEFAULT_WORKING_MEMORY = 256 * 10**6
"""The library's default: memory for the conversion on top of what the process holds."""


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
    """Bytes of text (or of Parquet data) parsed as one chunk."""
    seconds: float
    compression: str = "zstd"
    row_groups: int = 0
    rewritten_rows: int = 0
    """Rows written twice because a later chunk widened a column (0 when the guess held)."""
    workers: int = 1
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
            "compression": self.compression,
            "row_groups": int(self.row_groups),
            "rewritten_rows": int(self.rewritten_rows),
            "workers": int(self.workers),
            "columns": [c.to_dict() for c in self.columns],
        }


@returning_memory()
def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike | None = None,
    *,
    max_memory: str | int | Budget | None = None,
    shrink: bool = True,
    delimiter: str = ",",
    encoding: str | None = None,
    compression: str = "zstd",
    compression_level: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> ConvertResult:
    """Stream `source` (CSV, CSV.gz/.bz2/.zst or Parquet; a path or an fsspec URL such as
    `s3://bucket/key.csv`) into a shrunk Parquet `destination`.

    With `destination=None` nothing is written: the result reports the sizes only.
    `max_memory` bounds this process's whole memory (the command line's `--max-memory`);
    left out, the conversion gets `DEFAULT_WORKING_MEMORY` on top of what the process
    already holds, so a long-running program can convert without knowing its own size.
    `encoding` names the text's encoding (default UTF-8). `progress(done, total)` is
    called with bytes of the input file read. `workers` parse in parallel (default:
    the cores this process may use, as many as the memory bound allows).

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
    location = locate(source, ConvertError)
    file_bytes = location.size()
    out = _check_destination(destination, location)
    compression, compression_level = check_compression(compression, compression_level)
    budget = ConvertBudget.for_process(max_memory, DEFAULT_WORKING_MEMORY, workers)
    parquet_input = location.suffixes[-1:] in ([".parquet"], [".pq"])
    if parquet_input:
        pipeline = ParquetPipeline(location, budget, shrink)
    else:
        pipeline = CsvPipeline(location, budget, shrink, delimiter, encoding)
    writer = None
    if out is not None:
        remove_stale_partials(out.parent)
        writer = PartialParquet(out, compression, compression_level, pipeline.dictionary_columns)
    label = f"{'converting' if out is not None else 'reading'} {location.name}"
    try:
        with termination_raises(), progress_display.task(label, total=file_bytes) as bar:

            def report(done: int) -> None:
                done = min(done, file_bytes)
                bar.update(completed=done)
                if progress is not None:
                    progress(done, file_bytes)

            with ThreadPoolExecutor(budget.workers, thread_name_prefix="memfit-convert") as pool:
                targets = pipeline.run(pool, writer, report)
            report(file_bytes)
            output_bytes = None
            if writer is not None:
                output_bytes = writer.finish(output_schema(targets), pipeline.rows)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    rows = pipeline.rows
    index_bytes = int(pd.RangeIndex(rows).memory_usage(deep=True))
    columns = [
        ColumnReport(t.name, t.old_dtype, t.new_dtype, t.before_bytes, t.after_bytes)
        for t in targets
    ]
    return ConvertResult(
        source=str(source),
        destination=None if out is None else str(destination),
        rows=rows,
        before_bytes=index_bytes + sum(t.before_bytes for t in targets),
        after_bytes=index_bytes + sum(t.after_bytes for t in targets),
        columns=columns,
        input_file_bytes=file_bytes,
        output_file_bytes=output_bytes,
        block_bytes=budget.chunk_bytes,
        seconds=time.perf_counter() - start,
        compression=compression,
        row_groups=writer.row_groups if writer is not None else 0,
        rewritten_rows=writer.rewritten_rows if writer is not None else 0,
        workers=budget.workers,
    )


def _check_destination(destination, location) -> Path | None:
    if destination is None:
        return None
    if is_url(destination):
        raise ConvertError(
            f"output {destination} is a URL: write to a local .parquet file, then upload it"
        )
    out = Path(destination)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise ConvertError(
            f"output {out.name} must end in .parquet: only Parquet keeps the shrunk dtypes"
        )
    if out.is_dir():
        raise ConvertError(f"output {str(out)!r} is a folder; name a .parquet file inside it")
    check_output_folder(out.absolute().parent, ConvertError)
    if not is_url(location.text) and out.absolute() == Path(location.path):
        raise ConvertError("the output file is the input file; name a different output")
    return out.absolute()


make_module_callable(__name__, convert)
