"""Stream a table from disk in batches with bounded memory, shuffled, resumable.

`TableStream` reads CSV, Parquet and SQLite block by block and yields
`(features, target)` tensor batches: features float32 in a fixed column
order, the target int64 (classes) or float32 (values). Memory is one batch
plus the shuffle buffer plus one block being decoded, never the file.

Exactly once with DataLoader workers: each worker reads its own share of the
blocks (a plain IterableDataset would repeat the whole file in every worker).
Resume: the order of an epoch depends only on the seed, the epoch and the
number of workers, so a saved position (epoch, batches handed out) is enough
to continue with exactly the batches that were still to come, shuffle buffer
included.

    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> pd.DataFrame({"a": range(10), "b": range(10), "y": [0, 1] * 5}).to_csv(path, index=False)
    >>> stream = TableStream(path, batch_size=4, target="y", shuffle_buffer="1kB", seed=1)
    >>> [tuple(x.shape) for x, y in stream]
    [(4, 2), (4, 2), (2, 2)]
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from memfit.budget import Budget
from memfit.data import _stream_order as order
from memfit.data._stream_sources import Source, open_source
from memfit.errors import BudgetError, StreamError

_UNSHUFFLED_BLOCK_BYTES = 8 * 2**20  # decoded bytes per block when there is no buffer
_BLOCKS_PER_WINDOW = 8  # a full buffer mixes rows from at least this many places in the file
_STATE_VERSION = 1


class TableStream(IterableDataset):
    """Batches of a CSV, Parquet or SQLite table, read block by block.

    Args:
        path: a ``.csv`` or ``.parquet`` file, or ``sqlite:///file.db``.
        batch_size: rows per batch.
        columns: feature columns, in the order the feature tensor uses; default:
            every column but the target, in file order.
        target: the target column, or None to yield features only.
        shuffle_buffer: bytes of decoded rows held for shuffling (``"64MB"``, an
            int); 0 or None reads in file order.
        seed: the shuffle seed; epoch ``e`` uses ``(seed, e)``.
        table / query: for SQLite, the table to read or a query with a stable
            order (``ORDER BY``).
        classes: target labels in code order; given, the target is coded
            0..len-1 by this list. Text targets without it are scanned once.
        drop_last: drop each worker's last short batch.
        block_rows: rows per block (default from the buffer size).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        batch_size: int = 256,
        columns: Sequence[str] | None = None,
        target: str | None = None,
        *,
        shuffle_buffer: str | int | None = 0,
        seed: int = 0,
        table: str | None = None,
        query: str | None = None,
        format: str | None = None,
        classes: Sequence[Any] | None = None,
        drop_last: bool = False,
        block_rows: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise StreamError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size
        self.seed = int(seed)
        self.drop_last = drop_last
        self.source: Source = open_source(path, table=table, query=query, format=format)
        self.buffer_bytes = _parse_buffer(shuffle_buffer)
        self.shuffle = self.buffer_bytes > 0

        names = self._all_names(self.source.names())
        if target is not None and target not in names:
            raise StreamError(
                f"target {target!r} is not a column of {self.source.description}; "
                f"columns: {', '.join(names)}"
            )
        features = list(columns) if columns is not None else [n for n in names if n != target]
        missing = [c for c in features if c not in names]
        if missing:
            raise StreamError(
                f"no column {', '.join(map(repr, missing))} in "
                f"{self.source.description}; columns: {', '.join(names)}"
            )
        if target is not None and target in features:
            raise StreamError(f"target {target!r} is also listed in columns; drop it from columns")
        if not features:
            raise StreamError("no feature columns: pass columns=[...]")
        self.feature_names: list[str] = features
        self.target = target

        self.row_bytes = 4 * len(features) + (8 if target is not None else 0)
        if self.shuffle and self.buffer_bytes < self.row_bytes:
            raise StreamError(
                f"shuffle_buffer of {self.buffer_bytes} bytes holds no row (one row "
                f"takes {self.row_bytes} bytes); give at least {self.row_bytes}"
            )
        if block_rows is None:
            block_bytes = (
                self.buffer_bytes // _BLOCKS_PER_WINDOW if self.shuffle else _UNSHUFFLED_BLOCK_BYTES
            )
            block_rows = max(1, block_bytes // self.row_bytes)
        self.rows_per_block = int(block_rows)
        self.rows_per_window = (
            max(1, self.buffer_bytes // self.row_bytes) if self.shuffle else self.rows_per_block
        )
        self.block_rows = self.source.block_rows(self.rows_per_block)
        self.num_rows = int(self.block_rows.sum())

        self.labels: list[Any] | None = list(classes) if classes is not None else None
        self.target_kind = self._target_kind() if target is not None else None
        self._int_classes: np.ndarray | None = None

        self.epoch = 0
        """The epoch the next full pass will read (advanced when a pass ends)."""
        self.peak_buffer_bytes = 0
        """Largest decoded window this process held, in bytes (features + target)."""
        self._batches_done = 0
        self._resume_layout: int | None = None

    # -- columns and target ------------------------------------------------------------------

    def _all_names(self, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise StreamError(f"{self.source.description} has duplicate column names; rename them")
        return names

    def _target_kind(self) -> str:
        if self.labels is not None:
            if len(set(map(repr, self.labels))) != len(self.labels):
                raise StreamError("classes has duplicates; pass each label once")
            return "label"
        kind = "float"
        for block in range(len(self.block_rows)):
            column = _first_column(self.source.read_block(block, [self.target]))
            if column is None or column.null_count == len(column):
                continue
            if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
                kind = "int"
            elif pa.types.is_floating(column.type):
                kind = "float"
            else:
                kind = "label"
            break
        if kind == "label":
            self.labels = self._scan_labels()
        return kind

    def _scan_labels(self) -> list[Any]:
        seen: set[Any] = set()
        for values in self._iter_target_column(pa.string()):  # text: no piece guessed as int
            seen.update(v for v in pc.unique(values).to_pylist() if v is not None)
        try:
            return sorted(seen)
        except TypeError as exc:
            raise StreamError(
                f"target {self.target!r} mixes value types; pass classes=[...] "
                "in the order you want them coded"
            ) from exc

    def _iter_target_column(self, text_type: pa.DataType) -> Iterator[pa.Array]:
        for block in range(len(self.block_rows)):
            for piece in self.source.read_block(block, [self.target], {self.target: text_type}):
                column = piece.column(self.target)
                yield column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def target_classes(self) -> np.ndarray:
        """The class values that appear in target tensors, sorted (scans the target once).

        For a text target these are the codes ``0..len(labels)-1``; `labels` maps
        them back.
        """
        if self.target_kind == "label":
            return np.arange(len(self.labels), dtype=np.int64)
        if self.target_kind != "int":
            raise StreamError(
                f"target {self.target!r} is not integer classes; pass classes= "
                "or use a regression metric"
            )
        if self._int_classes is None:
            found: set[int] = set()
            for values in self._iter_target_column(pa.int64()):
                found.update(v for v in pc.unique(values).to_pylist() if v is not None)
            self._int_classes = np.array(sorted(found), dtype=np.int64)
        return self._int_classes

    def _text_types(self) -> dict[str, pa.DataType]:
        """Column types for text sources, so that no piece is guessed differently."""
        # float64 then a cast, as for typed sources: parsing text straight to float32
        # could round differently from float64 -> float32 and break format parity.
        types = {name: pa.float64() for name in self.feature_names}
        if self.target_kind == "label":
            types[self.target] = pa.array(self.labels).type
        elif self.target_kind is not None:
            types[self.target] = pa.int64() if self.target_kind == "int" else pa.float64()
        return types

    def _target_values(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        try:
            if self.target_kind == "label":
                wanted = pa.array(self.labels)
                codes = pc.index_in(column.cast(wanted.type), value_set=wanted)
                if codes.null_count:
                    unknown = pc.filter(column, pc.is_null(codes)).to_pylist()[:3]
                    raise StreamError(
                        f"target values {unknown} are not in classes; add them "
                        "to classes=[...] or leave classes out to scan for them"
                    )
                return codes.to_numpy().astype(np.int64)
            if self.target_kind == "int":
                values = pc.cast(column, pa.int64())
                if values.null_count:
                    raise StreamError(
                        f"target {self.target!r} has missing values; drop those "
                        "rows or fill them before streaming"
                    )
                return values.to_numpy()
            return pc.cast(column, pa.float32(), safe=False).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StreamError(
                f"target {self.target!r} cannot be read as {self.target_kind} "
                f"({exc}); pass classes=[...] to code it"
            ) from exc

    # -- state -------------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "source": self.source.description,
            "rows": self.num_rows,
            "blocks": len(self.block_rows),
            "rows_per_window": self.rows_per_window,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "features": list(self.feature_names),
            "target": self.target,
        }

    def _state(self, epoch: int, batches: int, num_workers: int) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "epoch": int(epoch),
            "batches": int(batches),
            "workers": max(1, int(num_workers)),
            **self._fingerprint(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Where direct iteration (no DataLoader workers) stands: plain ints and strings."""
        return self._state(self.epoch, self._batches_done, self._resume_layout or 1)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`: the next pass yields exactly the batches that were left."""
        expected = self._fingerprint()
        changed = [k for k, v in expected.items() if state.get(k) != v]
        if state.get("version") != _STATE_VERSION or changed:
            raise StreamError(
                "saved stream position does not match this stream (differs in "
                f"{', '.join(changed) or 'version'}); build the stream with the "
                "same file and settings, or start from the beginning"
            )
        self.epoch = int(state["epoch"])
        self._batches_done = int(state["batches"])
        self._resume_layout = int(state["workers"])

    def set_epoch(self, epoch: int) -> None:
        """Start the next pass at `epoch` (like DistributedSampler.set_epoch)."""
        self.epoch, self._batches_done, self._resume_layout = int(epoch), 0, None

    def loader(self, num_workers: int = 0, **dataloader_kwargs: Any) -> StreamLoader:
        """A DataLoader over this stream that keeps count, for `state_dict` with workers."""
        return StreamLoader(self, num_workers, **dataloader_kwargs)

    def batches_per_epoch(self, num_workers: int = 0) -> int:
        rows = self._worker_rows(max(1, num_workers))
        return sum(order.batch_count(r, self.batch_size, self.drop_last) for r in rows)

    # -- the epoch plan ----------------------------------------------------------------------

    def _worker_rows(self, layout: int) -> list[int]:
        blocks = order.block_order(len(self.block_rows), self.seed, self.epoch, self.shuffle)
        return [
            int(self.block_rows[order.worker_blocks(blocks, w, layout)].sum())
            for w in range(layout)
        ]

    def _start(self, layout: int) -> tuple[int, int]:
        """(epoch, batches already handed out) for a pass with `layout` workers."""
        skip = self._batches_done
        if self._resume_layout is not None and skip and self._resume_layout != layout:
            raise StreamError(
                f"this position was saved with {self._resume_layout} worker(s); "
                f"resume with num_workers={self._resume_layout} (0 and 1 agree)"
            )
        return self.epoch, skip

    def _end_pass(self, epoch: int) -> None:
        if self.epoch == epoch:
            self.set_epoch(epoch + 1)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker_id, layout = (0, 1) if info is None else (info.id, info.num_workers)
        epoch, skip = self._start(layout)
        if info is None:
            self._resume_layout = None
        taken, next_worker = order.batches_taken(
            [
                order.batch_count(r, self.batch_size, self.drop_last)
                for r in self._worker_rows(layout)
            ],
            skip,
        )
        role = (worker_id + next_worker) % layout
        batches = self._generate(epoch, role, layout, taken[role] * self.batch_size)
        return self._count(batches, epoch) if info is None else batches

    def _count(self, batches: Iterator[Any], epoch: int) -> Iterator[Any]:
        for batch in batches:
            self._batches_done += 1  # counted as handed out, before the caller sees it
            yield batch
        self._end_pass(epoch)

    def _generate(self, epoch: int, worker_id: int, layout: int, skip_rows: int) -> Iterator[Any]:
        blocks = order.worker_blocks(
            order.block_order(len(self.block_rows), self.seed, epoch, self.shuffle),
            worker_id,
            layout,
        )
        rows = self.block_rows[blocks]
        carry: list[tuple[np.ndarray, np.ndarray | None]] = []
        carried = 0
        for window_index, positions in enumerate(order.windows(rows, self.rows_per_window)):
            window_rows = int(rows[positions].sum())
            if skip_rows >= window_rows:
                skip_rows -= window_rows
                continue
            features, target = self._load_window(blocks[positions], window_rows)
            picks = (
                order.row_permutation(
                    window_rows, self.seed, epoch, layout, worker_id, window_index
                )
                if self.shuffle
                else np.arange(window_rows)
            )
            start, skip_rows = skip_rows, 0
            while start < window_rows:
                take = picks[start : start + self.batch_size - carried]
                start += len(take)
                carry.append((features[take], None if target is None else target[take]))
                carried += len(take)
                if carried == self.batch_size:
                    yield self._batch(carry)
                    carry, carried = [], 0
            del features, target
        if carry and not self.drop_last:
            yield self._batch(carry)

    def _load_window(
        self, blocks: np.ndarray, window_rows: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        features = np.empty((window_rows, len(self.feature_names)), dtype=np.float32)
        target = None
        if self.target is not None:
            dtype = np.float32 if self.target_kind == "float" else np.int64
            target = np.empty(window_rows, dtype=dtype)
        held = features.nbytes + (target.nbytes if target is not None else 0)
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, held)
        wanted = self.feature_names + ([self.target] if self.target is not None else [])
        offset = 0
        for block in blocks.tolist():
            block_start = offset
            for piece in self.source.read_block(block, wanted, self._text_types()):
                n = piece.num_rows
                if offset + n > window_rows:
                    break
                for j, name in enumerate(self.feature_names):
                    features[offset : offset + n, j] = _to_float32(piece.column(name), name)
                if target is not None:
                    target[offset : offset + n] = self._target_values(piece.column(self.target))
                offset += n
            if offset - block_start != self.block_rows[block]:
                raise StreamError(
                    f"{self.source.description}: block {block} has "
                    f"{offset - block_start} rows, expected {self.block_rows[block]}; "
                    "the file changed since the stream was opened, reopen it"
                )
        return features, target

    def _batch(self, parts: list[tuple[np.ndarray, np.ndarray | None]]) -> Any:
        features = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        x = torch.from_numpy(features)
        if self.target is None:
            return x
        target = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        return x, torch.from_numpy(target)

    def __repr__(self) -> str:
        return (
            f"TableStream({self.source.description!r}, rows={self.num_rows}, "
            f"batch_size={self.batch_size}, features={len(self.feature_names)}, "
            f"target={self.target!r}, shuffle_buffer={self.buffer_bytes})"
        )


class StreamLoader:
    """A DataLoader over a TableStream that counts the batches it handed out.

    With workers, the stream object in this process is not the one being
    iterated, so the position lives here: `state_dict()` after any batch,
    `load_state_dict()` before iterating again.
    """

    def __init__(self, stream: TableStream, num_workers: int = 0, **dataloader_kwargs: Any):
        # Batching and order belong to the stream; persistent workers would keep an old
        # epoch's copy of it, and out-of-order delivery would break the resume replay.
        refused = {
            "batch_size",
            "shuffle",
            "sampler",
            "batch_sampler",
            "persistent_workers",
            "in_order",
        } & set(dataloader_kwargs)
        if refused:
            raise StreamError(
                f"{', '.join(sorted(refused))} cannot be set on a stream loader; "
                "set batch_size and shuffle_buffer on the TableStream instead"
            )
        self.stream = stream
        self.num_workers = int(num_workers)
        self.dataloader_kwargs = dataloader_kwargs
        self._epoch = stream.epoch
        self._batches = stream._batches_done

    def __iter__(self) -> Iterator[Any]:
        stream = self.stream
        epoch, start = stream._start(max(1, self.num_workers))
        loader = DataLoader(
            stream, batch_size=None, num_workers=self.num_workers, **self.dataloader_kwargs
        )
        iterator = iter(loader)  # workers now hold their copy of the position
        stream._resume_layout = None
        self._epoch, self._batches = epoch, start
        for batch in iterator:
            self._batches += 1
            yield batch
        stream._end_pass(epoch)
        self._epoch, self._batches = epoch + 1, 0

    def __len__(self) -> int:
        return self.stream.batches_per_epoch(self.num_workers)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches handed out so far; plain ints and strings (safe for torch.save)."""
        return self.stream._state(self._epoch, self._batches, self.num_workers)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
        self._epoch, self._batches = self.stream.epoch, self.stream._batches_done


def _parse_buffer(value: str | int | None) -> int:
    if value in (None, 0, "0", ""):
        return 0
    try:
        return Budget.parse(value).bytes
    except BudgetError as exc:
        raise StreamError(f"shuffle_buffer {value!r} is not a size; write it like '64MB'") from exc


def _first_column(pieces: Iterator[pa.RecordBatch | pa.Table]) -> pa.Array | None:
    for piece in pieces:
        column = piece.column(0)
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return None


def _to_float32(column: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    try:
        # safe=False: features are float32 by contract, so large ints round like any cast.
        values = pc.cast(column, pa.float32(), safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise StreamError(
            f"column {name!r} is not numeric ({column.type}); encode it as numbers "
            "first or leave it out of columns"
        ) from exc
    return values.to_numpy(zero_copy_only=False)
