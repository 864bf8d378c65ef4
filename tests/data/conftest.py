"""Fixtures of the data tests: a generated CSV (numbers, text, dates, times, a late change)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest


def write_table_csv(path, rows: int, seed: int = 0, last_row: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 365 * 86400, rows)
    table = pa.table(
        {
            "id": np.arange(rows),
            "price": np.round(rng.gamma(2.0, 30.0, rows), 2),
            "count": pa.array(rng.poisson(4, rows), mask=rng.random(rows) < 0.05),
            "kind": np.array(["alpha", "beta", "gamma"])[rng.integers(0, 3, rows)],
            "note": np.char.add("note ", rng.integers(0, 10**9, rows).astype(str)),
            "day": pa.array((seconds // 86400 + 19723).astype(np.int32), pa.date32()),
            "clock": pa.array((seconds % 86400).astype(np.int32), pa.time32("s")),
            "at": pa.array(seconds + 1_704_067_200, pa.timestamp("s")),
        }
    )
    pacsv.write_csv(table, str(path), pacsv.WriteOptions(quoting_style="needed"))
    if last_row is not None:
        with open(path, "a") as out:
            out.write(last_row + "\n")


@pytest.fixture
def table_csv():
    """`table_csv(path, rows, seed=0, last_row=None)` writes a generated CSV."""
    return write_table_csv


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 kB, row groups of 50k rows at most and a head-only sample of 8 kB: a
    late change in a small file lands after rows already written with the guessed types,
    so the rewrite of earlier rows runs."""
    import memfit.data._convert_budget as budget
    import memfit.data._convert_pipeline as pipeline
    import memfit.data._convert_text as text

    monkeypatch.setattr(pipeline, "MAX_ROW_GROUP_ROWS", 50_000)
    monkeypatch.setattr(budget, "_MAX_CHUNK", 1 << 16)
    monkeypatch.setattr(budget, "_MIN_CHUNK", 1 << 16)
    monkeypatch.setattr(text, "_HEAD_SAMPLE_BYTES", 1 << 13)
    monkeypatch.setattr(text, "_SAMPLE_PIECES", 0)
