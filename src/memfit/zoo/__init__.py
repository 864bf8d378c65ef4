"""Built-in workloads: architectures only, random initialisation, nothing downloaded.

>>> from memfit import zoo
>>> w = zoo.get("mlp", depth=2, width=64)
>>> w.config["depth"], w.config["width"]
(2, 64)
"""

from __future__ import annotations

from collections.abc import Callable

from memfit.errors import WorkloadError
from memfit.specs._overrides import call_with_overrides
from memfit.workload import Workload
from memfit.zoo.cnn import cnn
from memfit.zoo.llama import llama, llama_7b
from memfit.zoo.mlp import mlp
from memfit.zoo.resnet import resnet18, wrn_28_2
from memfit.zoo.transformer import transformer

ZOO: dict[str, Callable[..., Workload]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet18": resnet18,
    "wrn-28-2": wrn_28_2,
    "transformer": transformer,
    "llama": llama,
    "llama-7b": llama_7b,
}


def names() -> list[str]:
    return list(ZOO)


def get(name: str, **overrides) -> Workload:
    """The zoo workload `name`, built with `overrides` (for example depth=32)."""
    factory = ZOO.get(name)
    if factory is None:
        raise WorkloadError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")
    return call_with_overrides(factory, overrides, f"zoo:{name}")
