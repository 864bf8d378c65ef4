"""Measurements worth keeping between runs (slow to take, fixed for a machine and versions).

They live in one JSON file in `$MEMFIT_CACHE_DIR`, else `$XDG_CACHE_HOME/memfit`, else
`~/.cache/memfit`. Delete the file to measure again. A folder that cannot be written
only means measuring every time.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

_FILE = "measurements.json"


def cache_dir() -> Path:
    if os.environ.get("MEMFIT_CACHE_DIR"):
        return Path(os.environ["MEMFIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "memfit"


def _read() -> dict[str, float]:
    try:
        return json.loads((cache_dir() / _FILE).read_text())
    except (OSError, ValueError):
        return {}


def cached_measurement(key: str, measure: Callable[[], float]) -> float:
    """The value stored under `key`, or `measure()` stored there first."""
    stored = _read()
    if key in stored:
        return float(stored[key])
    value = float(measure())
    stored = _read()  # another process may have added keys meanwhile
    stored[key] = value
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".measurements-", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=1, sort_keys=True)
        os.replace(tmp, folder / _FILE)
    except OSError:
        pass
    return value


def device_name(device: str) -> str:
    """A name for the hardware behind `device`: the GPU's, or the CPU model and cores."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} x{torch.get_num_threads()}"
