"""Model specs: the one place a name such as `zoo:mlp` or `hf:gpt2` becomes a Workload.

    zoo:NAME[:key=value,...]           a built-in workload (`memfit.zoo`)
    hf:NAME[:key=value,...]            a Hugging Face model built from its configuration
                                       (a model type, a folder with config.json, a known
                                       checkpoint, or a hub id); never its weights
    timm:NAME[:key=value,...]          a timm model, randomly initialised
    path/to/file.py:function[:k=v,...] a function returning a Workload or an nn.Module
    package.module:function[:k=v,...]  the same, imported by module name

An nn.Module needs an input shape without the batch dimension (`input_shape`, or
`--input-shape` on the command line). Overrides are checked against the settings
the factory takes, so a typo or a wrong type is one clear line.

    >>> w = load_workload("zoo:mlp:depth=2,width=64")
    >>> w.name, w.config["depth"]
    ('mlp', 2)
    >>> load_workload("zoo:mlp:depth=2.5")
    Traceback (most recent call last):
    ...
    memfit.errors.WorkloadError: zoo:mlp: depth takes an integer (default 8), not 2.5
"""

from __future__ import annotations

import dataclasses

from memfit.errors import WorkloadError
from memfit.specs._overrides import call_with_overrides, parse_overrides
from memfit.workload import Workload

__all__ = ["call_with_overrides", "load_workload", "parse_overrides"]

_NAMED_KINDS = ("zoo", "hf", "timm")


def load_workload(spec: str | Workload, input_shape: tuple[int, ...] | None = None) -> Workload:
    """Resolve a model spec (see the module docstring) to a Workload."""
    if isinstance(spec, Workload):
        return spec
    if not isinstance(spec, str):
        raise WorkloadError(
            f"a model is a spec string such as zoo:mlp or a memfit.Workload; got "
            f"{type(spec).__name__}"
        )
    kind, _, rest = spec.partition(":")
    if kind in _NAMED_KINDS and input_shape:
        raise WorkloadError(
            f"--input-shape is for a function returning an nn.Module; {kind}: models know "
            "their inputs (set seq_len= or image_size= instead)"
        )
    if kind == "zoo":
        from memfit import zoo

        name, _, override_text = rest.partition(":")
        workload = zoo.get(name, **parse_overrides(override_text))
    elif kind == "hf":
        from memfit.specs.hf import hf_workload

        workload = hf_workload(rest)
    elif kind == "timm":
        from memfit.specs._timm import timm_workload

        workload = timm_workload(rest)
    else:
        from memfit.specs._python import python_workload

        workload = python_workload(spec, input_shape)
    return _fake_safe(workload)


def _fake_safe(workload: Workload) -> Workload:
    # Everything that builds the model on fake tensors (the estimator, the planner's own
    # look at the model) then gets weight init that reads no tensor values.
    from memfit.estimator.fake_build import fake_safe

    return dataclasses.replace(workload, build_model=fake_safe(workload.build_model))
