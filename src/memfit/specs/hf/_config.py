"""Where an `hf:NAME` configuration comes from: a folder, memfit's table, a model type, the hub.

The result is the raw field dict of a config.json (not a built config object), so
that overrides are applied before transformers derives fields from others: with
`hidden_size=2048`, a Llama's `head_dim` follows the new width instead of keeping
the one computed from the old.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from memfit.errors import WorkloadError

# Fields of a config.json that say how a file was written, not what the model is.
_BOOKKEEPING = ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "auto_map")


@dataclass
class ConfigSource:
    """A model's configuration fields and where they were read."""

    model_type: str
    fields: dict[str, Any]
    origin: str
    """`folder PATH`, `memfit's table (HUB_ID)`, `model type` or `hub HUB_ID`."""


def find_config(name: str) -> ConfigSource:
    """The configuration `name` refers to; one clear error when it refers to none."""
    from transformers import CONFIG_MAPPING

    path = Path(name).expanduser()
    if path.is_dir() or name.endswith(".json"):
        return _from_path(name, path)
    known = known_checkpoint(name)
    if known is not None:
        hub_id, fields = known
        return ConfigSource(fields["model_type"], _clean(fields), f"memfit's table ({hub_id})")
    if name in CONFIG_MAPPING:
        return ConfigSource(name, {}, "model type")
    if "/" in name:
        return _from_hub(name)
    choices = sorted({*CONFIG_MAPPING.keys(), *_known_names()})
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise WorkloadError(
        f"hf:{name} is not a transformers model type, a known checkpoint or a folder with "
        f"config.json; {hint}(known checkpoints: {', '.join(sorted(_known_names())[:8])}, ...; "
        "a hub id such as org/name needs the network)"
    )


def _from_path(name: str, path: Path) -> ConfigSource:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise WorkloadError(
            f"hf:{name}: {'no config.json in that folder' if path.is_dir() else 'no such file'}; "
            "give a folder holding the model's config.json"
        )
    try:
        fields = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise WorkloadError(f"hf:{name}: cannot read {file} as JSON ({exc})") from exc
    return _checked_source(name, fields, f"folder {file.parent}")


def _from_hub(hub_id: str) -> ConfigSource:
    from transformers import PretrainedConfig

    offline = bool(os.environ.get("HF_HUB_OFFLINE")) or not _hub_reachable()
    try:
        # The local cache first: a config fetched once before needs no network again.
        fields, _ = PretrainedConfig.get_config_dict(hub_id, local_files_only=offline)
    except Exception as exc:
        if offline:
            raise WorkloadError(
                f"hf:{hub_id}: cannot fetch its config.json (no network here, and it is not "
                "in the Hugging Face cache); download config.json into a folder and give "
                "hf:path/to/folder, or use a model type with settings "
                "(hf:llama:hidden_size=2048,...)"
            ) from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkloadError(
            f"hf:{hub_id}: the hub gave no config.json ({first}); check the id, or for a "
            "gated model log in with `hf auth login`"
        ) from exc
    return _checked_source(hub_id, fields, f"hub {hub_id}")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    # huggingface_hub retries a failed connection for about 20 s before giving up; one
    # quick connection attempt tells an offline machine apart at once.
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _checked_source(name: str, fields: Any, origin: str) -> ConfigSource:
    from transformers import CONFIG_MAPPING

    if not isinstance(fields, dict) or "model_type" not in fields:
        raise WorkloadError(
            f"hf:{name}: its config.json has no model_type; is it a transformers one?"
        )
    model_type = fields["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise WorkloadError(
            f"hf:{name}: model type {model_type!r} is not in the installed transformers "
            "(a newer transformers may know it; memfit never runs a model's downloaded code)"
        )
    return ConfigSource(model_type, _clean(fields), origin)


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in _BOOKKEEPING and k != "model_type"}


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("memfit.specs.hf").joinpath("known_configs.json").read_text()
    return json.loads(text)["checkpoints"]


@cache
def _index() -> dict[str, str]:
    """Every accepted spelling, lower-cased, to its hub id."""
    index = {}
    for hub_id, entry in _table().items():
        for spelling in (hub_id, hub_id.split("/")[-1], *entry["aliases"]):
            index[spelling.lower()] = hub_id
    return index


def _known_names() -> list[str]:
    return [entry["aliases"][0] for entry in _table().values()]


def known_checkpoint(name: str) -> tuple[str, dict[str, Any]] | None:
    """`(hub id, config fields)` from memfit's table, or None.

    >>> hub_id, fields = known_checkpoint("Qwen2.5-0.5B")
    >>> hub_id, fields["model_type"], fields["hidden_size"]
    ('Qwen/Qwen2.5-0.5B', 'qwen2', 896)
    """
    hub_id = _index().get(name.lower())
    if hub_id is None:
        return None
    return hub_id, dict(_table()[hub_id]["config"])


def known_checkpoints() -> list[str]:
    """The hub ids memfit's table holds."""
    return list(_table())
