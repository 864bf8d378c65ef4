"""Claim: learning online from a CSV ten times larger than a memory bound stays inside the bound.

A generated CSV (default about 1.6 GB, 20 float features and a 0/1 label) is
learned by an SGDClassifier two ways, each in its own child process whose RSS
high-water mark is reset after imports:

- memfit: `learn_online(SGDClassifier, TableStream(csv, shuffle_buffer="64MB"))`
- plain:  `pd.read_csv(csv)` and `SGDClassifier(max_iter=1).fit(X, y)` (one pass)

The bound is 150 MB above the child's RSS after imports (the baseline).

    python benchmarks/online_rss.py [--rows 10500000] [--bound-mb 150] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = 20


def generate(path: Path, rows: int, chunk_rows: int = 500_000) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    weights = rng.normal(size=FEATURES)
    names = [f"f{i}" for i in range(FEATURES)] + ["label"]
    with pacsv.CSVWriter(
        path, pa.schema([(n, pa.float64()) for n in names[:-1]] + [("label", pa.int64())])
    ) as writer:
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            x = rng.normal(size=(n, FEATURES)).round(4)
            label = (x @ weights + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
            columns = [pa.array(x[:, i]) for i in range(FEATURES)] + [pa.array(label)]
            writer.write_table(pa.table(columns, names=names))


def child(mode: str, path: str) -> None:
    # Imports count in the baseline, not in the peak: both children import the same.
    import numpy as np  # noqa: F401
    import pandas as pd
    import pyarrow.compute  # noqa: F401
    import pyarrow.csv  # noqa: F401
    from sklearn.linear_model import SGDClassifier

    from memfit.data import TableStream, learn_online
    from memfit.measure.process import current_rss_bytes, peak_rss_bytes, reset_peak_rss

    baseline = current_rss_bytes()
    reset_peak_rss()
    start = time.perf_counter()
    if mode == "memfit":
        stream = TableStream(path, batch_size=8192, target="label", shuffle_buffer="64MB")
        result = learn_online(SGDClassifier(random_state=0), stream, report_every=100)
        rows, accuracy = result.rows, result.final
    else:
        frame = pd.read_csv(path)
        x, y = frame.drop(columns="label").to_numpy(), frame["label"].to_numpy()
        model = SGDClassifier(random_state=0, max_iter=1, tol=None).fit(x, y)
        rows, accuracy = len(frame), float(model.score(x[:100_000], y[:100_000]))
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "baseline": baseline,
                "peak": peak_rss_bytes(),
                "rows": rows,
                "accuracy": accuracy,
                "seconds": seconds,
            }
        )
    )


def measure(mode: str, path: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_500_000)
    parser.add_argument("--bound-mb", type=float, default=150.0)
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from rich.console import Console
    from rich.table import Table

    folder = Path(tempfile.mkdtemp(prefix="memfit-online-rss-"))
    try:
        path = folder / "stream.csv"
        started = time.perf_counter()
        generate(path, args.rows)
        size = path.stat().st_size
        print(
            f"generated {args.rows:,} rows, {size / 1e9:.2f} GB in "
            f"{time.perf_counter() - started:.0f} s: {path}",
            flush=True,
        )
        bound = int(args.bound_mb * 1e6)
        table = Table(
            title=f"Online learning from a {size / 1e9:.2f} GB CSV, bound "
            f"{bound / 1e6:.0f} MB above baseline (file/bound = {size / bound:.1f})"
        )
        for column in (
            "approach",
            "baseline MB",
            "peak MB",
            "peak - baseline MB",
            "vs bound",
            "rows",
            "accuracy",
            "seconds",
        ):
            table.add_column(column, justify="left" if column == "approach" else "right")
        results = {}
        for mode, label in (
            ("memfit", "memfit learn_online (64MB buffer)"),
            ("plain", "pd.read_csv + fit"),
        ):
            r = results[mode] = measure(mode, path)
            used = r["peak"] - r["baseline"]
            table.add_row(
                label,
                f"{r['baseline'] / 1e6:.0f}",
                f"{r['peak'] / 1e6:.0f}",
                f"{used / 1e6:.0f}",
                f"{used / bound:.2f}x",
                f"{r['rows']:,}",
                f"{r['accuracy']:.3f}",
                f"{r['seconds']:.0f}",
            )
        Console(width=140).print(table)
        ours = results["memfit"]["peak"] - results["memfit"]["baseline"]
        plain = results["plain"]["peak"] - results["plain"]["baseline"]
        print(
            f"plain / memfit memory above baseline: {plain / ours:.1f}x; "
            f"memfit within bound: {ours <= bound}"
        )
        return 0 if ours <= bound else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
