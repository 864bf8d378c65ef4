"""How fast a folder's disk writes and reads, measured the way the offloaded optimizer uses it."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from memfit.errors import OffloadError
from memfit.techniques._offload_store import ELEMENT_BYTES, StateFiles

_WINDOW_BYTES = 16 * 2**20


@dataclass(frozen=True, slots=True)
class DiskBandwidth:
    """Measured bandwidth of the disk behind `directory`, through mapped windows."""

    write_bytes_per_s: float
    """Windows written, flushed (msync) and dropped from the page cache."""
    read_bytes_per_s: float
    """Windows mapped and read after the sample was dropped from the page cache."""
    sample_bytes: int
    directory: str


def measure_disk_bandwidth(directory: str | Path, sample_bytes: int = 128 * 2**20) -> DiskBandwidth:
    """Write `sample_bytes` to a temporary file in `directory` and read it back, uncached.

    It goes through the same mapped windows, flushes and cache drops as
    `OffloadedOptimizer(drop_page_cache=True)`, so the figures include the
    mapping overhead and not only the raw disk. About a second with the default
    128 MiB on an SSD; the file is removed.

    >>> import tempfile
    >>> bw = measure_disk_bandwidth(tempfile.gettempdir(), sample_bytes=16 * 2**20)
    >>> bw.write_bytes_per_s > 0 and bw.read_bytes_per_s > 0
    True
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise OffloadError(f"{directory} is not a folder; create it or pass another state_dir")
    if sample_bytes < _WINDOW_BYTES:
        raise OffloadError(f"sample_bytes must be at least {_WINDOW_BYTES} (16 MiB)")
    window = _WINDOW_BYTES // ELEMENT_BYTES
    numel = sample_bytes // _WINDOW_BYTES * window
    # Random values so a compressing file system (btrfs, zfs) cannot flatter the figure.
    payload = torch.rand(window, generator=torch.Generator().manual_seed(0))
    sample = Path(tempfile.mkdtemp(prefix=".memfit-bandwidth-", dir=directory))
    files = StateFiles(sample, ["sample"], numel, create=True)
    try:
        start = time.perf_counter()
        for first in range(0, numel, window):
            with files.windows(["sample"], first, first + window, drop_page_cache=True) as w:
                w["sample"].copy_(payload)
        files.sync()
        write_s = time.perf_counter() - start
        fd = os.open(files.path("sample"), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        start = time.perf_counter()
        for first in range(0, numel, window):
            with files.windows(["sample"], first, first + window, drop_page_cache=True) as w:
                float(w["sample"].sum())
        read_s = time.perf_counter() - start
    finally:
        files.close()
        files.path("sample").unlink(missing_ok=True)
        sample.rmdir()
    total = numel * ELEMENT_BYTES
    return DiskBandwidth(
        write_bytes_per_s=total / max(write_s, 1e-9),
        read_bytes_per_s=total / max(read_s, 1e-9),
        sample_bytes=total,
        directory=str(directory),
    )
