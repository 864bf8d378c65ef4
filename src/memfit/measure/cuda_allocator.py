"""What PyTorch's CUDA caching allocator reserves for a sequence of tensor allocations.

On a GPU what runs out is the memory the caching allocator has reserved from the driver
(`torch.cuda.max_memory_reserved`), not the tensor bytes alive at once: it rounds every
request, carves small ones out of 2 MiB segments and mid-sized ones out of 20 MiB
segments, and keeps freed blocks cached for reuse, so a step's reserved peak sits above
its allocated peak. `CachingAllocatorModel` replays allocations and frees through the
same rules (c10/cuda/CUDACachingAllocator.cpp: `round_size`, `get_allocation_size`,
best-fit from the pool, splitting, merging freed neighbours), on any machine, from an
estimate's event sequence. Not modelled: several streams, `expandable_segments`,
`max_split_size_mb`, and the frees and retries the real allocator makes when the device
is full (so the figure is the reserve the step would take on a card with room to spare).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

MIN_BLOCK_BYTES = 512
"""Every request is rounded up to a multiple of this (kMinBlockSize)."""
SMALL_SIZE_BYTES = 2**20
"""Requests up to this size come from the small pool (kSmallSize)."""
SMALL_BUFFER_BYTES = 2 * 2**20
"""Segment size for the small pool (kSmallBuffer)."""
LARGE_BUFFER_BYTES = 20 * 2**20
"""Segment size for requests under MIN_LARGE_ALLOC_BYTES (kLargeBuffer)."""
MIN_LARGE_ALLOC_BYTES = 10 * 2**20
ROUND_LARGE_BYTES = 2 * 2**20
"""Larger requests get their own segment, rounded to this (kRoundLarge)."""


def round_size(nbytes: int) -> int:
    if nbytes < MIN_BLOCK_BYTES:
        return MIN_BLOCK_BYTES
    return -(-nbytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES


def segment_size(rounded: int) -> int:
    if rounded <= SMALL_SIZE_BYTES:
        return SMALL_BUFFER_BYTES
    if rounded < MIN_LARGE_ALLOC_BYTES:
        return LARGE_BUFFER_BYTES
    return -(-rounded // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES


@dataclass(eq=False)
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None


@dataclass
class CachingAllocatorModel:
    """Replays `allocate`/`free`; reads `reserved_bytes`, `peak_reserved_bytes`.

    >>> m = CachingAllocatorModel()
    >>> a = m.allocate(3 * 2**20)          # a 3 MiB tensor: one 20 MiB segment
    >>> b = m.allocate(100)                # tiny: a 2 MiB small segment
    >>> m.reserved_bytes // 2**20, m.allocated_bytes
    (22, 3146240)
    >>> m.free(a); c = m.allocate(5 * 2**20)  # fits the freed space, nothing new
    >>> m.peak_reserved_bytes // 2**20
    22
    """

    allocated_bytes: int = 0
    reserved_bytes: int = 0
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    _free_small: list = field(default_factory=list)
    _free_large: list = field(default_factory=list)
    _segments: int = 0

    def _pool(self, small: bool) -> list:
        return self._free_small if small else self._free_large

    def _add_free(self, block: _Block) -> None:
        bisect.insort(self._pool(block.small), (block.size, block.segment, block.offset, block))

    def _remove_free(self, block: _Block) -> None:
        pool = self._pool(block.small)
        i = bisect.bisect_left(pool, (block.size, block.segment, block.offset))
        while pool[i][3] is not block:
            i += 1
        pool.pop(i)

    def allocate(self, nbytes: int) -> _Block:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE_BYTES
        pool = self._pool(small)
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i < len(pool):
            block = pool.pop(i)[3]
        else:
            seg = segment_size(size)
            self._segments += 1
            block = _Block(self._segments, 0, seg, small)
            self.reserved_bytes += seg
            self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        remaining = block.size - size
        # Split when what is left can serve a later request of its pool (should_split).
        if (small and remaining >= MIN_BLOCK_BYTES) or (not small and remaining > SMALL_SIZE_BYTES):
            rest = _Block(
                block.segment, block.offset + size, remaining, small, True, block, block.next
            )
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._add_free(rest)
        block.free = False
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block

    def free(self, block: _Block) -> None:
        block.free = True
        self.allocated_bytes -= block.size
        # Merge with free neighbours in the same segment (try_merge_blocks).
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free and neighbour is not block:
                self._remove_free(neighbour)
                if neighbour is block.prev:
                    block.offset, block.prev = neighbour.offset, neighbour.prev
                    if neighbour.prev is not None:
                        neighbour.prev.next = block
                else:
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
                block.size += neighbour.size
        self._add_free(block)


def reserved_peak(events: Iterable[tuple[object, int, int]]) -> tuple[int, int]:
    """Replay `(key, nbytes, +1 or -1)` events; returns (peak allocated, peak reserved)."""
    model = CachingAllocatorModel()
    live: dict[object, _Block] = {}
    for key, nbytes, sign in events:
        if sign > 0:
            if key not in live:
                live[key] = model.allocate(nbytes)
        elif key in live:
            model.free(live.pop(key))
    return model.peak_allocated_bytes, model.peak_reserved_bytes
