"""Learn from a stream that does not fit in memory, one batch at a time.

`learn_online(model, stream)` trains a torch module, a scikit-learn estimator
with `partial_fit`, or a river model on a `TableStream`, scoring every batch
before learning from it (prequential evaluation: test, then train). With
`checkpoint=` it saves model, stream position and metrics atomically every
few batches, and a later call with the same checkpoint continues exactly
where the last save stood: no row is learned twice and none is skipped.

    >>> import numpy as np, pandas as pd, tempfile, os
    >>> from sklearn.linear_model import SGDClassifier
    >>> from memfit.data import TableStream
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 3))
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": (x[:, 0] > 0).astype(int)}
    ...              ).to_csv(path, index=False)
    >>> result = learn_online(SGDClassifier(random_state=0), TableStream(path, 100, target="y"))
    >>> result.rows, result.metric, result.final > 0.9
    (2000, 'accuracy', True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memfit.data import _online_checkpoint as checkpoints
from memfit.data._online_learners import make_learner
from memfit.data.stream import TableStream
from memfit.errors import DataError


@dataclass(slots=True)
class PrequentialPoint:
    """The metric at one moment of the run."""

    rows: int
    """Rows learned so far (all epochs)."""
    window: float
    """The metric over the rows scored since the previous point."""
    cumulative: float
    """The metric over every row scored so far."""


@dataclass(slots=True)
class OnlineProgress:
    """Counters of a run; saved in checkpoints, handed to `callback` after every batch."""

    rows: int = 0
    batches: int = 0
    scored: int = 0
    """Rows that had a prediction before learning (a fresh model predicts nothing)."""
    total: float = 0.0
    """Correct predictions (accuracy) or summed squared error (mse) over scored rows."""
    window_scored: int = 0
    window_total: float = 0.0
    done: bool = False
    history: list[PrequentialPoint] = field(default_factory=list)

    def score(self, predicted: np.ndarray | None, target: np.ndarray, metric: str) -> None:
        if predicted is None:
            return
        predicted = np.asarray(predicted, dtype=np.float64).reshape(len(target))
        keep = ~np.isnan(predicted)
        truth = target.astype(np.float64)[keep]
        guess = predicted[keep]
        value = (
            float(np.sum(guess == truth))
            if metric == "accuracy"
            else float(np.sum((guess - truth) ** 2))
        )
        self.scored += int(keep.sum())
        self.total += value
        self.window_scored += int(keep.sum())
        self.window_total += value

    def mark(self) -> None:
        """Close the current window as a history point."""
        self.history.append(
            PrequentialPoint(
                self.rows,
                _ratio(self.window_total, self.window_scored),
                _ratio(self.total, self.scored),
            )
        )
        self.window_scored, self.window_total = 0, 0.0

    def to_plain(self) -> dict[str, Any]:
        plain = asdict(self)
        plain["history"] = [[p.rows, p.window, p.cumulative] for p in self.history]
        return plain

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> OnlineProgress:
        values = dict(plain)
        values["history"] = [
            PrequentialPoint(int(r), float(w), float(c)) for r, w, c in values["history"]
        ]
        return cls(**values)


@dataclass(slots=True)
class OnlineResult:
    """What `learn_online` did."""

    model: Any
    """The trained model (the object passed in, updated in place)."""
    metric: str
    """`accuracy` for classifiers, `mse` for regressors."""
    rows: int
    """Rows learned, all epochs, including those before a resume."""
    batches: int
    scored_rows: int
    """Rows that were predicted before being learned."""
    final: float
    """The metric over every scored row."""
    history: list[PrequentialPoint]
    resumed_at_rows: int
    """Rows already learned when this call began (0: a fresh start)."""
    checkpoints_written: int


def learn_online(
    model: Any,
    stream: TableStream,
    *,
    epochs: int = 1,
    optimizer: Any = None,
    loss_fn: Any = None,
    classes: Sequence[Any] | None = None,
    task: str = "auto",
    num_workers: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    report_every: int = 50,
    callback: Callable[[OnlineProgress], None] | None = None,
) -> OnlineResult:
    """Train `model` on `stream` batch by batch, scoring each batch before learning it.

    Args:
        model: a ``torch.nn.Module``, an estimator with ``partial_fit``, or a
            river model (``learn_many`` is used where it exists).
        stream: the data; its feature order is the model's input order.
        epochs: passes over the stream (each reshuffled when the stream shuffles).
        optimizer, loss_fn: for torch models: an optimizer, or a function of the
            parameters that makes one (default Adam(lr=1e-3)); cross-entropy for
            integer targets or MSE otherwise.
        classes: every class, for ``partial_fit``'s first call; default: one
            pass over the target column finds them.
        task: ``auto``, ``classification`` or ``regression``.
        num_workers: DataLoader workers reading the stream.
        checkpoint: file for periodic checkpoints; when it exists and
            ``resume`` is true, the run continues from it.
        checkpoint_every: batches between checkpoints.
        report_every: batches per prequential history point.
        callback: called with the progress after every batch.
    """
    if task not in ("auto", "classification", "regression"):
        raise DataError(f"task must be 'auto', 'classification' or 'regression', got {task!r}")
    if stream.target is None:
        raise DataError("learn_online needs a target: build the TableStream with target='column'")
    if epochs < 1 or checkpoint_every < 1 or report_every < 1:
        raise DataError("epochs, checkpoint_every and report_every must be at least 1")
    learner = make_learner(
        model, optimizer=optimizer, loss_fn=loss_fn, classes=classes, task=task, stream=stream
    )
    metric = "accuracy" if learner.classification else "mse"
    loader = stream.loader(num_workers=num_workers)
    progress = OnlineProgress()
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and resume and path.exists():
        saved = checkpoints.load(path, learner.checkpoint_format)
        if saved.get("metric") != metric:
            raise DataError(
                f"{path} was a {saved.get('metric')} run, this one is {metric}; "
                "pass the same kind of model or another checkpoint path"
            )
        learner.restore(saved["learner"])
        loader.load_state_dict(saved["stream"])
        progress = OnlineProgress.from_plain(saved["progress"])
    else:
        stream.set_epoch(0)
    resumed_at = progress.rows
    written = 0

    def save() -> None:
        nonlocal written
        if path is not None:
            checkpoints.save(
                path,
                {
                    "learner": learner.state(),
                    "stream": loader.state_dict(),
                    "progress": progress.to_plain(),
                    "metric": metric,
                },
                learner.checkpoint_format,
            )
            written += 1

    while not progress.done and stream.epoch < epochs:
        for x, y in loader:
            predicted = learner.step(x, y)
            progress.score(predicted, y.numpy(), metric)
            progress.rows += len(y)
            progress.batches += 1
            if progress.batches % report_every == 0:
                progress.mark()
            if progress.batches % checkpoint_every == 0:
                save()
            if callback is not None:
                callback(progress)
    if not progress.done:
        progress.done = True
        if progress.window_scored:
            progress.mark()
        save()
    return OnlineResult(
        model=model,
        metric=metric,
        rows=progress.rows,
        batches=progress.batches,
        scored_rows=progress.scored,
        final=_ratio(progress.total, progress.scored),
        history=list(progress.history),
        resumed_at_rows=resumed_at,
        checkpoints_written=written,
    )


def _ratio(total: float, count: int) -> float:
    return total / count if count else math.nan
