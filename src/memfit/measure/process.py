"""The process's own peak memory: RSS on CPU, the caching allocator's peak on CUDA.

glibc keeps freed blocks in its arenas and serves later allocations from them,
so a step's RSS peak depends on what ran before it (the same step read 512, 78
and 30 MiB in three runs). Making every block of 128 KiB or more its own mmap
(M_MMAP_THRESHOLD) returns tensors to the OS when they are freed, which makes
the high-water mark repeatable. `MALLOC_MMAP_THRESHOLD_` does the same from the
environment; `stabilize_allocator` sets it from inside a running process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass, field

import psutil
import torch

from memfit.measure.allocator_env import STABLE_ENVIRONMENT, STABLE_MMAP_THRESHOLD, env_is_stable

__all__ = ["STABLE_ENVIRONMENT", "ProcessPeak", "env_is_stable", "stabilize_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_STABLE_MMAP_THRESHOLD = STABLE_MMAP_THRESHOLD


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def stabilize_allocator() -> bool:
    """Make glibc give big frees back to the OS at once. Returns False where not possible."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, _STABLE_MMAP_THRESHOLD) == 1
    libc.mallopt(_M_TRIM_THRESHOLD, _STABLE_MMAP_THRESHOLD)
    release_free_memory()
    return ok


def relax_allocator() -> None:
    """Undo `stabilize_allocator` for speed: mapping every big block costs page faults.

    glibc cannot go back to its adaptive threshold once set, so set what it adapts to
    after big frees on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB): large
    tensors are then reused from the heap instead of mapped anew each time.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt") or env_is_stable():
        # The process was started with the stable setting on purpose: keep it.
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)


def release_free_memory() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def current_rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _read_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Highest RSS since the last reset (or since start where resets are not possible)."""
    hwm = _read_hwm_bytes()
    if hwm is not None:
        return hwm
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@dataclass
class ProcessPeak:
    """Peak of the process over a stretch of code, and its level before the stretch."""

    device: str
    baseline_bytes: int = 0
    peak_bytes: int = 0
    resettable: bool = True
    phase_peaks: dict[str, int] = field(default_factory=dict)
    """High-water mark of each phase, the mark reset as each phase begins."""
    reserved_peak_bytes: int | None = None
    """CUDA only: the caching allocator's reserved high-water mark (what runs out)."""
    _phase: str | None = None

    def next_phase(self, phase: str) -> None:
        """Close the running phase's reading and start a fresh one for `phase`."""
        self._close_phase()
        self._phase = phase
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()

    def _close_phase(self) -> None:
        if self._phase is None:
            return
        self._read_reserved()
        peak = self._read_peak()
        self.phase_peaks[self._phase] = max(self.phase_peaks.get(self._phase, 0), peak)
        self.peak_bytes = max(self.peak_bytes, peak)

    def _read_reserved(self) -> None:
        if self.device.startswith("cuda"):
            reserved = torch.cuda.max_memory_reserved()
            self.reserved_peak_bytes = max(self.reserved_peak_bytes or 0, reserved)

    def _read_peak(self) -> int:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return max(peak_rss_bytes(), current_rss_bytes())

    def start(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_bytes = torch.cuda.memory_allocated()
        else:
            release_free_memory()
            self.resettable = reset_peak_rss()
            self.baseline_bytes = current_rss_bytes()

    def stop(self) -> int:
        self._close_phase()
        self._read_reserved()
        self._phase = None
        # Resetting per phase must not lose a peak that came between two readings.
        self.peak_bytes = max(self.peak_bytes, self._read_peak())
        return self.peak_bytes


def process_memory_bytes(device: str) -> int:
    """Memory the process holds now on `device` (RSS, or CUDA bytes allocated)."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated()
    return current_rss_bytes()
