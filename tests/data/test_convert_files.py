"""convert as a user meets it: output types, errors, signals, leftovers, permissions, memory."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memfit.data import convert
from memfit.errors import ConvertError


def _memfit(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "memfit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_output_keeps_dates_times_and_types_with_zstd(tmp_path, table_csv):
    src, dst = tmp_path / "t.csv", tmp_path / "t.parquet"
    table_csv(src, 20_000)
    result = convert(src, dst)
    stored = pq.ParquetFile(dst)
    schema = stored.schema_arrow
    assert schema.field("day").type == pa.date32()
    assert schema.field("clock").type == pa.time64("us")
    assert pa.types.is_timestamp(schema.field("at").type)
    assert pa.types.is_dictionary(schema.field("kind").type)
    codecs = {stored.metadata.row_group(0).column(i).compression for i in range(len(schema))}
    assert codecs == {"ZSTD"} and result.compression == "zstd"
    back = pd.read_parquet(dst)
    expected = pd.read_csv(src)
    assert str(back["count"].dtype) == "UInt8" and str(back["id"].dtype) == "uint16"
    assert back["day"].astype(str).tolist() == expected["day"].tolist()
    assert back["clock"].astype(str).tolist() == expected["clock"].tolist()
    assert back["note"].tolist() == expected["note"].tolist()
    assert back["price"].tolist() == expected["price"].tolist()


def test_compression_is_chosen(tmp_path, table_csv):
    src = tmp_path / "t.csv"
    table_csv(src, 5_000)
    convert(src, tmp_path / "s.parquet", compression="snappy")
    assert pq.ParquetFile(tmp_path / "s.parquet").metadata.row_group(0).column(0).compression == (
        "SNAPPY"
    )
    with pytest.raises(ConvertError, match="unknown compression"):
        convert(src, tmp_path / "x.parquet", compression="zip")


def test_late_text_in_a_number_column_keeps_the_original_text(tmp_path, small_chunks):
    # "007" and "+5" parse as the numbers 7 and 5; once the column turns out to be text,
    # the rows already written must come back as they were written in the file.
    rows = ["007", "+5", "12"] * 70_000 + ["n/a-ish"]
    src, dst = tmp_path / "t.csv", tmp_path / "t.parquet"
    src.write_text("code\n" + "\n".join(rows) + "\n")
    result = convert(src, dst)
    assert result.rewritten_rows > 0
    assert pd.read_parquet(dst)["code"].tolist() == rows


def test_directory_input_and_unwritable_output_folder(tmp_path):
    with pytest.raises(ConvertError, match="is a folder"):
        convert(tmp_path, tmp_path / "o.parquet")
    src = tmp_path / "a.csv"
    src.write_text("a\n1\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # As root the permission bits do not stop a write: a read-only filesystem does.
        target = locked if not os.access(locked, os.W_OK) else Path("/proc/sys")
        with pytest.raises(ConvertError, match="writable"):
            convert(src, target / "o.parquet")
    finally:
        locked.chmod(0o700)
    with pytest.raises(ConvertError, match="does not exist"):
        convert(src, tmp_path / "missing" / "o.parquet")


def test_truncated_gzip_is_named_as_such(tmp_path):
    src = tmp_path / "t.csv.gz"
    src.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 200_000)[:-200])
    with pytest.raises(ConvertError, match="truncated or damaged gzip"):
        convert(src, tmp_path / "o.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv.gz"]


def test_undecodable_bytes_ask_for_an_encoding_and_encoding_fixes_it(tmp_path):
    src = tmp_path / "latin.csv"
    src.write_bytes(b"name,n\n" + "café,1\nnaïve,2\n".encode("latin-1"))
    with pytest.raises(ConvertError, match="--encoding"):
        convert(src, tmp_path / "o.parquet")
    convert(src, tmp_path / "o.parquet", encoding="latin-1")
    assert pd.read_parquet(tmp_path / "o.parquet")["name"].tolist() == ["café", "naïve"]
    cli = _memfit("convert", str(src), str(tmp_path / "c.parquet"))
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "--encoding" in cli.stderr


def test_output_files_follow_the_umask(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("a\n1\n")
    old = os.umask(0o022)
    try:
        convert(src, tmp_path / "o.parquet")
    finally:
        os.umask(old)
    assert (tmp_path / "o.parquet").stat().st_mode & 0o777 == 0o644


def _start(src: Path, dst: Path) -> subprocess.Popen:
    # One worker and small chunks: the conversion runs long enough to be interrupted.
    command = ["convert", str(src), str(dst), "--workers", "1", "--max-memory", "200MB"]
    return subprocess.Popen(
        [sys.executable, "-m", "memfit", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.memfit-partial"))


def _wait_for_partial(proc, folder: Path) -> None:
    deadline = time.monotonic() + 60
    while not _partials(folder):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_leave_nothing_behind(tmp_path, table_csv, signum):
    src, dst = tmp_path / "big.csv", tmp_path / "out.parquet"
    # Long enough that the signal lands mid-conversion, even on an idle machine.
    table_csv(src, 1_200_000)
    proc = _start(src, dst)
    _wait_for_partial(proc, tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert not dst.exists() and _partials(tmp_path) == []


@pytest.mark.slow
def test_sigkill_leftover_is_named_and_removed_by_the_next_run(tmp_path, table_csv):
    src, dst = tmp_path / "big.csv", tmp_path / "out.parquet"
    table_csv(src, 400_000)
    proc = _start(src, dst)
    _wait_for_partial(proc, tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    left = _partials(tmp_path)
    assert len(left) == 1 and left[0].name.startswith(".out.parquet.")
    assert str(proc.pid) in left[0].name
    small = tmp_path / "small.csv"
    small.write_text("a\n1\n")
    convert(small, tmp_path / "other.parquet")
    assert _partials(tmp_path) == []


# The kernel's high-water mark of the child's own address space, read as it exits: a
# forked child's ru_maxrss would include the parent's resident memory at the fork.
_PEAK_AFTER_MAIN = """
import sys
from memfit.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(next(l for l in status.splitlines() if l.startswith("VmHWM")), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_rss_measured_by_the_os_stays_within_the_bound(tmp_path, table_csv):
    src = tmp_path / "rss.csv"
    table_csv(src, 600_000)  # about 50 MB of text: many chunks under a 200 MB bound
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_AFTER_MAIN,
            "convert",
            str(src),
            str(tmp_path / "o.parquet"),
            "--max-memory",
            "200MB",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    peak = int(out.stderr.split("VmHWM:")[1].split()[0]) * 1024  # kB
    assert pq.ParquetFile(tmp_path / "o.parquet").metadata.num_rows == 600_000
    assert peak <= 200 * 10**6 * 1.05, f"peak RSS {peak / 1e6:.0f} MB over the 200 MB bound"


def test_saved_plans_checkpoints_and_stores_follow_the_umask(tmp_path):
    import numpy as np

    from memfit.data import ArrayStore, fit_shrink
    from memfit.data._online_checkpoint import save

    old = os.umask(0o022)
    try:
        fit_shrink(pd.DataFrame({"n": [1, 2]})).save(tmp_path / "plan.json")
        save(tmp_path / "run.ckpt", {"x": 1}, "pickle")
        ArrayStore.write(tmp_path / "store", {"x": np.arange(4)})
    finally:
        os.umask(old)
    assert (tmp_path / "plan.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run.ckpt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o755
