"""Memory budgets: a number of bytes on a kind of device.

`Budget.parse` reads sizes with decimal units (GB = 10**9) and binary units
(GiB = 2**30), bare byte counts, and the names of common machines.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from memfit.errors import BudgetError

_DECIMAL = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
}
_BINARY = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True, slots=True)
class Budget:
    """How much memory a training run may use, and where."""

    bytes: int
    """The limit in bytes."""
    device: str = "cpu"
    """`cpu` for host RAM, `gpu` for accelerator memory."""
    name: str | None = None
    """The preset this came from, if any."""
    description: str = ""

    def __post_init__(self) -> None:
        if self.bytes <= 0:
            raise BudgetError(f"a budget must be positive, got {self.bytes} bytes")
        if self.device not in ("cpu", "gpu"):
            raise BudgetError(f"budget device must be 'cpu' or 'gpu', got {self.device!r}")

    @classmethod
    def parse(cls, text: str | int | float | Budget, device: str | None = None) -> Budget:
        """Read `12GB`, `12GiB`, `512MB`, `1.5T`, `1048576` or a preset such as `colab`."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls(_whole_bytes(text, repr(text)), device or "cpu")
        if not isinstance(text, str):
            raise BudgetError(f"a budget is a string such as '12GB', got {type(text).__name__}")
        if not text.strip():
            raise BudgetError(
                "the budget is empty: give a size such as 12GB or 12GiB, or a preset such as "
                "colab (`memfit budgets` lists them)"
            )
        key = text.strip().lower()
        if key in PRESETS:
            preset = PRESETS[key]
            return (
                preset
                if device is None
                else cls(preset.bytes, device, preset.name, preset.description)
            )
        match = _SIZE.match(text)
        if match:
            number, unit = float(match.group(1)), match.group(2).upper()
            factor = _DECIMAL.get(unit) or _BINARY.get(unit)
            if factor is not None:
                return cls(_whole_bytes(number * factor, text), device or "cpu")
        raise BudgetError(
            f"cannot read budget {text!r}: use a size such as 12GB (10^9 bytes), 12GiB (2^30), "
            f"512MB, 1.5T or a byte count, or a preset ({', '.join(sorted(PRESETS))}); "
            "`memfit budgets` lists the presets"
        )

    @property
    def gb(self) -> float:
        return self.bytes / 1e9

    def __str__(self) -> str:
        label = self.name or format_bytes(self.bytes)
        return f"{label} ({format_bytes(self.bytes)} {self.device})" if self.name else label


_MAX_BUDGET_BYTES = 10**18
"""An exabyte: far past any machine, and still exact as a float's integer part."""


def _whole_bytes(value: float, text: str) -> int:
    """A budget's byte count, refusing what no machine has (0, negatives, 1e999, nan)."""
    if not math.isfinite(value) or value > _MAX_BUDGET_BYTES:
        raise BudgetError(
            f"budget {text.strip()} is larger than any machine (over 1 EB); "
            "give a size such as 12GB or 12GiB"
        )
    if value < 1:
        raise BudgetError(
            f"budget {text.strip()} is less than one byte; give a size such as 12GB or 12GiB"
        )
    return int(round(value))


def format_bytes(n: float) -> str:
    """Human size with decimal units, matching how budgets are usually quoted (12 GB)."""
    n = float(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{sign}{n / factor:.1f} {unit}"
    return f"{sign}{int(n)} B"


def _preset(name: str, size: float, device: str, description: str) -> Budget:
    return Budget(int(size), device, name, description)


_GB, _GIB = 10**9, 2**30
# Sizes as the vendors or platforms state them; GPU memory in binary units where
# the card is sold that way (a "16 GB" T4 reports 15.1 GiB usable after ECC etc.,
# but the budget is the nominal size; the planner keeps its own safety margin).
PRESETS: dict[str, Budget] = {
    b.name: b
    for b in [
        _preset("colab", 12 * _GB, "cpu", "Google Colab free tier, system RAM"),
        _preset("colab-highram", 25.51 * _GB, "cpu", "Google Colab high-RAM runtime"),
        _preset("kaggle-cpu", 16 * _GB, "cpu", "Kaggle notebook without accelerator, RAM"),
        _preset("kaggle-gpu", 13 * _GB, "cpu", "Kaggle notebook with GPU, system RAM"),
        _preset("laptop-8gb", 8 * _GB, "cpu", "laptop with 8 GB RAM"),
        _preset("laptop-16gb", 16 * _GB, "cpu", "laptop with 16 GB RAM"),
        _preset("laptop-32gb", 32 * _GB, "cpu", "laptop with 32 GB RAM"),
        _preset("raspberry-pi-4gb", 4 * _GB, "cpu", "Raspberry Pi 4 Model B, 4 GB"),
        _preset("raspberry-pi-8gb", 8 * _GB, "cpu", "Raspberry Pi 4/5, 8 GB"),
        _preset("jetson-nano", 4 * _GB, "gpu", "NVIDIA Jetson Nano, 4 GB shared CPU/GPU"),
        _preset("t4", 16 * _GIB, "gpu", "NVIDIA T4 (Colab, Kaggle GPU)"),
        _preset("p100", 16 * _GIB, "gpu", "NVIDIA P100 (Kaggle GPU)"),
        _preset("v100", 16 * _GIB, "gpu", "NVIDIA V100 16 GB"),
        _preset("rtx3060", 12 * _GIB, "gpu", "NVIDIA GeForce RTX 3060 12 GB"),
        _preset("rtx3090", 24 * _GIB, "gpu", "NVIDIA GeForce RTX 3090"),
        _preset("rtx4090", 24 * _GIB, "gpu", "NVIDIA GeForce RTX 4090"),
        _preset("l4", 24 * _GIB, "gpu", "NVIDIA L4"),
        _preset("a10g", 24 * _GIB, "gpu", "NVIDIA A10G"),
        _preset("a100-40gb", 40 * _GIB, "gpu", "NVIDIA A100 40 GB"),
        _preset("a100-80gb", 80 * _GIB, "gpu", "NVIDIA A100 80 GB"),
        _preset("h100", 80 * _GIB, "gpu", "NVIDIA H100 80 GB"),
        _preset("h200", 141 * _GB, "gpu", "NVIDIA H200 141 GB"),
    ]
}


def smallest_preset_that_fits(need_bytes: int, device: str | None = None) -> Budget | None:
    """The smallest preset with at least `need_bytes`; of kind `device` when one is big enough.

    A step too big for any machine of one kind may still fit a machine of the other
    (41 GB is past every laptop and Colab, but fits an A100 80 GB).
    """
    candidates = [b for b in PRESETS.values() if b.bytes >= need_bytes]
    same_kind = [b for b in candidates if b.device == device]
    return min(same_kind or candidates, key=lambda b: b.bytes, default=None)
