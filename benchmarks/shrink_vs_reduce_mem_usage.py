"""Claim: memfit.data.shrink beats the popular `reduce_mem_usage` on memory, exactness and time,
and comes near polars' `shrink_dtype` on the same frame in time and peak memory while
changing no value (both ratios printed; `strings=False` leaves strings as shrink_dtype does).

Peak memory: each method runs once more on each generated table in a child process of its
own; the figure is the child's RSS high-water mark (VmHWM, reset through
/proc/self/clear_refs once the table is built and the method has run once on its first
1,000 rows, which loads what any first call loads) less its RSS just before the call, so
the input is not counted and everything the call holds at its peak, its result included, is.

Baselines: a faithful re-implementation of the `reduce_mem_usage` copied in many Kaggle
notebooks (strict range checks, float16 first, every string column to category, memory
measured shallow; its one change: it skips datetime columns, on which the original
crashes), and polars' `Series.shrink_dtype` over every column on the same table as a polars frame
(values changed counted by casting back to the input's types). Tables: generated
realistic ones (ids, prices, counts with NaN, categorical and high-cardinality strings,
timestamps) and scikit-learn's bundled data sets.

    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/shrink_vs_reduce_mem_usage.py \
        [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from rich.console import Console
from rich.table import Table

from memfit.data import shrink


def reduce_mem_usage(df: pd.DataFrame) -> pd.DataFrame:
    """The popular version, as copied: mutates `df` and returns it."""
    for col in df.columns:
        col_type = df[col].dtype
        if ptypes.is_object_dtype(col_type) or ptypes.is_string_dtype(col_type):
            df[col] = df[col].astype("category")
            continue
        if not ptypes.is_numeric_dtype(col_type) or ptypes.is_bool_dtype(col_type):
            continue
        c_min, c_max = df[col].min(), df[col].max()
        if str(col_type)[:3] == "int":
            for t in (np.int8, np.int16, np.int32, np.int64):
                if c_min > np.iinfo(t).min and c_max < np.iinfo(t).max:
                    df[col] = df[col].astype(t)
                    break
        else:
            for t in (np.float16, np.float32, np.float64):
                if c_min > np.finfo(t).min and c_max < np.finfo(t).max:
                    df[col] = df[col].astype(t)
                    break
    return df


def changed_values(old: pd.Series, new: pd.Series) -> int:
    """Values that differ, counted independently of memfit's own check."""
    old_missing, new_missing = old.isna().to_numpy(), new.isna().to_numpy()
    flipped = int((old_missing != new_missing).sum())
    keep = ~(old_missing | new_missing)
    if (
        ptypes.is_numeric_dtype(old.dtype)
        and ptypes.is_numeric_dtype(new.dtype)
        and not isinstance(new.dtype, pd.CategoricalDtype)
    ):
        a = old.to_numpy(dtype=np.float64, na_value=np.nan)[keep]
        b = new.to_numpy(dtype=np.float64, na_value=np.nan)[keep]
        return flipped + int((a != b).sum())
    a = old.to_numpy(dtype=object)[keep]
    b = new.to_numpy(dtype=object)[keep]
    return flipped + int((a != b).sum())


def look_up_once(df: pd.DataFrame) -> None:
    """Compare each categorical column with one value, as any filter, map or merge would.

    pandas builds a hash table over a categorical's categories on the first lookup; for
    a high-cardinality column it can double the column's memory, and a measurement
    taken before any use misses it.
    """
    for name in df.columns:
        if isinstance(df[name].dtype, pd.CategoricalDtype) and len(df[name]):
            _ = df[name] == df[name].iloc[0]


def generated_tables(rows: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    words = np.array([f"category_{i}" for i in range(40)])
    quantity = rng.poisson(3, rows).astype(float)
    quantity[rng.random(rows) < 0.1] = np.nan
    sales = pd.DataFrame(
        {
            "order_id": np.arange(rows, dtype=np.int64) + 10_000_000,
            "store_id": rng.integers(0, 120, rows),
            "price": np.round(rng.gamma(2.0, 30.0, rows), 2),
            "quantity": quantity,
            "discount": rng.choice([0.0, 0.5, 0.25, 0.125], rows),
            "category": words[rng.integers(0, len(words), rows)],
            "sku": np.char.add("SKU-", rng.integers(0, rows, rows).astype(str)),
            "ordered_at": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 365 * 86400, rows), unit="s"),
        }
    )
    events = pd.DataFrame(
        {
            "user_id": rng.integers(0, 5_000_000_000, rows),
            "lat": rng.uniform(-90, 90, rows),
            "lon": rng.uniform(-180, 180, rows),
            "clicks": rng.integers(0, 40_000, rows),
            "event": pd.Series(rng.choice(["view", "click", "buy", "leave"], rows), dtype=object),
            "session": pd.Series(
                np.char.add("s", rng.integers(0, rows // 2, rows).astype(str)), dtype=object
            ),
            "is_mobile": rng.random(rows) < 0.6,
        }
    )
    return {"sales (generated)": sales, "events (generated)": events}


def sklearn_tables() -> dict[str, pd.DataFrame]:
    from sklearn import datasets

    tables = {}
    for name in ("iris", "wine", "breast_cancer", "digits"):
        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        tables[f"{name} (sklearn)"] = bunch.frame
    return tables


def measure(name: str, df: pd.DataFrame, repeat: int) -> dict:
    seed_times, memfit_times = [], []
    for _ in range(repeat):
        copy = df.copy()
        start = time.perf_counter()
        seed_out = reduce_mem_usage(copy)
        seed_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = shrink(df)
        memfit_times.append(time.perf_counter() - start)
    ours = result.frame
    before = df.memory_usage(deep=True, index=False)
    at_return = (
        int(seed_out.memory_usage(deep=True, index=False).sum()),
        int(ours.memory_usage(deep=True, index=False).sum()),
    )
    look_up_once(seed_out)
    look_up_once(ours)
    seed_after = seed_out.memory_usage(deep=True, index=False)
    ours_after = ours.memory_usage(deep=True, index=False)
    seed_changed = {c: changed_values(df[c], seed_out[c]) for c in df.columns}
    ours_changed = sum(changed_values(df[c], ours[c]) for c in df.columns)
    with_float16 = shrink(df, float16=True).frame
    look_up_once(with_float16)
    ours_changed += sum(changed_values(df[c], with_float16[c]) for c in df.columns)
    eligible = [c for c in df.columns if seed_changed[c] == 0]
    return {
        "table": name,
        "rows": len(df),
        "before": int(before.sum()),
        "seed_after": int(seed_after.sum()),
        "ours_after": int(ours_after.sum()),
        "seed_at_return": at_return[0],
        "ours_at_return": at_return[1],
        "ours_f16_after": int(with_float16.memory_usage(deep=True, index=False).sum()),
        "seed_eligible_after": int(seed_after[eligible].sum()),
        "ours_eligible_after": int(ours_after[eligible].sum()),
        "eligible_before": int(before[eligible].sum()),
        "seed_changed": sum(seed_changed.values()),
        "ours_changed": ours_changed,
        "seed_s": min(seed_times),
        "ours_s": min(memfit_times),
    }


def polars_changed(old, new) -> int:
    """Values of a polars frame that differ after shrink_dtype (nulls compared as values)."""
    changed = 0
    for name in old.columns:
        a, b = old[name], new[name]
        if b.dtype != a.dtype:
            b = b.cast(a.dtype, strict=False)
        if a.dtype.is_float():  # bit for bit, as memfit's own check: -0.0 and NaN payloads count
            nulls = a.is_null().to_numpy() != b.is_null().to_numpy()
            x, y = a.fill_null(0).to_numpy(), b.fill_null(0).to_numpy()
            unsigned = f"u{x.dtype.itemsize}"
            changed += int((nulls | (x.view(unsigned) != y.view(unsigned))).sum())
            continue
        changed += int((~a.eq_missing(b)).sum())
    return changed


def measure_polars(name: str, df: pd.DataFrame, repeat: int) -> dict:
    import polars as pl

    frame = pl.from_pandas(df)
    theirs, ours_pl, ours_pd, ours_numbers = [], [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        shrunk = pl.DataFrame([column.shrink_dtype() for column in frame.get_columns()])
        theirs.append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = shrink(frame)
        ours_pl.append(time.perf_counter() - start)
        start = time.perf_counter()
        shrink(df)
        ours_pd.append(time.perf_counter() - start)
        start = time.perf_counter()  # strings left as they are, as shrink_dtype leaves them
        shrink(frame, strings=False)
        ours_numbers.append(time.perf_counter() - start)
    return {
        "table": name,
        "before": int(frame.estimated_size()),
        "polars_after": int(shrunk.estimated_size()),
        "ours_after": int(ours.frame.estimated_size()),
        "polars_changed": polars_changed(frame, shrunk),
        "ours_changed": polars_changed(frame, ours.frame),
        "polars_s": min(theirs),
        "ours_pl_s": min(ours_pl),
        "ours_pd_s": min(ours_pd),
        "ours_numbers_s": min(ours_numbers),
    }


def print_polars(rows: list[dict], args) -> None:
    import polars as pl

    mb = 1e6
    table = Table(
        title=f"shrink vs polars shrink_dtype (polars {pl.__version__}, {args.rows:,} generated "
        f"rows, best of {args.repeat}; sizes: polars estimated_size)"
    )
    for col in (
        "table",
        "before MB",
        "polars MB",
        "memfit MB",
        "polars changed",
        "memfit changed",
        "polars s",
        "memfit s (polars frame)",
        "memfit s (pandas frame)",
        "memfit s / polars s (polars frame)",
        "memfit s, strings=False (polars frame)",
        "memfit s, strings=False / polars s",
    ):
        table.add_column(col, justify="left" if col == "table" else "right")
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k != "table"}
    for r in [*rows, {**total, "table": "all"}]:
        table.add_row(
            r["table"],
            f"{r['before'] / mb:.2f}",
            f"{r['polars_after'] / mb:.2f}",
            f"{r['ours_after'] / mb:.2f}",
            f"{r['polars_changed']:,}",
            f"{r['ours_changed']:,}",
            f"{r['polars_s']:.3f}",
            f"{r['ours_pl_s']:.3f}",
            f"{r['ours_pd_s']:.3f}",
            f"{r['ours_pl_s'] / max(r['polars_s'], 1e-9):.2f}x",
            f"{r['ours_numbers_s']:.3f}",
            f"{r['ours_numbers_s'] / max(r['polars_s'], 1e-9):.2f}x",
        )
    Console(width=230).print(table)


RSS_METHODS = ("reduce_mem_usage", "memfit (pandas)", "polars shrink_dtype", "memfit (polars)")


def call(method: str, frame):
    if method == "reduce_mem_usage":
        return reduce_mem_usage(frame)  # in place, as it is used: df = reduce_mem_usage(df)
    if method == "polars shrink_dtype":
        import polars as pl

        return pl.DataFrame([column.shrink_dtype() for column in frame.get_columns()])
    return shrink(frame).frame


def rss_child(method: str, table: str, rows: int) -> None:
    """Run one method on one table and print the peak RSS it added, as JSON."""
    import polars as pl

    from memfit.measure.process import (
        current_rss_bytes,
        peak_rss_bytes,
        release_free_memory,
        reset_peak_rss,
    )

    frame = generated_tables(rows)[table]
    if "polars" in method:
        frame = pl.from_pandas(frame)
    call(method, frame.head(1000).clone() if "polars" in method else frame.head(1000).copy())
    gc.collect()  # the warm-up above loaded what a first call loads: not the table's cost
    release_free_memory()
    before = current_rss_bytes()
    if not reset_peak_rss():
        raise SystemExit("peak RSS cannot be reset here (/proc/self/clear_refs)")
    out = call(method, frame)
    peak = peak_rss_bytes() - before
    print(json.dumps({"peak": peak, "columns": len(out.columns)}))


def measure_rss(tables: list[str], rows: int) -> dict[str, dict[str, int]]:
    peaks: dict[str, dict[str, int]] = {}
    for table in tables:
        peaks[table] = {}
        for method in RSS_METHODS:
            child = [sys.executable, __file__, "--rss-child", method, table, "--rows", str(rows)]
            done = subprocess.run(child, capture_output=True, text=True, env=os.environ)
            if done.returncode:
                raise SystemExit(f"{method} on {table} failed:\n{done.stderr}")
            peaks[table][method] = json.loads(done.stdout.strip().splitlines()[-1])["peak"]
    return peaks


def print_rss(peaks: dict[str, dict[str, int]], args) -> None:
    mb = 1e6
    table = Table(
        title=f"peak RSS added by one call (MB, {args.rows:,} generated rows; child processes)"
    )
    for col in (
        "table",
        *RSS_METHODS,
        "memfit / reduce_mem_usage (pandas)",
        "memfit / shrink_dtype (polars)",
    ):
        table.add_column(col, justify="left" if col == "table" else "right")
    total = {m: sum(p[m] for p in peaks.values()) for m in RSS_METHODS}
    for name, p in [*peaks.items(), ("all", total)]:
        table.add_row(
            name,
            *(f"{p[m] / mb:.1f}" for m in RSS_METHODS),
            f"{p['memfit (pandas)'] / max(p['reduce_mem_usage'], 1):.2f}x",
            f"{p['memfit (polars)'] / max(p['polars shrink_dtype'], 1):.2f}x",
        )
    Console(width=190).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-child", nargs=2, metavar=("METHOD", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child, args.rows)
        return
    tables = {**generated_tables(args.rows), **sklearn_tables()}
    rows = [measure(name, df, args.repeat) for name, df in tables.items()]
    mb = 1e6
    table = Table(
        title=f"shrink vs reduce_mem_usage (pandas {pd.__version__}, {args.rows:,} "
        f"generated rows, best of {args.repeat})"
    )
    for col in (
        "table",
        "before MB",
        "seed MB at return / in use",
        "memfit MB at return / in use",
        "memfit float16=True MB in use",
        "eligible cols seed/memfit",
        "seed changed",
        "memfit changed",
        "seed s",
        "memfit s",
        "speedup",
    ):
        table.add_column(col, justify="left" if col == "table" else "right")
    total = {k: sum(r[k] for r in rows) for k in rows[0] if k != "table"}
    for r in [*rows, {**total, "table": "all"}]:
        table.add_row(
            r["table"],
            f"{r['before'] / mb:.2f}",
            f"{r['seed_at_return'] / mb:.2f} / {r['seed_after'] / mb:.2f}",
            f"{r['ours_at_return'] / mb:.2f} / {r['ours_after'] / mb:.2f}",
            f"{r['ours_f16_after'] / mb:.2f}",
            f"{r['seed_eligible_after'] / max(r['ours_eligible_after'], 1):.2f}x",
            f"{r['seed_changed']:,}",
            f"{r['ours_changed']:,}",
            f"{r['seed_s']:.3f}",
            f"{r['ours_s']:.3f}",
            f"{r['seed_s'] / r['ours_s']:.2f}x",
        )
    Console(width=160).print(table)
    print(
        "Memory is deep (Python objects included), index excluded. 'in use': after one "
        "lookup per categorical column, which builds pandas' hash table of its categories.\n"
        "eligible cols: the columns the baseline left exact; ratio = baseline bytes / memfit "
        "bytes in use (>= 1.00x: memfit at least as small). 'memfit changed' counts both "
        "memfit runs."
    )
    print_polars([measure_polars(name, df, args.repeat) for name, df in tables.items()], args)
    generated = list(generated_tables(10))
    del tables, rows
    gc.collect()
    print_rss(measure_rss(generated, args.rows), args)


if __name__ == "__main__":
    main()
