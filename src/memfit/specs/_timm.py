"""`timm:NAME[:key=value,...]`: a timm image model, randomly initialised (no weights fetched).

Settings are `timm.create_model` arguments (`num_classes=10`, `img_size=384`,
`drop_path_rate=0.1`...); the batch is random images of the model's input size and
a class per image, with cross-entropy.
"""

from __future__ import annotations

from typing import Any

from memfit.errors import MissingDependencyError, WorkloadError
from memfit.specs._overrides import parse_overrides
from memfit.workload import Workload
from memfit.zoo._common import classification_loss, image_batch_maker


def timm_workload(text: str) -> Workload:
    name, _, override_text = text.partition(":")
    timm = _import_timm()
    if not name or not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise WorkloadError(
            f"timm:{name} is not a timm model{hint} (list them with "
            "`python -c \"import timm; print(timm.list_models('resnet*'))\"`)"
        )
    kwargs: dict[str, Any] = parse_overrides(override_text)
    channels, height, width = _input_size(timm, name, kwargs)
    classes = int(kwargs.get("num_classes", 1000))

    def build_model():
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise WorkloadError(f"timm:{name} cannot be built with {kwargs}: {exc}") from exc

    return Workload(
        name=f"timm:{name}",
        build_model=build_model,
        make_batch=image_batch_maker(channels, height, width, classes),
        loss_fn=classification_loss,
        default_batch_size=32,
        description=f"timm {name}, {channels}x{height}x{width} images, {classes} classes",
        config={"model": name, "input_size": [channels, height, width], **kwargs},
    )


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        missing = getattr(exc, "name", "") or ""
        if missing.startswith("torchvision"):
            raise MissingDependencyError(
                "timm needs torchvision, which is not importable here; install a torchvision "
                "built for this torch (pip install torchvision matching torch's version)"
            ) from exc
        raise MissingDependencyError(
            "timm is not installed; install it with: pip install 'memfit[timm]'"
        ) from exc
    return timm


def _input_size(timm, name: str, kwargs: dict[str, Any]) -> tuple[int, int, int]:
    cfg = timm.get_pretrained_cfg(name)
    channels, height, width = getattr(cfg, "input_size", None) or (3, 224, 224)
    channels = int(kwargs.get("in_chans", channels))
    size = kwargs.get("img_size")
    if isinstance(size, int):
        height = width = size
    return channels, height, width
