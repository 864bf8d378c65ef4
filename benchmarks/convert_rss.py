"""Claim: `memfit convert` holds peak memory flat as the CSV grows, at >= half pyarrow's speed.

For each size, a CSV is generated in /tmp (ids, prices, counts with missing values,
categorical and free-text strings, timestamps, and a column that turns from whole
numbers to decimals in its very last row), then, each in a fresh child process with
MALLOC_MMAP_THRESHOLD_ set:

- memfit: `convert(csv, parquet, max_memory=...)` (two streaming passes + Parquet write);
- pyarrow read: `pyarrow.csv.read_csv` (the whole table in memory), for sizes up to
  --full-read-limit; above it only the streaming read is run;
- pyarrow stream: `pyarrow.csv.open_csv`, iterating over every batch (no writing); it
  is told the type of the late-changing column, or it fails on the last row.

Peak RSS is the child's own high-water mark (ru_maxrss). Files are deleted afterwards.

    python benchmarks/convert_rss.py                      # 100MB, 1GB, 5GB
    python benchmarks/convert_rss.py --sizes 20MB,100MB   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from memfit.budget import Budget

CHILD = r"""
import json, resource, sys, time
kind, src, dst, budget = sys.argv[1:5]
start = time.perf_counter()
rows = 0
if kind == "memfit":
    from memfit.data.convert import convert
    rows = convert(src, dst, max_memory=budget).rows
elif kind == "pyarrow_read":
    import pyarrow.csv
    rows = pyarrow.csv.read_csv(src).num_rows
else:
    import pyarrow as pa, pyarrow.csv
    # Told the type of `late`: inferred from the first block it fails on the last row.
    hint = pyarrow.csv.ConvertOptions(column_types={"late": pa.float64()})
    for batch in pyarrow.csv.open_csv(src, convert_options=hint):
        rows += batch.num_rows
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rows": rows, "seconds": seconds, "peak": peak}))
"""


def make_csv(path: Path, size_bytes: int) -> int:
    """Write a CSV of about `size_bytes`: one generated block repeated, then a final odd row."""
    rng = np.random.default_rng(0)
    rows = 200_000
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta"])
    quantity = rng.poisson(4, rows).astype(float)
    quantity[rng.random(rows) < 0.05] = np.nan
    block = pd.DataFrame(
        {
            "order_id": np.arange(rows),
            "store": rng.integers(0, 300, rows),
            "price": np.round(rng.gamma(2.0, 30.0, rows), 2),
            "quantity": quantity,
            "kind": words[rng.integers(0, len(words), rows)],
            "comment": np.char.add("note ", rng.integers(0, 10**9, rows).astype(str)),
            "at": (
                pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**7, rows), unit="s")
            ).astype(str),
            "late": rng.integers(0, 1000, rows),
        }
    )
    body = block.to_csv(index=False, header=False).encode()
    header = (",".join(block.columns) + "\n").encode()
    total_rows = 0
    with open(path, "wb") as out:
        out.write(header)
        written = len(header)
        while written + len(body) <= max(size_bytes, len(body)):
            out.write(body)
            written += len(body)
            total_rows += rows
        # The last row turns `late` into decimals: a first-block schema would fail here.
        out.write(b"0,1,1.0,,alpha,last,2024-01-01 00:00:00,0.5\n")
    return total_rows + 1


def run_child(kind: str, src: Path, dst: Path, budget: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(src), str(dst), budget],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"{kind} failed: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100MB,1GB,5GB")
    parser.add_argument("--max-memory", default="512MB")
    parser.add_argument(
        "--full-read-limit", default="1GB", help="largest file read whole by pyarrow.csv.read_csv"
    )
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    sizes = [Budget.parse(s).bytes for s in args.sizes.split(",")]
    full_limit = Budget.parse(args.full_read_limit).bytes
    folder = Path(tempfile.mkdtemp(prefix="memfit-convert-bench-", dir=args.dir))
    results = []
    try:
        for size in sizes:
            src, dst = folder / f"data_{size}.csv", folder / f"data_{size}.parquet"
            rows = make_csv(src, size)
            file_bytes = src.stat().st_size
            row = {"size": file_bytes, "rows": rows}
            row["memfit"] = run_child("memfit", src, dst, args.max_memory)
            row["parquet"] = dst.stat().st_size
            dst.unlink()
            row["stream"] = run_child("pyarrow_stream", src, dst, args.max_memory)
            if size <= full_limit:
                row["read"] = run_child("pyarrow_read", src, dst, args.max_memory)
            src.unlink()
            assert row["memfit"]["rows"] == rows == row["stream"]["rows"]
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    report(results, args)


def report(results: list[dict], args) -> None:
    mb = 1e6
    table = Table(
        title=f"memfit convert (--max-memory {args.max_memory}) vs pyarrow, {os.cpu_count()} cores"
    )
    for col in (
        "CSV MB",
        "rows",
        "memfit peak MB",
        "peak vs smallest",
        "memfit MB/s",
        "read_csv MB/s",
        "read_csv peak MB",
        "open_csv MB/s",
        "memfit / read_csv",
        "memfit / open_csv",
        "Parquet MB",
    ):
        table.add_column(col, justify="right")
    first_peak = results[0]["memfit"]["peak"]
    for r in results:
        size = r["size"]
        ours = size / r["memfit"]["seconds"]
        stream = size / r["stream"]["seconds"]
        read = size / r["read"]["seconds"] if "read" in r else None
        table.add_row(
            f"{size / mb:,.0f}",
            f"{r['rows']:,}",
            f"{r['memfit']['peak'] / mb:,.0f}",
            f"{r['memfit']['peak'] / first_peak - 1:+.1%}",
            f"{ours / mb:.0f}",
            f"{read / mb:.0f}" if read else "-",
            f"{r['read']['peak'] / mb:,.0f}" if read else "-",
            f"{stream / mb:.0f}",
            f"{ours / read:.2f}" if read else "-",
            f"{ours / stream:.2f}",
            f"{r['parquet'] / mb:,.0f}",
        )
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
