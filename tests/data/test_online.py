from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from memfit.data import TableStream, learn_online
from memfit.errors import DataError

N_ROWS = 3000
FEATURES = ["f1", "f2", "f3"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N_ROWS, 3))
    x[-200:, 2] += 6  # the last rows stand apart ...
    late = np.where(x[:, 0] + x[:, 1] > 0, 1, 0)
    late[-200:] = 2  # ... as a class that only shows up at the end of the file
    frame = pd.DataFrame(
        {
            "id": np.arange(N_ROWS),
            "f1": x[:, 0],
            "f2": x[:, 1],
            "f3": x[:, 2],
            "y": (x @ [1.5, -2.0, 0.5] > 0).astype(int),
            "late": late,
            "value": x @ [0.5, 1.0, -1.0] + 0.1 * rng.normal(size=N_ROWS),
        }
    )
    path = tmp_path_factory.mktemp("online") / "t.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=500)
    return path


def _stream(path: Path, target: str = "y", **kwargs) -> TableStream:
    kwargs.setdefault("columns", FEATURES)
    return TableStream(path, batch_size=100, target=target, shuffle_buffer="8kB", seed=1, **kwargs)


class Interrupt(Exception):
    pass


def _stop_after(batches: int):
    def callback(progress):
        if progress.batches == batches:
            raise Interrupt

    return callback


def _interrupted_then_resumed(make_model, stream_kwargs, tmp_path, stop_at=17, **kwargs):
    """Run once straight through; once killed at `stop_at` and resumed. Return both models."""
    straight = make_model()
    learn_online(straight, _stream(**stream_kwargs), **kwargs)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Interrupt):
        learn_online(
            make_model(),
            _stream(**stream_kwargs),
            checkpoint=ckpt,
            checkpoint_every=5,
            callback=_stop_after(stop_at),
            **kwargs,
        )
    resumed = make_model()
    result = learn_online(
        resumed, _stream(**stream_kwargs), checkpoint=ckpt, checkpoint_every=5, **kwargs
    )
    assert result.resumed_at_rows == (stop_at // 5) * 5 * 100  # the last save before the kill
    assert result.rows == N_ROWS * kwargs.get("epochs", 1)
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary files left
    return straight, resumed, result


def test_sklearn_sgd_resumed_run_equals_an_uninterrupted_one(table, tmp_path):
    from sklearn.linear_model import SGDClassifier

    straight, resumed, result = _interrupted_then_resumed(
        lambda: SGDClassifier(random_state=0), {"path": table}, tmp_path, epochs=2
    )
    np.testing.assert_array_equal(resumed.coef_, straight.coef_)
    np.testing.assert_array_equal(resumed.intercept_, straight.intercept_)
    assert result.metric == "accuracy" and result.final > 0.9
    assert result.history[-1].rows == 2 * N_ROWS
    assert [p.rows for p in result.history] == sorted(p.rows for p in result.history)
    assert result.history[-1].window > result.history[0].window  # it learned


def test_river_resumed_run_equals_an_uninterrupted_one(table, tmp_path):
    from river import linear_model, preprocessing

    def make():
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()

    straight, resumed, result = _interrupted_then_resumed(make, {"path": table}, tmp_path)
    assert resumed["LogisticRegression"].weights == straight["LogisticRegression"].weights
    assert result.final > 0.85


@pytest.mark.slow
def test_torch_resumed_run_equals_an_uninterrupted_one_with_workers(table, tmp_path):
    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    straight, resumed, result = _interrupted_then_resumed(
        make,
        {"path": table},
        tmp_path,
        stop_at=23,
        num_workers=2,
        optimizer=lambda params: torch.optim.Adam(params, lr=0.02),
    )
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    saved = torch.load(tmp_path / "run.ckpt", weights_only=True)  # plain tensors and numbers
    assert saved["progress"]["done"] and saved["stream"]["epoch"] == 1
    assert result.final > 0.8


def test_classes_seen_late_are_found_up_front_for_partial_fit(table):
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(random_state=0)
    stream = TableStream(table, batch_size=100, columns=FEATURES, target="late")  # file order
    result = learn_online(model, stream)
    np.testing.assert_array_equal(model.classes_, [0, 1, 2])
    assert result.rows == N_ROWS


def test_classes_seen_late_by_a_river_model_one_row_at_a_time(table):
    from river import tree

    model = tree.HoeffdingTreeClassifier()
    assert not hasattr(model, "learn_many")
    stream = TableStream(table, batch_size=100, columns=FEATURES, target="late")
    result = learn_online(model, stream, report_every=5)
    assert result.scored_rows == N_ROWS - 1  # only the very first row had no prediction
    last = pd.read_parquet(table).tail(50)
    predicted = [
        model.predict_one(dict(zip(FEATURES, row, strict=True)))
        for row in last[FEATURES].to_numpy().tolist()
    ]
    assert predicted.count(2) > 40  # the class that came last is learned


def test_given_classes_that_miss_one_fail_clearly(table):
    from sklearn.linear_model import SGDClassifier

    stream = TableStream(table, batch_size=100, columns=FEATURES, target="late")
    with pytest.raises(DataError, match=r"classes \[2\] appear in the stream"):
        learn_online(SGDClassifier(), stream, classes=[0, 1])


def test_regression_reports_mean_squared_error(table):
    from sklearn.linear_model import SGDRegressor

    result = learn_online(
        SGDRegressor(random_state=0), _stream(table, target="value"), report_every=3
    )
    assert result.metric == "mse"
    assert result.history[-1].window < 0.05 < result.history[0].window


def test_a_torch_model_with_too_few_outputs_fails_clearly(table):
    model = torch.nn.Linear(3, 2)
    stream = TableStream(table, batch_size=100, columns=FEATURES, target="late")
    with pytest.raises(DataError, match="scores 2 classes"):
        learn_online(model, stream)


def test_a_finished_checkpoint_returns_without_training(table, tmp_path):
    from sklearn.linear_model import SGDClassifier

    ckpt = tmp_path / "done.pkl"
    first = learn_online(SGDClassifier(random_state=0), _stream(table), checkpoint=ckpt)
    assert first.checkpoints_written == 1  # the final one (checkpoint_every=100 > 30 batches)
    again_model = SGDClassifier(random_state=0)
    again = learn_online(again_model, _stream(table), checkpoint=ckpt)
    assert again.checkpoints_written == 0 and again.resumed_at_rows == N_ROWS
    assert again.final == first.final
    np.testing.assert_array_equal(again_model.coef_, first.model.coef_)


def test_a_checkpoint_from_another_stream_is_refused(table, tmp_path):
    from sklearn.linear_model import SGDClassifier

    ckpt = tmp_path / "c.pkl"
    with pytest.raises(Interrupt):
        learn_online(
            SGDClassifier(),
            _stream(table),
            checkpoint=ckpt,
            checkpoint_every=2,
            callback=_stop_after(3),
        )
    with pytest.raises(DataError, match="does not match this stream"):
        learn_online(SGDClassifier(), _stream(table, columns=["f2", "f1", "f3"]), checkpoint=ckpt)


# A model that counts how often it trained on each row (row id = feature 0), kept in a buffer
# so the count travels with its state_dict through checkpoints.
RECORDER = """
import time, torch

class Recorder(torch.nn.Module):
    def __init__(self, rows):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.register_buffer("seen", torch.zeros(rows))

    def forward(self, x):
        self.seen.index_add_(0, x[:, 0].long(), torch.ones(len(x)))
        time.sleep(SLEEP_S)
        return self.linear(x)
"""

CHILD = """
import sys
from memfit.data import TableStream, learn_online
{recorder}
stream = TableStream(sys.argv[1], batch_size=50, columns=["id", "f1", "f2", "f3"], target="y",
                     shuffle_buffer="8kB", seed=4)
learn_online(Recorder({rows}), stream, checkpoint=sys.argv[2], checkpoint_every=4)
"""


@pytest.mark.slow
def test_a_killed_process_resumes_and_learns_every_row_exactly_once(table, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(recorder=RECORDER.replace("SLEEP_S", "0.03"), rows=N_ROWS))
    ckpt = tmp_path / "kill.ckpt"
    child = subprocess.Popen(
        [sys.executable, str(script), str(table), str(ckpt)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ckpt.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # a few more batches, some after the last checkpoint
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
    saved = torch.load(ckpt, weights_only=True)
    assert not saved["progress"]["done"] and 0 < saved["progress"]["rows"] < N_ROWS

    namespace: dict = {}
    exec(RECORDER.replace("SLEEP_S", "0"), namespace)
    model = namespace["Recorder"](N_ROWS)
    stream = TableStream(
        table,
        batch_size=50,
        columns=["id", "f1", "f2", "f3"],
        target="y",
        shuffle_buffer="8kB",
        seed=4,
    )
    result = learn_online(model, stream, checkpoint=ckpt, checkpoint_every=4)
    assert result.resumed_at_rows == saved["progress"]["rows"]
    torch.testing.assert_close(model.seen, torch.ones(N_ROWS), rtol=0, atol=0)
