"""Claim: `memfit convert` is as fast as polars given the right types, inside its memory bound,
and the only one that survives a late type change on its own.

For each size a CSV is generated (benchmarks/_generated_csv.py: 14 columns, ids, prices,
counts with missing values, categories, free text, timestamps, dates, times, booleans;
in the very last row `late` turns from whole numbers to a decimal and `code` from
integer codes to text). Each tool then runs in its own child process:

- memfit `convert(csv, parquet, max_memory=...)`;
- polars `scan_csv().sink_parquet()` as it comes, and with every column's type given by
  hand (the fair baseline: its default fails on the last row);
- DuckDB `COPY (SELECT * FROM read_csv(...)) TO ... (FORMAT parquet)` as it comes, and
  with the two late columns' types given;
- pyarrow `open_csv` + `ParquetWriter` as it comes, and with the two types given.

Peak RSS is the child's VmHWM read from /proc as it finishes (the kernel's high-water
mark of its own address space; a forked child's ru_maxrss would count the parent).
"values changed" compares each output with memfit's, column by column, after casting
both to the baseline's types (for files up to --check-limit). Files are deleted.

    python benchmarks/convert_rss.py                      # 100MB, 1GB, 5GB
    python benchmarks/convert_rss.py --sizes 100MB        # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _generated_csv import write_csv  # noqa: E402

from memfit.budget import Budget  # noqa: E402

CHILD = r"""
import json, sys, time
tool, src, dst, budget = sys.argv[1:5]
start = time.perf_counter()
error = None
try:
    if tool == "memfit":
        from memfit.data.convert import convert
        convert(src, dst, max_memory=budget)
    elif tool.startswith("polars"):
        import polars as pl
        schema = None
        if tool == "polars_typed":
            schema = {
                "order_id": pl.UInt32, "store": pl.UInt16, "price": pl.Float64,
                "quantity": pl.UInt8, "discount": pl.Float32, "kind": pl.Categorical,
                "comment": pl.String, "at": pl.Datetime("ns"), "day": pl.Date,
                "clock": pl.Time, "flag": pl.Boolean, "lat": pl.Float64,
                "code": pl.String, "late": pl.Float32,
            }
        pl.scan_csv(src, schema=schema).sink_parquet(dst)
    elif tool.startswith("duckdb"):
        import duckdb
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{budget}'")
        con.execute("SET enable_progress_bar = false")
        types = ", types = {'code': 'VARCHAR', 'late': 'DOUBLE'}" if tool == "duckdb_typed" else ""
        con.execute(
            f"COPY (SELECT * FROM read_csv('{src}'{types})) TO '{dst}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )
    else:
        import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
        types = {"code": pa.string(), "late": pa.float64()} if tool == "pyarrow_typed" else {}
        reader = pacsv.open_csv(src, convert_options=pacsv.ConvertOptions(column_types=types))
        with pq.ParquetWriter(dst, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
except Exception as exc:
    error = str(exc).strip().splitlines()[0][:80]
seconds = time.perf_counter() - start
status = open("/proc/self/status").read()
peak = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "error": error}))
"""

TOOLS = (
    "memfit",
    "polars_typed",
    "polars",
    "duckdb_typed",
    "duckdb",
    "pyarrow_typed",
    "pyarrow",
)
LABELS = {
    "memfit": "memfit convert",
    "polars_typed": "polars, types by hand",
    "polars": "polars scan_csv",
    "duckdb_typed": "DuckDB, 2 types by hand",
    "duckdb": "DuckDB read_csv",
    "pyarrow_typed": "pyarrow, 2 types by hand",
    "pyarrow": "pyarrow open_csv",
}


def run_child(tool: str, src: Path, dst: Path, budget: str) -> dict:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, tool, str(src), str(dst), budget],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return {"seconds": float("nan"), "peak": 0, "error": out.stderr.strip()[-80:]}
    line = [x for x in out.stdout.splitlines() if x.startswith('{"seconds"')][-1]
    return json.loads(line)


def changed_values(reference: Path, other: Path) -> int:
    """Values that differ from memfit's output, both read as the baseline's column types."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # Both files whole in memory: this is why values are compared up to --check-limit only.
    ours = pq.read_table(reference)
    theirs = pq.read_table(other)
    changed = 0
    for name in ours.column_names:
        a, b = ours.column(name), theirs.column(name)
        if pa_is_dictionary(a.type):
            a = a.cast(a.type.value_type)
        if pa_is_dictionary(b.type):
            b = b.cast(b.type.value_type)
        a, b = a.cast(b.type) if a.type != b.type else a, b
        same = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        changed += len(a) - pc.sum(pc.or_(same, both_null)).as_py()
    return int(changed)


def pa_is_dictionary(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_dictionary(arrow_type)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100MB,1GB,5GB")
    parser.add_argument("--max-memory", default="512MB")
    parser.add_argument(
        "--check-limit", default="1.1GB", help="largest file whose values are compared"
    )
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    sizes = [Budget.parse(s).bytes for s in args.sizes.split(",")]
    check_limit = Budget.parse(args.check_limit).bytes
    folder = Path(tempfile.mkdtemp(prefix="memfit-convert-bench-", dir=args.dir))
    results = []
    try:
        for size in sizes:
            src = folder / f"data_{size}.csv"
            rows = write_csv(src, size)
            row = {"size": src.stat().st_size, "rows": rows, "tools": {}}
            outputs = {}
            for tool in TOOLS:
                dst = folder / f"{tool}.parquet"
                result = run_child(tool, src, dst, args.max_memory)
                result["parquet"] = (
                    dst.stat().st_size if dst.exists() and not result["error"] else None
                )
                row["tools"][tool] = result
                if result["parquet"]:
                    outputs[tool] = dst
                print(json.dumps({"size": row["size"], tool: result}), flush=True)
            if row["size"] <= check_limit and "memfit" in outputs:
                for tool, path in outputs.items():
                    if tool != "memfit":
                        row["tools"][tool]["changed"] = changed_values(outputs["memfit"], path)
                row["tools"]["memfit"]["changed"] = 0 if "polars_typed" in outputs else None
            for path in outputs.values():
                path.unlink()
            src.unlink()
            results.append(row)
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    report(results, args)


def report(results: list[dict], args) -> None:
    mb = 1e6
    for r in results:
        table = Table(
            title=f"{r['size'] / mb:,.0f} MB CSV, {r['rows']:,} rows, 14 columns "
            f"(memfit --max-memory {args.max_memory}), {os.cpu_count()} cores"
        )
        for col in (
            "tool",
            "seconds",
            "memfit speed / tool's",
            "peak RSS MB",
            "Parquet MB",
            "values differing from memfit's",
            "late type change",
        ):
            table.add_column(
                col, justify="left" if col in ("tool", "late type change") else "right"
            )
        ours = r["tools"]["memfit"]["seconds"]
        for tool in TOOLS:
            t = r["tools"][tool]
            failed = t["error"] is not None
            table.add_row(
                LABELS[tool],
                "-" if failed else f"{t['seconds']:.1f}",
                "-" if failed else f"{t['seconds'] / ours:.2f}x",
                f"{t['peak'] / mb:,.0f}",
                "-" if not t["parquet"] else f"{t['parquet'] / mb:,.0f}",
                "-" if t.get("changed") is None else f"{t['changed']:,}",
                f"fails: {t['error']}" if failed else "kept",
            )
        Console(width=200).print(table)
    print(
        "memfit speed / tool's: the tool's seconds over memfit's (above 1.00x: memfit is faster). "
        "Values are compared as the other tool's types (a category read as its text)."
    )


if __name__ == "__main__":
    main()
