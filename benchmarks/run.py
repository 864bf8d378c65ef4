"""Run every benchmark script in this folder (or those named on the command line).

Each script is one claim: it measures memfit against a baseline in the same run
and prints a table with ratios. Results go to stdout; BENCHMARKS.md records them.

    python benchmarks/run.py                 # all
    python benchmarks/run.py estimate_accuracy profiler_overhead
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != "run.py" and not p.name.startswith("_")
    )
    if names:
        wanted = {n.removesuffix(".py") for n in names}
        scripts = [p for p in scripts if p.stem in wanted]
        missing = wanted - {p.stem for p in scripts}
        if missing:
            print(f"unknown benchmark(s): {', '.join(sorted(missing))}", file=sys.stderr)
            return 2
    env = dict(os.environ)
    # Steadier RSS: glibc returns big frees to the OS at once (see memfit.measure.process).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")  # memfit.measure.allocator_env
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], env=env)
        print(f"--- {script.stem}: exit {rc}, {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
