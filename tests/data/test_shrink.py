"""shrink / fit_shrink: smallest faithful dtypes, checked value by value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memfit.data import ShrinkPlan, fit_shrink, shrink
from memfit.errors import DataError, LossyConversionError, OutOfRangeError


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.dtypes.items()}


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    if not (a.isna().to_numpy() == b.isna().to_numpy()).all():
        return False
    keep = a.notna().to_numpy()
    return bool((a.to_numpy(dtype=object)[keep] == b.to_numpy(dtype=object)[keep]).all())


def test_integers_take_the_smallest_type_with_inclusive_bounds():
    df = pd.DataFrame(
        {
            "u8_edge": [0, 255],
            "u16": [0, 256],
            "i8_edge": [-128, 127],
            "i16": [-129, 0],
            "u32": [0, 2**32 - 1],
            "big": [0, 2**40],
        }
    )
    out = shrink(df).frame
    assert _dtypes(out) == {
        "u8_edge": "uint8",
        "u16": "uint16",
        "i8_edge": "int8",
        "i16": "int16",
        "u32": "uint32",
        "big": "int64",
    }
    for name in df:
        assert (out[name].astype(np.int64) == df[name]).all()


def test_float_with_missing_whole_numbers_becomes_nullable_int():
    df = pd.DataFrame({"count": [1.0, np.nan, 200.0, 3.0]})
    out = shrink(df).frame
    assert str(out["count"].dtype) == "UInt8"
    assert out["count"].isna().tolist() == [False, True, False, False]
    assert out["count"].dropna().tolist() == [1, 200, 3]


def test_float32_only_when_every_value_round_trips():
    exact = pd.DataFrame({"x": [0.5, 0.25, -1.75, np.nan]})
    inexact = pd.DataFrame({"x": [0.1, 0.5]})
    assert shrink(exact).frame["x"].dtype == np.float32
    assert shrink(inexact).frame["x"].dtype == np.float64


def test_lossy_float32_needs_lossless_false_and_reports_error():
    df = pd.DataFrame({"price": [19.99, 0.1, 123.45]})
    with pytest.raises(DataError, match="lossless=False"):
        shrink(df, rtol=1e-6)
    result = shrink(df, lossless=False, rtol=1e-6)
    report = result.columns[0]
    assert report.new_dtype == "float32"
    assert 0 < report.max_error <= 1e-6
    assert shrink(df, lossless=False, rtol=1e-12).frame["price"].dtype == np.float64


def test_float16_only_on_request_and_only_when_exact():
    halves = pd.DataFrame({"x": [0.5, 1.0, 2.25]})
    too_big = pd.DataFrame({"x": [0.5, 70000.5]})  # beyond float16's 65504
    assert shrink(halves).frame["x"].dtype == np.float32
    assert shrink(halves, float16=True).frame["x"].dtype == np.float16
    assert shrink(too_big, float16=True).frame["x"].dtype == np.float32


def test_strings_become_category_only_when_smaller():
    rng = np.random.default_rng(0)
    few = pd.Series(rng.choice(["red", "green", "blue"], 5000))
    unique = pd.Series([f"user-{i:06d}" for i in range(5000)])
    df = pd.DataFrame({"few": few, "unique": unique})
    result = shrink(df)
    assert isinstance(result.frame["few"].dtype, pd.CategoricalDtype)
    assert not isinstance(result.frame["unique"].dtype, pd.CategoricalDtype)
    for report in result.columns:
        assert report.after_bytes <= report.before_bytes
    assert _same_values(df["few"], result.frame["few"])


def test_object_strings_with_missing_keep_every_value():
    df = pd.DataFrame({"s": pd.Series(["a", np.nan, "b", "a", np.nan] * 200, dtype=object)})
    out = shrink(df).frame
    assert out["s"].isna().sum() == 400
    assert _same_values(df["s"], out["s"])
    assert out.memory_usage(deep=True).sum() < df.memory_usage(deep=True).sum()
    # None and NaN in one object column are two things pandas keeps apart: left as it is.
    mixed = pd.DataFrame({"s": pd.Series(["a", None, "b", "a", np.nan] * 200, dtype=object)})
    result = shrink(mixed)
    assert result.frame["s"].dtype == object and "would change" in result.columns[0].note
    assert [type(v) for v in result.frame["s"][:5]] == [str, type(None), str, str, float]


def test_other_dtypes_are_handled_not_crashed_on():
    df = pd.DataFrame(
        {
            "flag": [True, False, True],
            "when": pd.date_range("2024-01-01", periods=3, tz="Europe/Oslo"),
            "naive": pd.date_range("2024-01-01", periods=3),
            "took": pd.to_timedelta([1, 2, 3], unit="s"),
            "nullable": pd.array([1, None, 3], dtype="Int64"),
            "arrow_int": pd.array([1, 2, None], dtype="int64[pyarrow]"),
            "arrow_float": pd.array([0.5, None, 1.5], dtype="double[pyarrow]"),
            "mixed": pd.Series([1, "a", 2.5], dtype=object),
            "cat": pd.Categorical(["x", "y", "x"]),
        }
    )
    result = shrink(df)
    out = result.frame
    assert str(out["nullable"].dtype) == "UInt8"
    assert str(out["arrow_int"].dtype) == "uint8[pyarrow]"
    assert str(out["arrow_float"].dtype) == "float[pyarrow]"
    for name in ("flag", "when", "naive", "took", "mixed", "cat"):
        assert out[name].dtype == df[name].dtype
        assert _same_values(df[name], out[name])
    assert all(c.changed == 0 for c in result.columns)


def test_input_frame_is_never_mutated():
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "x"], "c": [1.0, np.nan, 3.0]})
    before = df.copy(deep=True)
    dtypes = df.dtypes.copy()
    shrink(df)
    pd.testing.assert_frame_equal(df, before)
    assert (df.dtypes == dtypes).all()


def test_sizes_are_measured_deep():
    df = pd.DataFrame({"s": pd.Series(["some text"] * 1000, dtype=object), "n": range(1000)})
    result = shrink(df)
    assert result.before_bytes == df.memory_usage(deep=True).sum()
    assert result.after_bytes == result.frame.memory_usage(deep=True).sum()
    assert result.to_dict()["columns"][0]["old_dtype"] == "object"


def test_plan_gives_test_data_identical_dtypes_and_codes(tmp_path):
    train = pd.DataFrame(
        {
            "city": ["Oslo", "Rome", "Paris", "Oslo"] * 10,
            "n": [1, 2, 3, 4] * 10,
            "x": [0.5, np.nan, 1.0, 2.0] * 10,
        }
    )
    test = pd.DataFrame(
        {"city": ["Paris", "Paris", "Oslo"], "n": [4, 1, 2], "x": [1.0, 0.5, np.nan]}
    )
    plan = fit_shrink(train)
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = ShrinkPlan.load(path)
    train_out, test_out = loaded.apply(train), loaded.apply(test)
    assert _dtypes(train_out) == _dtypes(test_out) == _dtypes(plan.apply(train))
    codes = dict(zip(train_out["city"], train_out["city"].cat.codes, strict=True))
    assert test_out["city"].cat.codes.tolist() == [codes["Paris"], codes["Paris"], codes["Oslo"]]
    assert test_out["city"].tolist() == ["Paris", "Paris", "Oslo"]


def test_plan_refuses_values_outside_the_fitted_dtype():
    plan = fit_shrink(pd.DataFrame({"n": [0, 200] * 50, "city": ["a", "b"] * 50}))
    assert plan.columns[1].kind == "category"
    with pytest.raises(OutOfRangeError, match="outside uint8"):
        plan.apply(pd.DataFrame({"n": [300], "city": ["a"]}))
    with pytest.raises(OutOfRangeError, match="fitted categories"):
        plan.apply(pd.DataFrame({"n": [1], "city": ["zzz"]}))
    with pytest.raises(OutOfRangeError, match="missing"):
        plan.apply(pd.DataFrame({"n": [None], "city": ["a"]}))


def test_plan_refuses_a_lossy_float():
    plan = fit_shrink(pd.DataFrame({"x": [0.5, 0.25]}))
    with pytest.raises(LossyConversionError):
        plan.apply(pd.DataFrame({"x": [0.1]}))


def test_plan_from_malformed_json_is_a_data_error():
    with pytest.raises(DataError):
        ShrinkPlan.from_json("{}")
    with pytest.raises(DataError):
        ShrinkPlan.from_json("not json")


def test_duplicate_column_names_are_refused():
    df = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(DataError, match="unique"):
        shrink(df)


def test_random_frames_round_trip_exactly():
    rng = np.random.default_rng(42)
    for _ in range(20):
        n = int(rng.integers(1, 300))
        df = pd.DataFrame(
            {
                "i": rng.integers(
                    -(2 ** int(rng.integers(1, 62))), 2 ** int(rng.integers(1, 62)), n
                ),
                "f": rng.normal(size=n) * 10 ** float(rng.integers(-5, 5)),
                "w": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 70000, n)),
                "s": rng.choice(["a", "bb", "ccc", None], n),
            }
        )
        out = shrink(df).frame
        for name in df:
            assert _same_values(df[name], out[name]), name


def test_polars_frames_are_shrunk_with_the_same_rules():
    pl = pytest.importorskip("polars")
    df = pl.DataFrame(
        {
            "i": list(range(300)),
            "half": [0.5 * i for i in range(300)],
            "tenth": [0.1 * i for i in range(300)],
            "whole": [float(i) if i % 3 else None for i in range(300)],
        }
    )
    result = shrink(df)
    assert result.frame.dtypes == [pl.UInt16, pl.Float32, pl.Float64, pl.UInt16]
    assert result.frame["whole"].null_count() == 100
    assert result.frame["i"].cast(pl.Int64).to_list() == list(range(300))
    assert all(c.changed == 0 for c in result.columns)


def test_fast_deep_size_of_str_objects_equals_pandas():
    from memfit.data._shrink_memory import deep_bytes, object_strings

    series = pd.Series(["a", None, "héllo", np.nan, "xyz" * 10, "日本", ""] * 300, dtype=object)
    strings = object_strings(series)
    assert strings is not None and strings.null_count == 600
    assert deep_bytes(series, strings) == series.memory_usage(deep=True, index=False)
    # numpy's str_ has another size and bytes are not text: both left to pandas.
    assert object_strings(pd.Series([np.str_("a"), "b"], dtype=object)) is None
    assert object_strings(pd.Series([b"a", "b"], dtype=object)) is None


def test_category_hash_table_size_matches_what_pandas_builds():
    from memfit.data._shrink_memory import hash_table_bytes

    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 99, 100, 789, 5000, 100_000):
        names = rng.permutation([f"v{i:06d}" for i in range(n)])
        categories = pd.Index(names)
        before = categories.memory_usage(deep=True)
        categories.get_loc(names[0])  # first lookup: pandas builds the table
        assert categories.memory_usage(deep=True) - before == hash_table_bytes(n)


def test_high_cardinality_strings_stay_strings_without_a_full_hash_and_values_hold():
    rng = np.random.default_rng(1)
    n = 200_000
    df = pd.DataFrame(
        {
            "id": pd.Series(np.char.add("id-", rng.integers(0, n, n).astype(str)), dtype=object),
            "few": pd.Series(rng.choice(["x", "y"], n), dtype=object),
        }
    )
    result = shrink(df)
    assert str(result.frame["id"].dtype) == "str"
    assert isinstance(result.frame["few"].dtype, pd.CategoricalDtype)
    assert result.frame["id"].tolist() == df["id"].tolist()
    assert result.frame["few"].tolist() == df["few"].tolist()
    assert result.after_bytes == result.frame.memory_usage(deep=True).sum()
    assert result.before_bytes == df.memory_usage(deep=True).sum()
