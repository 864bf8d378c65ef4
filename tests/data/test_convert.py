"""convert: streaming CSV/Parquet -> shrunk Parquet, with types decided over the whole file."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from memfit.data import convert
from memfit.errors import ConvertError


def _write_rows(path, header, rows):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


@pytest.fixture(autouse=True)
def _small_chunks(small_chunks):
    pass


def test_late_decimal_and_late_missing_value_get_one_consistent_type(tmp_path):
    rows = [f"{i},{i % 100},{i}" for i in range(60_000)]
    rows.append("60000,,0.5")  # first missing count, first decimal: in the last block
    src, dst = tmp_path / "late.csv", tmp_path / "late.parquet"
    _write_rows(src, "id,count,late", rows)
    result = convert(src, dst)
    assert result.rows == 60_001
    back = pd.read_parquet(dst)
    assert str(back["count"].dtype) == "UInt8" and back["count"].isna().sum() == 1
    assert back["late"].dtype == np.float32  # whole numbers < 2**24 and 0.5: exact
    assert back["late"].iloc[-1] == 0.5 and back["late"].iloc[59_999] == 59_999
    assert str(back["id"].dtype) == "uint16"
    expected = pd.read_csv(src)
    for name in expected:
        assert (back[name].astype("float64").fillna(-1) == expected[name].fillna(-1)).all()


def test_late_text_turns_a_number_column_into_strings(tmp_path):
    rows = [str(i) for i in range(60_000)] + ["n/a-ish"]
    src, dst = tmp_path / "t.csv", tmp_path / "t.parquet"
    _write_rows(src, "x", rows)
    convert(src, dst)
    back = pd.read_parquet(dst)["x"]
    assert back.iloc[0] == "0" and back.iloc[-1] == "n/a-ish"


def test_huge_integers_stay_exact(tmp_path):
    src, dst = tmp_path / "big.csv", tmp_path / "big.parquet"
    _write_rows(src, "id", ["1", "123456789012345678901234567890"])
    convert(src, dst)
    assert pd.read_parquet(dst)["id"].tolist() == ["1", "123456789012345678901234567890"]


def test_quoted_newlines_gzip_and_sizes_match_pandas(tmp_path):
    frame = pd.DataFrame(
        {
            "text": [
                'multi\nline "quoted", comma' if i % 1000 == 0 else f"t{i % 7}"
                for i in range(20_000)
            ],
            "price": np.round(np.linspace(0, 99, 20_000), 2),
            "flag": [i % 3 == 0 for i in range(20_000)],
        }
    )
    plain, packed = tmp_path / "q.csv", tmp_path / "q.csv.gz"
    frame.to_csv(plain, index=False)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for src in (plain, packed):
        dst = tmp_path / "q.parquet"
        result = convert(src, dst)
        back = pd.read_parquet(dst)
        assert back["text"].astype(str).tolist() == frame["text"].tolist()
        assert back["price"].tolist() == frame["price"].tolist()
        assert isinstance(back["text"].dtype, pd.CategoricalDtype)
        loaded = pd.read_csv(src)
        # The reported sizes are those pandas shows for the input and the output.
        assert result.before_bytes == pytest.approx(loaded.memory_usage(deep=True).sum(), 0.01)
        assert result.after_bytes == pytest.approx(back.memory_usage(deep=True).sum(), 0.05)


def test_header_only_file(tmp_path):
    src, dst = tmp_path / "h.csv", tmp_path / "h.parquet"
    src.write_text("a,b,c\n")
    result = convert(src, dst)
    assert result.rows == 0
    assert list(pd.read_parquet(dst).columns) == ["a", "b", "c"]


def test_bad_input_leaves_no_file_under_the_final_name(tmp_path):
    src, dst = tmp_path / "bad.csv", tmp_path / "bad.parquet"
    src.write_text("a,b\n1,2\n3\n4,5,6\n")  # ragged rows
    with pytest.raises(ConvertError):
        convert(src, dst)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]


def test_existing_output_survives_a_failed_conversion(tmp_path):
    src, dst = tmp_path / "bad.csv", tmp_path / "out.parquet"
    dst.write_bytes(b"keep me")
    _write_rows(src, "a", [str(i) for i in range(60_000)] + ["1,2"])  # ragged, late
    with pytest.raises(ConvertError):
        convert(src, dst)
    assert dst.read_bytes() == b"keep me"


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ConvertError, match="does not exist"):
        convert(tmp_path / "missing.csv", tmp_path / "o.parquet")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConvertError, match="header"):
        convert(empty, tmp_path / "o.parquet")
    ok = tmp_path / "ok.csv"
    ok.write_text("a\n1\n")
    with pytest.raises(ConvertError, match=r"\.parquet"):
        convert(ok, tmp_path / "o.csv")
    with pytest.raises(ConvertError, match="max-memory"):
        convert(ok, tmp_path / "o.parquet", max_memory="1MB")


def test_parquet_input_is_shrunk(tmp_path):
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pd.DataFrame(
        {"n": np.arange(1000, dtype=np.int64), "f": np.arange(1000) / 2, "s": ["a", "b"] * 500}
    ).to_parquet(src)
    result = convert(src, dst)
    back = pd.read_parquet(dst)
    assert str(back["n"].dtype) == "uint16" and back["f"].dtype == np.float32
    assert back["n"].tolist() == list(range(1000))
    assert result.after_bytes < result.before_bytes
    assert pq.ParquetFile(dst).metadata.num_rows == 1000


def test_progress_reports_bytes_read_up_to_the_file_size(tmp_path):
    src = tmp_path / "p.csv"
    _write_rows(src, "x", [str(i) for i in range(50_000)])
    seen = []
    convert(src, tmp_path / "p.parquet", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == src.stat().st_size
    assert len({d for d, _ in seen}) > 3  # it moves while the file is read, not only at the end
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def _memfit(*args):
    return subprocess.run(
        [sys.executable, "-m", "memfit", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli_convert_and_shrink_json_contract(tmp_path):
    src = tmp_path / "c.csv"
    _write_rows(src, "n,s", [f"{i},{'ab'[i % 2]}" for i in range(1000)])
    out = _memfit("convert", str(src), str(tmp_path / "c.parquet"), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["rows"] == 1000 and isinstance(data["before_bytes"], int)
    assert {c["name"]: c["new_dtype"] for c in data["columns"]} == {"n": "uint16", "s": "category"}
    assert data["after_bytes"] < data["before_bytes"]
    report = _memfit("shrink", str(src), "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["destination"] is None
    bad = _memfit("convert", str(tmp_path / "nope.csv"), str(tmp_path / "x.parquet"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def test_library_default_bound_is_on_top_of_what_the_process_holds(tmp_path):
    import numpy as np

    held = np.ones(80_000_000)  # 640 MB resident, more than the command line's default bound
    src = tmp_path / "small.csv"
    src.write_text("a,b\n1,x\n2,y\n")
    result = convert(src, tmp_path / "small.parquet")
    assert result.rows == 2 and held[-1] == 1.0
