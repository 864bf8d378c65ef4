"""The allocator setting that makes RSS readings repeatable, without importing torch.

The command line checks it before anything else is imported, and starts itself again
with it when a command measures the process.
"""

from __future__ import annotations

import os

STABLE_MMAP_THRESHOLD = 128 * 2**10
"""Blocks from this size up get their own mmap. At 1 MiB, a micro-batched step's activations
of a few hundred kB stayed in the heap after being freed and a transformer step read 23 MB
of RSS above its tensors; at 128 KiB it read what its tensors held."""
STABLE_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(STABLE_MMAP_THRESHOLD)}
"""Set before Python starts, for repeatable RSS readings from the first allocation on."""


def env_is_stable() -> bool:
    return os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None
