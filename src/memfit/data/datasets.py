"""Map-style datasets that load on access and stay flat in memory under DataLoader workers.

DataLoader workers are forked copies of the main process. Touching a Python
object writes its reference count, so a dataset that holds a list of a million
path strings (or per-sample arrays) gets its pages copied into every worker as
they are read: memory grows with every epoch and every worker (pytorch issue
13246). These datasets hold numpy arrays only: file names as one byte buffer
plus offsets, samples in memory-mapped shards on disk.

- `ImageFolder`: one class per subfolder (like torchvision's), decoded with
  Pillow when a sample is asked for.
- `ArrayStore`: numpy arrays written once into memory-mapped shards, read
  back one sample at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from memfit.budget import Budget
from memfit.data._files import follow_umask
from memfit.errors import BudgetError, DataError, require

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolder(Dataset):
    """Images in ``root/<class>/**/<file>``, decoded on access.

    Classes are the subfolder names, sorted; targets are their indices. Without
    a transform a sample is a uint8 tensor (channels, height, width); with one,
    whatever ``transform(pil_image)`` returns.

        >>> import tempfile, os
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for name in ("cat", "dog"):
        ...     os.mkdir(os.path.join(root, name))
        ...     Image.new("RGB", (4, 3), "red").save(os.path.join(root, name, "a.png"))
        >>> data = ImageFolder(root)
        >>> data.classes, len(data), tuple(data[1][0].shape), data[1][1]
        (['cat', 'dog'], 2, (3, 3, 4), 1)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        *,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        mode: str = "RGB",
    ) -> None:
        require("PIL", "images")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: no such folder; give the folder that holds one subfolder per class"
            )
        self.transform = transform
        self.mode = mode
        self.classes: list[str] = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        if not self.classes:
            raise DataError(
                f"{self.root} has no subfolders; put each class's images in root/<class name>/"
            )
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        wanted = tuple(e.lower() for e in extensions)
        names, ends, targets = bytearray(), array("q"), array("q")
        for index, name in enumerate(self.classes):
            found = 0
            for folder, subfolders, files in os.walk(self.root / name, followlinks=True):
                subfolders.sort()
                for file in sorted(files):
                    if file.lower().endswith(wanted):
                        names += os.fsencode(os.path.relpath(os.path.join(folder, file), self.root))
                        ends.append(len(names))
                        targets.append(index)
                        found += 1
            if not found:
                raise DataError(
                    f"class folder {self.root / name} has no files ending in "
                    f"{', '.join(extensions)}; add images or remove the folder"
                )
        # One buffer and offsets: no per-file Python objects for workers to copy (#13246).
        self._names = np.frombuffer(bytes(names), dtype=np.uint8)
        self._ends = np.frombuffer(ends, dtype=np.int64).copy()
        self.targets = np.frombuffer(targets, dtype=np.int64).copy()

    def __len__(self) -> int:
        return len(self._ends)

    def path(self, index: int) -> Path:
        """The file of sample `index`."""
        index = range(len(self))[index]  # IndexError out of range, negatives count back
        end = int(self._ends[index])
        start = int(self._ends[index - 1]) if index else 0
        return self.root / os.fsdecode(self._names[start:end].tobytes())

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path = self.path(index)
        try:
            with Image.open(path) as image:
                image = image.convert(self.mode)
        except OSError as exc:
            raise DataError(
                f"{path}: cannot decode this image ({exc}); remove or replace it"
            ) from exc
        if self.transform is not None:
            return self.transform(image), int(self.targets[index])
        pixels = torch.from_numpy(np.array(image))
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        return pixels, int(self.targets[index])


_META = "arraystore.json"
_VERSION = 1


class ArrayStore(Dataset):
    """Samples in memory-mapped shards on disk, one numpy array per field.

    `ArrayStore.write` makes a store; `ArrayStore(path)` reads it. A sample is
    a tuple of tensors in field order (one tensor if there is one field),
    copied out of the map so nothing holds the shard open. Maps are opened on
    first use in each worker and dropped after `max_mapped_bytes` have been
    read, because every mapped page counts in the process's RSS until then.

        >>> import tempfile, os, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "store")
        >>> store = ArrayStore.write(path, {"x": np.arange(12.0).reshape(6, 2),
        ...                                 "y": np.arange(6)}, shard_bytes=48)
        >>> len(store), store.num_shards, store[4]
        (6, 3, (tensor([8., 9.], dtype=torch.float64), tensor(4)))
    """

    def __init__(self, path: str | os.PathLike, *, max_mapped_bytes: int | str = "64MiB") -> None:
        self.path = Path(path)
        try:
            meta = json.loads((self.path / _META).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{self.path} is not an ArrayStore ({exc}); make one with "
                "ArrayStore.write(path, arrays)"
            ) from exc
        if meta.get("version") != _VERSION:
            raise DataError(
                f"{self.path}: ArrayStore version {meta.get('version')} is not "
                f"{_VERSION}; rewrite it with this memfit"
            )
        self.fields: tuple[str, ...] = tuple(f["name"] for f in meta["fields"])
        self.dtypes = tuple(np.dtype(f["dtype"]) for f in meta["fields"])
        self.shapes = tuple(tuple(f["shape"]) for f in meta["fields"])
        rows = np.array(meta["shard_rows"], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.max_mapped_bytes = _size(max_mapped_bytes, "max_mapped_bytes")
        self._maps: dict[tuple[int, int], np.memmap] = {}
        self._owner = os.getpid()
        self.mapped_bytes = 0
        """Bytes read through the maps now open (they count in RSS until dropped)."""

    @property
    def num_shards(self) -> int:
        return len(self._starts) - 1

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"], state["mapped_bytes"] = {}, 0  # each worker maps for itself
        return state

    def _map(self, shard: int, field: int) -> np.memmap:
        if self._owner != os.getpid():  # a forked worker: do not share the parent's maps
            self._maps, self._owner, self.mapped_bytes = {}, os.getpid(), 0
        key = (shard, field)
        if key not in self._maps:
            rows = int(self._starts[shard + 1] - self._starts[shard])
            self._maps[key] = np.memmap(
                self.path / _shard_file(shard, field),
                dtype=self.dtypes[field],
                mode="r",
                shape=(rows, *self.shapes[field]),
            )
        return self._maps[key]

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for an ArrayStore of {n} samples")
        index %= n
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        local = index - int(self._starts[shard])
        sample = []
        for field in range(len(self.fields)):
            value = np.array(self._map(shard, field)[local])  # a copy: the map can go
            self.mapped_bytes += value.nbytes
            sample.append(torch.from_numpy(value))
        if self.mapped_bytes > self.max_mapped_bytes:
            self._maps.clear()  # unmapping returns the touched pages (nanoGPT remaps per batch)
            self.mapped_bytes = 0
        return sample[0] if len(sample) == 1 else tuple(sample)

    @classmethod
    def write(
        cls,
        path: str | os.PathLike,
        arrays: Any,
        *,
        shard_bytes: int | str = "256MB",
        overwrite: bool = False,
    ) -> ArrayStore:
        """Write `arrays` into shards of about `shard_bytes` at `path` (a new folder).

        `arrays` is one chunk (a dict of name -> array, a tuple of arrays, or one
        array) or an iterable of such chunks, all with the same fields; arrays in
        a chunk share their first dimension. The folder appears only when every
        chunk is written; on error nothing is left behind.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise DataError(f"{target} exists; pass overwrite=True or another path")
        limit = _size(shard_bytes, "shard_bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        follow_umask(building)  # mkdtemp makes it 0700; the store should read like any folder
        try:
            meta = _ShardWriter(building, limit).write_all(_chunks(arrays))
            (building / _META).write_text(json.dumps(meta))
            _replace_folder(building, target)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return cls(target)


class _ShardWriter:
    """Appends chunks to raw shard files, starting a new shard every `rows_per_shard` rows."""

    def __init__(self, folder: Path, shard_bytes: int) -> None:
        self.folder, self.shard_bytes = folder, shard_bytes
        self.fields: list[dict[str, Any]] = []
        self.shard_rows: list[int] = []

    def write_all(self, chunks: Iterator[dict[str, np.ndarray]]) -> dict[str, Any]:
        shard_files = ExitStack()  # the open files of the shard being written
        handles: list[Any] = []
        rows_per_shard = 0
        with shard_files:
            for chunk in chunks:
                if not self.fields:
                    rows_per_shard = self._start(chunk)
                self._check(chunk)
                n, done = len(next(iter(chunk.values()))), 0
                while done < n:
                    if not self.shard_rows or self.shard_rows[-1] == rows_per_shard:
                        shard_files.close()
                        self.shard_rows.append(0)
                        shard = len(self.shard_rows) - 1
                        files = [
                            self.folder / _shard_file(shard, i) for i in range(len(self.fields))
                        ]
                        # closed by the ExitStack when the shard is full or on error
                        handles = [
                            shard_files.enter_context(open(f, "wb"))  # noqa: SIM115
                            for f in files
                        ]
                    take = min(n - done, rows_per_shard - self.shard_rows[-1])
                    for handle, values in zip(handles, chunk.values(), strict=True):
                        handle.write(np.ascontiguousarray(values[done : done + take]).data)
                    self.shard_rows[-1] += take
                    done += take
        if not self.fields:
            raise DataError("no arrays to write; pass a dict of arrays or an iterable of them")
        return {"version": _VERSION, "fields": self.fields, "shard_rows": self.shard_rows}

    def _start(self, chunk: dict[str, np.ndarray]) -> int:
        row_bytes = 0
        for name, values in chunk.items():
            if values.dtype.hasobject:
                raise DataError(
                    f"field {name!r} holds Python objects, which cannot be "
                    "memory-mapped; convert it to a numeric dtype"
                )
            try:
                torch.from_numpy(np.empty(0, dtype=values.dtype))
            except TypeError as exc:
                raise DataError(
                    f"field {name!r} has dtype {values.dtype}, which torch cannot "
                    "hold; give numeric or bool arrays (one per record field)"
                ) from exc
            if values.ndim == 0:
                raise DataError(f"field {name!r} is a scalar; give arrays with one row per sample")
            self.fields.append(
                {"name": name, "dtype": values.dtype.str, "shape": list(values.shape[1:])}
            )
            row_bytes += values.dtype.itemsize * int(np.prod(values.shape[1:], dtype=np.int64))
        return max(1, self.shard_bytes // max(row_bytes, 1))

    def _check(self, chunk: dict[str, np.ndarray]) -> None:
        names = [f["name"] for f in self.fields]
        if list(chunk) != names:
            raise DataError(
                f"a chunk has fields {list(chunk)}, the first had {names}; "
                "give every chunk the same fields"
            )
        lengths = {len(v) for v in chunk.values()}
        if len(lengths) != 1:
            raise DataError(
                f"arrays in one chunk have different lengths {sorted(lengths)}; "
                "give one row per sample in every field"
            )
        for field, values in zip(self.fields, chunk.values(), strict=True):
            if values.dtype.str != field["dtype"] or list(values.shape[1:]) != field["shape"]:
                raise DataError(
                    f"field {field['name']!r} changed from {field['dtype']} "
                    f"{field['shape']} to {values.dtype} {list(values.shape[1:])}; "
                    "cast every chunk the same way"
                )


def _chunks(arrays: Any) -> Iterator[dict[str, np.ndarray]]:
    if _is_chunk(arrays):
        yield _as_chunk(arrays)
        return
    if not isinstance(arrays, Iterable):
        raise DataError(
            f"cannot write a {type(arrays).__name__}; pass arrays or an iterable of dicts of arrays"
        )
    for chunk in arrays:
        if not _is_chunk(chunk):
            raise DataError(
                f"a chunk is a {type(chunk).__name__}; give dicts of arrays, "
                "tuples of arrays or arrays"
            )
        yield _as_chunk(chunk)


def _is_chunk(value: Any) -> bool:
    return isinstance(value, (np.ndarray, Mapping, torch.Tensor)) or (
        isinstance(value, tuple) and all(isinstance(v, (np.ndarray, torch.Tensor)) for v in value)
    )


def _as_chunk(value: Any) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, tuple):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        items = [("x", value)]
    return {str(k): (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in items}


def _replace_folder(built: Path, target: Path) -> None:
    if not target.exists():
        built.rename(target)
        return
    # Move the old one aside first, so a crash leaves one complete store under some name.
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _shard_file(shard: int, field: int) -> str:
    return f"shard-{shard:05d}.field-{field}.bin"  # by position: field names may hold any text


def _size(value: int | str, name: str) -> int:
    try:
        return Budget.parse(value).bytes
    except BudgetError as exc:
        raise DataError(f"{name}={value!r} is not a size; write it like '256MB'") from exc
