"""`key=value` overrides: parsed from a spec, checked against what the factory takes.

A value is checked against the setting's default (or its type hint where the
default is None), so `zoo:mlp:depth=2.5` is refused with "depth takes an integer"
before any model is built, instead of failing later somewhere inside torch.

    >>> parse_overrides("depth=32,width=2048,act=gelu")
    {'depth': 32, 'width': 2048, 'act': 'gelu'}
    >>> def mlp(depth: int = 8, dropout: float = 0.1): ...
    >>> check_value("zoo:mlp", "dropout", 0, 0.1)
    0.0
    >>> check_value("zoo:mlp", "depth", 2.5, 8)
    Traceback (most recent call last):
    ...
    memfit.errors.WorkloadError: zoo:mlp: depth takes an integer (default 8), not 2.5
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

from memfit.errors import WorkloadError

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a word"}


def parse_overrides(text: str) -> dict[str, Any]:
    """`depth=32,width=2048,act=gelu` -> {'depth': 32, 'width': 2048, 'act': 'gelu'}."""
    overrides: dict[str, Any] = {}
    if not text:
        return overrides
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise WorkloadError(f"cannot read override {item!r}: write key=value, comma separated")
        overrides[key.strip().replace("-", "_")] = parse_value(raw.strip())
    return overrides


def parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def check_value(what: str, key: str, value: Any, default: Any, hint: Any = None) -> Any:
    """`value` for setting `key`, converted where that is lossless (an int for a float).

    The expected type is the default's; where the default is None, the type hint's
    (`int | None` expects an integer or none). Anything else passes as it is.
    """
    expected = _simple_type(default) or _type_of_hint(hint)
    if expected is None or value is None:
        return value
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    shown = (
        "" if default is None or default is inspect.Parameter.empty else f" (default {default!r})"
    )
    raise WorkloadError(f"{what}: {key} takes {_TYPE_WORDS[expected]}{shown}, not {value!r}")


def _simple_type(value: Any) -> type | None:
    if value is None or value is inspect.Parameter.empty:
        return None
    for kind in (bool, int, float, str):  # bool first: True is also an int
        if isinstance(value, kind):
            return kind
    return None


def _type_of_hint(hint: Any) -> type | None:
    if hint in _TYPE_WORDS:
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 and args[0] in _TYPE_WORDS else None


def unknown_setting(what: str, key: str, valid: Iterable[str], listing: str) -> WorkloadError:
    """The error for a setting the target does not have, with the nearest valid names."""
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return WorkloadError(f"{what} has no setting {key}{hint} {listing}".rstrip())


def call_with_overrides(factory: Callable[..., Any], overrides: dict[str, Any], what: str) -> Any:
    """Call `factory(**overrides)`: unknown keys refused with the valid ones, values type-checked."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # hints that do not resolve (forward references): check by default only
        hints = {}
    checked = {}
    for key, value in overrides.items():
        param = params.get(key)
        if param is None:
            if takes_any:
                checked[key] = value
                continue
            valid = [n for n, p in params.items() if p.default is not inspect.Parameter.empty]
            listing = "(valid settings: " + (
                ", ".join(f"{n}={params[n].default!r}" for n in valid) or "none"
            )
            raise unknown_setting(what, key, valid, listing + ")")
        checked[key] = check_value(what, key, value, param.default, hints.get(key))
    try:
        return factory(**checked)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, WorkloadError):
            raise
        raise WorkloadError(f"{what} cannot be built with {checked}: {exc}") from exc
