"""Where tables live: local paths and fsspec URLs, opened as pyarrow files.

`s3://`, `gs://`, `hdfs://` use pyarrow's own filesystems; any other URL
(`https://`, `az://`, `memory://`, ...) goes through fsspec. Either way the
result is a pyarrow file that reads, and for most stores seeks, without
downloading the whole object first.

Files this package writes follow the umask, like files made by `open`:
`tempfile.mkstemp` would make them private (0600) whatever the umask says.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from memfit.errors import DataError, MissingDependencyError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str | os.PathLike) -> bool:
    """Whether `text` names a remote object (`scheme://...`), not a local path."""
    return bool(_URL.match(str(text))) and not str(text).startswith("file://")


@dataclass(frozen=True, slots=True)
class Location:
    """A file on some filesystem: what to open, what to call it in messages."""

    filesystem: pafs.FileSystem
    path: str
    text: str
    error: type[DataError] = DataError
    """The error class raised for this file (ConvertError, StreamError...)."""

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffixes(self) -> list[str]:
        return [s.lower() for s in Path(self.name).suffixes]

    def size(self) -> int:
        return self.info().size

    def info(self) -> pafs.FileInfo:
        try:
            info = self.filesystem.get_file_info(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise self.error(
                f"cannot reach {self.text} ({_first_line(exc)}); check the URL"
            ) from exc
        if info.type == pafs.FileType.NotFound:
            raise self.error(f"input file {self.text!r} does not exist; check the path")
        if info.type == pafs.FileType.Directory:
            raise self.error(
                f"input {self.text!r} is a folder, not a file; name one file inside it"
            )
        return info

    def open_sequential(self) -> pa.NativeFile:
        # compression=None: the caller decompresses (pyarrow would guess from the suffix).
        return self.filesystem.open_input_stream(self.path, compression=None)

    @property
    def seekable(self) -> bool:
        """Local files and object stores read by range; others may only stream."""
        return isinstance(self.filesystem, (pafs.LocalFileSystem, pafs.S3FileSystem)) or (
            type(self.filesystem).__name__ in ("GcsFileSystem", "HadoopFileSystem")
        )

    def open_random(self) -> pa.NativeFile:
        return self.filesystem.open_input_file(self.path)


def locate(text: str | os.PathLike, error: type[DataError] = DataError) -> Location:
    """The filesystem and path of a local path or a URL (raises `error` if unusable)."""
    text = str(text)
    if not is_url(text):
        local = text.removeprefix("file://")
        return Location(pafs.LocalFileSystem(), str(Path(local).absolute()), text, error)
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("s3", "gs", "gcs", "hdfs", "viewfs"):
        try:
            filesystem, path = pafs.FileSystem.from_uri(text)
            return Location(filesystem, path, text, error)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, OSError) as exc:
            if "not built" not in str(exc).lower() and "support" not in str(exc).lower():
                raise error(f"cannot open {text} ({_first_line(exc)})") from exc
    return _fsspec_location(text, error)


def _fsspec_location(text: str, error: type[DataError]) -> Location:
    try:
        import fsspec
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading {text} needs fsspec; install it with: pip install 'memfit[remote]'"
        ) from exc
    try:
        filesystem, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as exc:
        raise MissingDependencyError(
            f"cannot read {text}: {_first_line(exc)}; install the fsspec package for that "
            "scheme (for example pip install 's3fs' or 'gcsfs' or 'aiohttp')"
        ) from exc
    return Location(pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path, text, error)


def create_following_umask(path: Path) -> int:
    """Create `path` (which must not exist) for writing, with the umask's permissions."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def temporary_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file next to `path` (to be renamed over it), with the umask's permissions."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return create_following_umask(candidate), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def follow_umask(folder: Path) -> None:
    """Give a folder made private by `tempfile.mkdtemp` the permissions `mkdir` would."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)


def check_output_folder(folder: Path, error: type[DataError] = DataError) -> None:
    """One clear error for an output folder that is missing or that cannot be written."""
    if not folder.is_dir():
        raise error(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(
            f"output folder {str(folder)!r} is not writable; choose another folder "
            "or change its permissions"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
