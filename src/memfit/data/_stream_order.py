"""The order of one epoch, computed from block sizes alone.

Everything here is a pure function of (seed, epoch, number of workers, block
sizes), so a resumed run can recompute where every worker stood without
reading a row: that is what makes resume exact (the shuffle buffer is not
saved, it is rebuilt).

The shuffle: each epoch permutes the blocks, deals them to workers in turn,
groups each worker's blocks into windows that fit the buffer, and permutes
the rows inside each window.
"""

from __future__ import annotations

import numpy as np


def block_order(n_blocks: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Block indices in the order this epoch reads them."""
    if not shuffle:
        return np.arange(n_blocks, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n_blocks).astype(np.int64)


def worker_blocks(order: np.ndarray, worker_id: int, num_workers: int) -> np.ndarray:
    """The blocks one DataLoader worker reads: every num_workers-th, so each block once."""
    return order[worker_id::num_workers]


def windows(block_rows: np.ndarray, rows_per_window: int) -> list[np.ndarray]:
    """Group consecutive blocks (positions into `block_rows`) into windows of at most
    `rows_per_window` rows; a block larger than that is a window by itself."""
    groups: list[np.ndarray] = []
    start, rows = 0, 0
    for i, n in enumerate(block_rows.tolist()):
        if rows and rows + n > rows_per_window:
            groups.append(np.arange(start, i))
            start, rows = i, 0
        rows += n
    if start < len(block_rows):
        groups.append(np.arange(start, len(block_rows)))
    return groups


def row_permutation(
    n_rows: int, seed: int, epoch: int, num_workers: int, worker_id: int, window: int
) -> np.ndarray:
    """The order of the rows inside one window."""
    rng = np.random.default_rng([seed, epoch, num_workers, worker_id, window])
    return rng.permutation(n_rows)


def batch_count(rows: int, batch_size: int, drop_last: bool) -> int:
    return rows // batch_size if drop_last else -(-rows // batch_size)


def batches_taken(per_worker: list[int], consumed: int) -> tuple[list[int], int]:
    """How many batches each worker had handed out after `consumed` batches reached the
    user, and which worker was to serve next.

    A DataLoader over an IterableDataset asks its workers in turn, in order,
    and skips a worker once it is exhausted (torch.utils.data.dataloader,
    `_try_put_index` / `_next_data` with in_order=True); this replays that.
    A new DataLoader starts its turn at worker 0, so a resumed pass rotates
    the roles: DataLoader worker j plays worker (j + next) % n, which keeps
    the rest of the turn order unchanged.
    """
    taken = [0] * len(per_worker)
    remaining, last = consumed, -1
    round_ = 0
    while remaining > 0:
        active = [w for w, n in enumerate(per_worker) if n > round_]
        if not active:
            break
        served = active[:remaining]
        for w in served:
            taken[w] += 1
        remaining -= len(served)
        last = served[-1]
        round_ += 1
    return taken, (last + 1) % max(1, len(per_worker))
