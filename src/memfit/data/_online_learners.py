"""One adapter per model family, all with the same two moves: predict, then learn.

`step(x, y)` returns the predictions made *before* the model saw the batch
(prequential, test-then-train) and then trains on it. `state()` / `restore()`
move the model in and out of a checkpoint.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from memfit.errors import DataError, MissingDependencyError


class Learner:
    classification: bool
    checkpoint_format: str  # "torch": torch.save + weights_only load; "pickle": user's own files

    def step(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray | None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class TorchLearner(Learner):
    checkpoint_format = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss_fn: Any,
        classification: bool,
    ) -> None:
        self.model = model
        if optimizer is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        elif not isinstance(optimizer, torch.optim.Optimizer):  # a factory, e.g. a partial
            optimizer = optimizer(model.parameters())
        self.optimizer = optimizer
        self.classification = classification
        if loss_fn is None:
            loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
        self.loss_fn = loss_fn
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        out = self.model(x)
        if self.classification:
            if out.ndim != 2:
                raise DataError(
                    f"a classifier must return (batch, classes) scores, got shape "
                    f"{tuple(out.shape)}"
                )
            if int(y.max()) >= out.shape[1] or int(y.min()) < 0:
                raise DataError(
                    f"target class {int(y.max())} but the model scores "
                    f"{out.shape[1]} classes; size its last layer for "
                    "len(stream.target_classes()) classes"
                )
            predicted = out.detach().argmax(dim=1)
        else:
            if out.ndim == 2 and out.shape[1] == 1:
                out = out.squeeze(1)
            y = y.to(out.dtype)
            predicted = out.detach()
        loss = self.loss_fn(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return predicted.cpu().numpy()

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class _PickledLearner(Learner):
    checkpoint_format = "pickle"
    model: Any

    def state(self) -> dict[str, Any]:
        return {"model": pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL)}

    def restore(self, state: dict[str, Any]) -> None:
        saved = pickle.load(io.BytesIO(state["model"]))
        if type(saved) is not type(self.model):
            raise DataError(
                f"the checkpoint holds a {type(saved).__name__}, not a "
                f"{type(self.model).__name__}; pass the same kind of model or "
                "start without the checkpoint"
            )
        # Into the caller's own object, so the model they hold is the trained one.
        self.model.__dict__.update(saved.__dict__)


class SklearnLearner(_PickledLearner):
    def __init__(self, model: Any, classes: Sequence[Any] | None, classification: bool) -> None:
        self.model = model
        self.classification = classification
        self.classes = None if classes is None else np.asarray(classes)

    def _fitted(self) -> bool:
        return hasattr(self.model, "coef_") or hasattr(self.model, "n_features_in_")

    def step(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray | None:
        features, target = x.numpy(), y.numpy()
        predicted = self.model.predict(features) if self._fitted() else None
        if self.classification:
            unknown = np.setdiff1d(np.unique(target), self.classes)
            if len(unknown):
                raise DataError(
                    f"classes {unknown[:5].tolist()} appear in the stream but not in "
                    "classes=; leave classes out to scan the stream for all of them"
                )
            self.model.partial_fit(features, target, classes=self.classes)
        else:
            self.model.partial_fit(features, target)
        return predicted


class RiverLearner(_PickledLearner):
    def __init__(self, model: Any, feature_names: list[str], classification: bool) -> None:
        self.model = model
        self.classification = classification
        self.feature_names = feature_names
        self.batched = hasattr(model, "learn_many") and hasattr(model, "predict_many")

    def step(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray | None:
        features = x.numpy()
        target = y.numpy()
        if self.batched:
            import pandas as pd

            frame = pd.DataFrame(features, columns=self.feature_names)
            labels = pd.Series(target)
            predicted = self.model.predict_many(frame)
            self.model.learn_many(frame, labels)
            if predicted.ndim != 1:  # some models answer an empty frame before learning
                return None
            return _with_missing(predicted.to_numpy())
        predicted = []
        for row, label in zip(features.tolist(), target.tolist(), strict=True):
            sample = dict(zip(self.feature_names, row, strict=True))  # fixed feature order
            predicted.append(self.model.predict_one(sample))
            self.model.learn_one(sample, label)
        return _with_missing(np.array(predicted, dtype=object))


def _with_missing(predicted: np.ndarray) -> np.ndarray:
    """River predicts None before it has seen a class; those become NaN (not scored)."""
    return np.array([np.nan if p is None else float(p) for p in predicted.tolist()])


def make_learner(
    model: Any,
    *,
    optimizer: Any,
    loss_fn: Any,
    classes: Sequence[Any] | None,
    task: str,
    stream: Any,
) -> Learner:
    """The adapter for `model`, with the task (classification or regression) settled."""
    if isinstance(model, torch.nn.Module):
        classification = (
            stream.target_kind in ("int", "label") if task == "auto" else task == "classification"
        )
        return TorchLearner(model, optimizer, loss_fn, classification)
    if hasattr(model, "partial_fit"):
        classification = (
            _sklearn_is_classifier(model) if task == "auto" else (task == "classification")
        )
        if classification and classes is None:
            classes = stream.target_classes()  # one pass over the target column only
        return SklearnLearner(model, classes, classification)
    if hasattr(model, "learn_one") and hasattr(model, "predict_one"):
        classification = _river_is_classifier(model) if task == "auto" else task == "classification"
        return RiverLearner(model, list(stream.feature_names), classification)
    raise DataError(
        f"cannot learn online with a {type(model).__name__}: pass a torch.nn.Module, "
        "an estimator with partial_fit, or a river model (learn_one/predict_one)"
    )


def _sklearn_is_classifier(model: Any) -> bool:
    try:
        from sklearn.base import is_classifier
    except ImportError:  # a partial_fit model that is not from scikit-learn
        return hasattr(model, "predict_proba") or hasattr(model, "classes_")
    return bool(is_classifier(model))


def _river_is_classifier(model: Any) -> bool:
    try:
        from river import base
    except ImportError as exc:
        raise MissingDependencyError(
            "river is not installed; install it with: pip install 'memfit[river]'"
        ) from exc
    return isinstance(model, base.Classifier)
