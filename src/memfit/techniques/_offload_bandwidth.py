"""How fast a folder's disk writes and reads, measured on a small sample file."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memfit.errors import OffloadError

_BLOCK_BYTES = 8 * 2**20


@dataclass(frozen=True, slots=True)
class DiskBandwidth:
    """Measured sequential bandwidth of the disk behind `directory`."""

    write_bytes_per_s: float
    """Writes made durable with fsync."""
    read_bytes_per_s: float
    """Reads after the sample's pages were dropped from the page cache."""
    sample_bytes: int
    directory: str


def measure_disk_bandwidth(directory: str | Path, sample_bytes: int = 128 * 2**20) -> DiskBandwidth:
    """Write `sample_bytes` to a temporary file in `directory`, fsync, drop it from cache, read it.

    Takes about a second on an SSD with the default 128 MiB; the file is removed.

    >>> import tempfile
    >>> bw = measure_disk_bandwidth(tempfile.gettempdir(), sample_bytes=8 * 2**20)
    >>> bw.write_bytes_per_s > 0 and bw.read_bytes_per_s > 0
    True
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise OffloadError(f"{directory} is not a folder; create it or pass another state_dir")
    if sample_bytes < _BLOCK_BYTES:
        raise OffloadError(f"sample_bytes must be at least {_BLOCK_BYTES} (8 MiB)")
    blocks = sample_bytes // _BLOCK_BYTES
    # Random bytes so a compressing file system (btrfs, zfs) cannot flatter the figure.
    payload = np.random.default_rng(0).integers(0, 256, _BLOCK_BYTES, dtype=np.uint8).tobytes()
    fd, name = tempfile.mkstemp(prefix=".memfit-bandwidth-", dir=directory)
    try:
        start = time.perf_counter()
        for _ in range(blocks):
            os.write(fd, payload)
        os.fsync(fd)
        write_s = time.perf_counter() - start
        # Clean pages can be dropped without root: the read then comes from the disk.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        buffer = bytearray(_BLOCK_BYTES)
        start = time.perf_counter()
        with open(fd, "rb", buffering=0, closefd=False) as f:
            f.seek(0)
            while f.readinto(buffer):
                pass
        read_s = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(name)
    total = blocks * _BLOCK_BYTES
    return DiskBandwidth(
        write_bytes_per_s=total / max(write_s, 1e-9),
        read_bytes_per_s=total / max(read_s, 1e-9),
        sample_bytes=total,
        directory=str(directory),
    )
