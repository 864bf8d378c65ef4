"""Checkpoints of an online run: model, stream position and metrics, written atomically.

Torch models go through `torch.save` of state_dicts and come back with
`torch.load(weights_only=True)`, which runs no code. scikit-learn and river
models have no such format, so they are pickled: load only checkpoints you
wrote yourself (unpickling runs code).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from memfit.data._files import temporary_beside
from memfit.errors import DataError

FORMAT_VERSION = 1


def save(path: Path, payload: dict[str, Any], checkpoint_format: str) -> None:
    """Write `payload` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"memfit_online": FORMAT_VERSION, "format": checkpoint_format, **payload}
    handle, temporary = temporary_beside(path)
    try:
        with os.fdopen(handle, "wb") as out:
            if checkpoint_format == "torch":
                torch.save(payload, out)
            else:
                pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)  # readers see the old file or the new one, never half
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(path: Path, checkpoint_format: str) -> dict[str, Any]:
    try:
        if checkpoint_format == "torch":
            payload = torch.load(path, weights_only=True, map_location="cpu")
        else:
            with open(path, "rb") as handle:
                payload = pickle.load(handle)
    except Exception as exc:  # a foreign or damaged file: one line, no traceback
        raise DataError(
            f"{path} is not a {checkpoint_format} checkpoint of learn_online ({exc}); "
            "pass another checkpoint path or delete this one to start over"
        ) from exc
    if not isinstance(payload, dict) or payload.get("memfit_online") != FORMAT_VERSION:
        raise DataError(f"{path} is not a learn_online checkpoint; pass another path or delete it")
    return payload
