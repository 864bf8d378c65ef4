"""A generated CSV like the tables people convert: 14 columns of the usual kinds.

Every block is generated afresh (ids keep increasing, no block repeats another),
and the very last row turns two columns: `late` from whole numbers into a decimal
and `code` from integer codes into text. A reader that fixes its types from the
first rows fails on that row; one that decides over the whole file keeps it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

COLUMNS = [
    "order_id",
    "store",
    "price",
    "quantity",
    "discount",
    "kind",
    "comment",
    "at",
    "day",
    "clock",
    "flag",
    "lat",
    "code",
    "late",
]
LAST_ROW = b"0,1,1.0,,0.5,alpha,last,2024-01-01 00:00:00,2024-01-01,00:00:00,true,0.0,A7,0.5\n"
_BLOCK_ROWS = 250_000
_WORDS = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta"])


def _block(rng: np.random.Generator, first_id: int, rows: int) -> pa.Table:
    quantity = pa.array(rng.poisson(4, rows), mask=rng.random(rows) < 0.05)
    seconds = rng.integers(0, 365 * 86400, rows)
    return pa.table(
        {
            "order_id": np.arange(first_id, first_id + rows),
            "store": rng.integers(0, 300, rows),
            "price": np.round(rng.gamma(2.0, 30.0, rows), 2),
            "quantity": quantity,
            "discount": rng.choice([0.0, 0.25, 0.5, 0.125], rows),
            "kind": _WORDS[rng.integers(0, len(_WORDS), rows)],
            "comment": np.char.add("note ", rng.integers(0, 10**9, rows).astype(str)),
            "at": pa.array(seconds + 1_704_067_200, pa.timestamp("s")),
            "day": pa.array((seconds // 86400 + 19723).astype(np.int32), pa.date32()),
            "clock": pa.array((seconds % 86400).astype(np.int32), pa.time32("s")),
            "flag": rng.random(rows) < 0.3,
            "lat": rng.uniform(-90, 90, rows),
            "code": rng.integers(0, 10_000, rows),
            "late": rng.integers(0, 1000, rows),
        }
    )


def write_csv(path, size_bytes: int, seed: int = 0) -> int:
    """Write about `size_bytes` of CSV to `path`; return the number of data rows."""
    rng = np.random.default_rng(seed)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    rows = 0
    with open(path, "wb") as out:
        out.write((",".join(COLUMNS) + "\n").encode())
        while out.tell() < size_bytes - len(LAST_ROW):
            sink = pa.BufferOutputStream()
            pacsv.write_csv(_block(rng, rows, _BLOCK_ROWS), sink, options)
            body = sink.getvalue()
            left = size_bytes - len(LAST_ROW) - out.tell()
            if body.size > left:  # the last block is cut at a row end to fit the size
                cut = bytes(body[: max(left, 1)]).rfind(b"\n") + 1
                body = body[:cut]
            out.write(body)
            rows += bytes(body).count(b"\n")  # no quoted newlines in these values
            if body.size == 0:
                break
        out.write(LAST_ROW)
    return rows + 1
