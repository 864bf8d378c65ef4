from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from memfit.data import TableStream
from memfit.errors import StreamError

N_ROWS = 1000


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(N_ROWS),
            "a": rng.normal(size=N_ROWS).round(3),
            "b": rng.integers(-50, 50, size=N_ROWS),
            "note": [f'say "hi"\nline {i}' if i % 7 == 0 else f"n{i}" for i in range(N_ROWS)],
            "label": rng.choice(["cat", "dog", "eel"], size=N_ROWS),
        }
    )


@pytest.fixture(scope="module")
def files(frame, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tables")
    csv_path, parquet_path, db_path = root / "t.csv", root / "t.parquet", root / "t.db"
    frame.to_csv(csv_path, index=False)  # quotes the notes that hold newlines
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), parquet_path, row_group_size=170
    )
    with sqlite3.connect(db_path) as db:
        frame.to_sql("t", db, index=False)
    return {"csv": str(csv_path), "parquet": str(parquet_path), "sqlite": f"sqlite:///{db_path}"}


def _open(path: str, **kwargs) -> TableStream:
    table = "t" if path.startswith("sqlite") else None
    kwargs.setdefault("columns", ["id", "a", "b"])
    kwargs.setdefault("target", "label")
    return TableStream(path, table=table, **kwargs)


def _ids(batches) -> np.ndarray:
    return np.concatenate([x[:, 0].numpy() for x, _ in batches]).astype(np.int64)


@pytest.mark.parametrize("kind", ["csv", "parquet", "sqlite"])
def test_every_format_gives_the_rows_of_the_file(files, frame, kind):
    stream = _open(files[kind], batch_size=64, block_rows=97)
    batches = list(stream)
    x = torch.cat([b[0] for b in batches]).numpy()
    y = torch.cat([b[1] for b in batches]).numpy()
    assert x.dtype == np.float32 and x.shape == (N_ROWS, 3)
    np.testing.assert_array_equal(x, frame[["id", "a", "b"]].to_numpy(np.float32))
    assert stream.labels == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(np.array(stream.labels)[y], frame["label"].to_numpy())
    assert [len(b[0]) for b in batches] == [64] * 15 + [40]


def test_a_query_streams_like_a_table(files, frame):
    stream = TableStream(
        files["sqlite"],
        batch_size=100,
        query="SELECT id, a, label FROM t WHERE b > 0 ORDER BY id",
        target="label",
        block_rows=33,
    )
    ids = _ids(stream)
    np.testing.assert_array_equal(ids, frame.loc[frame.b > 0, "id"].to_numpy())


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_each_row_exactly_once_with_workers(files, workers):
    stream = _open(files["parquet"], batch_size=50, shuffle_buffer="2kB", seed=3)
    ids = _ids(stream.loader(num_workers=workers))
    assert len(ids) == N_ROWS
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_ROWS))
    assert not np.array_equal(ids, np.arange(N_ROWS))  # shuffled


def test_a_plain_dataloader_with_workers_also_sees_each_row_once(files):
    stream = _open(files["csv"], batch_size=64, block_rows=100)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    np.testing.assert_array_equal(np.sort(_ids(loader)), np.arange(N_ROWS))


@pytest.mark.parametrize("workers, stop_after", [(0, 13), (2, 13), (3, 1), (3, 31)])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(files, workers, stop_after):
    settings = dict(batch_size=32, shuffle_buffer="3kB", seed=11)
    full = _open(files["csv"], **settings).loader(num_workers=workers)
    expected = [x[:, 0].tolist() for x, _ in full]

    first = _open(files["csv"], **settings).loader(num_workers=workers)
    seen = []
    for x, _ in first:
        seen.append(x[:, 0].tolist())
        if len(seen) == stop_after:
            state = first.state_dict()
            break
    resumed = _open(files["csv"], **settings).loader(num_workers=workers)
    resumed.load_state_dict(state)
    rest = [x[:, 0].tolist() for x, _ in resumed]
    assert seen + rest == expected
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["batches"] == 0


def test_direct_iteration_state_resumes_and_epochs_reshuffle(files):
    settings = dict(batch_size=40, shuffle_buffer="4kB", seed=5)
    stream = _open(files["parquet"], **settings)
    epoch0 = [x[:, 0].tolist() for x, _ in stream]
    iterator = iter(stream)
    head = [next(iterator)[0][:, 0].tolist() for _ in range(7)]
    state = stream.state_dict()
    assert (state["epoch"], state["batches"]) == (1, 7)
    other = _open(files["parquet"], **settings)
    other.load_state_dict(state)
    tail = [x[:, 0].tolist() for x, _ in other]
    epoch1 = head + tail
    assert sorted(sum(epoch1, [])) == list(range(N_ROWS))
    assert epoch1 != epoch0  # a new epoch is a new order
    again = _open(files["parquet"], **settings)
    assert [x[:, 0].tolist() for x, _ in again] == epoch0  # same seed, same epoch, same order


def test_shuffle_buffer_bytes_are_respected(files):
    row_bytes = 3 * 4 + 8
    for buffer in (2_000, 10_000):
        stream = _open(files["parquet"], batch_size=16, shuffle_buffer=buffer, seed=0)
        ids = _ids(stream)
        assert stream.peak_buffer_bytes <= buffer
        assert stream.peak_buffer_bytes >= buffer // 2  # the buffer is actually used
        # Rows only move within a window: the first window is at most buffer/row_bytes rows.
        window = buffer // row_bytes
        first = ids[: window // 2]
        assert len(np.unique(first // 170)) <= 8  # they come from few row groups, not the file


def test_unshuffled_parquet_keeps_file_order_in_bounded_blocks(files):
    stream = _open(files["parquet"], batch_size=64, block_rows=50)
    assert list(stream.block_rows[:5]) == [50, 50, 50, 20, 50]  # row groups of 170, cut
    np.testing.assert_array_equal(_ids(stream), np.arange(N_ROWS))
    assert stream.peak_buffer_bytes == 50 * (3 * 4 + 8)  # one block at a time


def test_given_classes_code_the_target_and_unknown_labels_fail(files):
    stream = _open(files["csv"], classes=["eel", "dog", "cat"], batch_size=N_ROWS)
    _, y = next(iter(stream))
    assert set(y.tolist()) == {0, 1, 2}
    bad = _open(files["csv"], classes=["cat", "dog"], batch_size=N_ROWS)
    with pytest.raises(StreamError, match="not in classes"):
        list(bad)


def test_integer_targets_and_target_classes(files):
    stream = _open(files["parquet"], columns=["a"], target="b", batch_size=500)
    _, y = next(iter(stream))
    assert y.dtype == torch.int64
    classes = stream.target_classes()
    assert classes[0] >= -50 and classes[-1] < 50 and np.all(np.diff(classes) > 0)


def test_csv_indexing_handles_crlf_blank_lines_and_no_final_newline(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(b'x,y,t\r\n1,2,"a\r\nb"\r\n\r\n3,4,c\r\n\n5,6,"d""e"\r\n7,8,f')
    stream = TableStream(path, batch_size=2, columns=["x", "y"], target=None, block_rows=1)
    assert stream.num_rows == 4
    got = torch.cat(list(stream)).numpy()
    np.testing.assert_array_equal(got, [[1, 2], [3, 4], [5, 6], [7, 8]])


def test_resume_with_another_worker_count_is_refused(files):
    settings = dict(batch_size=50, shuffle_buffer="2kB")
    loader = _open(files["parquet"], **settings).loader(num_workers=2)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    del iterator
    other = _open(files["parquet"], **settings).loader(num_workers=3)
    other.load_state_dict(state)
    with pytest.raises(StreamError, match="num_workers=2"):
        next(iter(other))


def test_a_state_from_another_stream_is_refused(files):
    state = _open(files["parquet"], batch_size=50).state_dict()
    with pytest.raises(StreamError, match="batch_size"):
        _open(files["parquet"], batch_size=60).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(columns=["nope"]), "no column 'nope'"),
        (dict(target="nope"), "target 'nope' is not a column"),
        (dict(shuffle_buffer="lots"), "not a size"),
        (dict(shuffle_buffer=8), "holds no row"),
        (dict(columns=["id", "note"], batch_size=10), "'note' is not numeric"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(files, kwargs, message):
    with pytest.raises(StreamError, match=message):
        list(_open(files["csv"], **kwargs))


def test_missing_files_and_unknown_formats_fail_clearly(tmp_path):
    with pytest.raises(StreamError, match="no such file"):
        TableStream(tmp_path / "none.csv")
    with pytest.raises(StreamError, match="unknown format"):
        TableStream(tmp_path / "data.txt")
    sqlite3.connect(tmp_path / "x.db").close()
    with pytest.raises(StreamError, match="exactly one of"):
        TableStream("sqlite:///" + str(tmp_path / "x.db"))


def test_resume_when_workers_hold_unequal_shares(files):
    # 4 blocks over 3 workers: one worker has twice the rows and runs on alone at the end.
    settings = dict(batch_size=64, shuffle_buffer="8kB", seed=2, block_rows=300)
    expected = [x[:, 0].tolist() for x, _ in _open(files["sqlite"], **settings).loader(3)]
    assert len(expected) == _open(files["sqlite"], **settings).batches_per_epoch(3)
    for stop_after in (4, 11):
        first = _open(files["sqlite"], **settings).loader(num_workers=3)
        seen = []
        for x, _ in first:
            seen.append(x[:, 0].tolist())
            if len(seen) == stop_after:
                break
        resumed = _open(files["sqlite"], **settings).loader(num_workers=3)
        resumed.load_state_dict(first.state_dict())
        assert seen + [x[:, 0].tolist() for x, _ in resumed] == expected


def test_turn_order_replay_matches_a_dataloader():
    from memfit.data._stream_order import batches_taken

    # Workers with 3, 1 and 2 batches: turns go 0 1 2 | 0 2 | 0.
    assert batches_taken([3, 1, 2], 0) == ([0, 0, 0], 0)
    assert batches_taken([3, 1, 2], 4) == ([2, 1, 1], 1)
    assert batches_taken([3, 1, 2], 5) == ([2, 1, 2], 0)
    assert batches_taken([3, 1, 2], 6) == ([3, 1, 2], 1)


def test_a_loader_refuses_settings_that_belong_to_the_stream(files):
    with pytest.raises(StreamError, match="batch_size, shuffle cannot be set"):
        _open(files["parquet"]).loader(batch_size=4, shuffle=True)
