"""Flat float32 files on disk, opened one bounded window at a time, plus their manifest.

Each state (``exp_avg``, ``exp_avg_sq``, ...) is one file holding every
parameter's values back to back. A window maps a slice of a file with
``mmap`` and unmaps it when done: pages of a mapping stay resident once
touched, so only unmapping (nanoGPT re-opens its memmap per batch for the same
reason) keeps the resident set bounded by the window size.

The manifest is a small JSON file written last and atomically (temporary file,
fsync, rename). Its ``status`` is ``"stepping"`` while the files are being
changed and ``"clean"`` only after a checkpoint flushed them and recorded their
CRC-32, so a process killed mid-step leaves a state that is detected, not used.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import torch

from memfit.errors import OffloadError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "memfit-offload"
MANIFEST_VERSION = 1
ELEMENT_BYTES = 4  # every offloaded value is float32
_CRC_READ_BYTES = 8 * 2**20
# Fault the whole window in with one call (read-ahead) instead of one page fault per 4 KiB:
# every element of a window is touched anyway.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class StateFiles:
    """One float32 file per state name, each `numel` elements long, in `directory`."""

    def __init__(
        self,
        directory: Path,
        names: list[str],
        numel: int,
        *,
        create: bool,
        scratch: frozenset[str] = frozenset(),
    ) -> None:
        """Open (or with `create`, make) the files; `scratch` ones are always made afresh."""
        self.directory = directory
        self.names = list(names)
        self.numel = numel
        self._fds: dict[str, int] = {}
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            path = self.path(name)
            fresh = create or name in scratch
            if not fresh and not path.exists():
                raise OffloadError(
                    f"offloaded state file {path} is missing; restore the whole folder "
                    "from a copy or start from an empty state_dir"
                )
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            self._fds[name] = fd
            if fresh:
                # A sparse file: zeros that take no disk until written (Adam starts at zero).
                os.ftruncate(fd, numel * ELEMENT_BYTES)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.f32"

    def grow(self, numel: int) -> None:
        """Extend every file with zeros to `numel` elements (a new parameter group)."""
        for fd in self._fds.values():
            os.ftruncate(fd, numel * ELEMENT_BYTES)
        self.numel = numel

    def sizes_bytes(self) -> dict[str, int]:
        return {name: os.fstat(fd).st_size for name, fd in self._fds.items()}

    @contextlib.contextmanager
    def windows(
        self, names: list[str], start: int, stop: int, *, drop_page_cache: bool = False
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Map elements [start, stop) of each named file; yield name -> float32 tensor.

        The tensors are views of the mappings: writes go to the files. The caller
        must drop every reference to them before the block ends, because a
        mapping cannot be closed while a tensor still exports its buffer.
        """
        granularity = mmap.ALLOCATIONGRANULARITY
        first_byte = start * ELEMENT_BYTES
        aligned = first_byte - first_byte % granularity
        length = stop * ELEMENT_BYTES - aligned
        maps = {
            name: mmap.mmap(self._fds[name], length, flags=_MAP_FLAGS, offset=aligned)
            for name in names
        }
        tensors = {
            name: torch.frombuffer(
                m, dtype=torch.float32, count=stop - start, offset=first_byte - aligned
            )
            for name, m in maps.items()
        }
        try:
            yield tensors
        finally:
            tensors.clear()
            for name, m in maps.items():
                if drop_page_cache:
                    # Write dirty pages now and let the kernel forget them, as if RAM
                    # had no room for a page cache: this measures real disk speed.
                    m.flush()
                try:
                    m.close()
                except BufferError:
                    # A tensor view outlived the block (an exception's traceback holds it):
                    # the mapping goes when that view does.
                    continue
                if drop_page_cache:
                    os.posix_fadvise(self._fds[name], aligned, length, os.POSIX_FADV_DONTNEED)

    def sync(self) -> None:
        """Make every write durable (dirty pages of closed mappings live in the page cache)."""
        for fd in self._fds.values():
            os.fsync(fd)

    def crc32(self, name: str) -> int:
        """CRC-32 of one file, read in bounded pieces."""
        crc = 0
        buffer = bytearray(_CRC_READ_BYTES)
        view = memoryview(buffer)
        with open(self.path(name), "rb", buffering=0) as f:
            while True:
                n = f.readinto(buffer)
                if not n:
                    break
                crc = zlib.crc32(view[:n], crc)
        return crc

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest atomically: a crash leaves either the old one or the new one."""
    target = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    data = json.dumps({"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, **manifest})
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_manifest(directory: Path) -> dict | None:
    """The manifest in `directory`, or None when there is none."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OffloadError(
            f"{path} is unreadable ({exc}); restore the folder from a copy or use an empty state_dir"
        ) from exc
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise OffloadError(
            f"{path} is not a memfit offload manifest (version {MANIFEST_VERSION}); "
            "point state_dir at a folder written by OffloadedOptimizer"
        )
    return manifest
