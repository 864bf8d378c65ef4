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

    def room(self, reserve_bytes: int | None = None) -> Room:
        """What a training step may use of this budget (the one rule for "fits")."""
        return Room(self, runtime_reserve(self) if reserve_bytes is None else int(reserve_bytes))


SAFETY_MARGIN = 0.05
"""Share of the room kept free in predictions: allocator rounding, fragmentation, small buffers."""

# Memory a training process holds besides its tensors. CPU: the interpreter with torch
# and memfit imported measured 230 MB RSS here; rounded up for the libraries a real
# script also imports. GPU: the CUDA context and library workspaces (300-500 MB), which
# torch.cuda.max_memory_allocated does not show, plus the part of the driver's total that
# PyTorch cannot allocate (a T4's 15360 MiB is 14.56 GiB to PyTorch: 470 MB less).
RUNTIME_RESERVE_BYTES = {"cpu": 400 * 10**6, "gpu": 1000 * 10**6}


def runtime_reserve(budget: Budget) -> int:
    return RUNTIME_RESERVE_BYTES[budget.device]


@dataclass(frozen=True, slots=True)
class Room:
    """A budget less the runtime's own memory: the one definition of "fits".

    - `limit_bytes` = budget - reserve: what a step's tensors may really use. A *measured*
      peak is within budget when it is at most this.
    - `usable_bytes` = limit less the safety margin: what a *predicted* peak may use, so
      that a prediction a few percent short still lands inside the limit.

    >>> room = Budget.parse("1GB").room(reserve_bytes=0)
    >>> room.usable_bytes, room.fits(950_000_000), room.within(990_000_000)
    (950000000, True, True)
    """

    budget: Budget
    reserve_bytes: int

    @property
    def limit_bytes(self) -> int:
        return self.budget.bytes - self.reserve_bytes

    @property
    def usable_bytes(self) -> int:
        return int(self.limit_bytes * (1 - SAFETY_MARGIN))

    def fits(self, predicted_bytes: int) -> bool:
        """A predicted peak fits when it leaves the safety margin free."""
        return predicted_bytes <= self.usable_bytes

    def within(self, measured_bytes: int) -> bool:
        """A measured peak is within budget when it is at most the limit."""
        return measured_bytes <= self.limit_bytes

    def describe(self) -> str:
        return (
            f"usable memory: {format_bytes(self.budget.bytes)} budget less "
            f"{format_bytes(self.reserve_bytes)} for the runtime, less a "
            f"{int(SAFETY_MARGIN * 100)}% margin = {format_bytes(self.usable_bytes)}"
        )


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


_GB, _GIB, _MIB = 10**9, 2**30, 2**20
# GPU sizes are what the driver reports as the card's total: the Memory-Usage total of
# nvidia-smi on current drivers (R525 and later), which is less than the size on the box
# (a "16 GB" T4 shows 15360MiB with ECC on). Read in nvidia-smi tables users pasted into
# public bug reports; PyTorch's `total_memory` is a few hundred MiB lower still (T4: 14.56
# GiB), which the GPU runtime reserve covers. Older drivers print slightly less (T4 15109MiB,
# V100 16160MiB, A100-40GB 40536MiB). Jetson boards share RAM: tegrastats' total is used.
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
        _preset(
            "jetson-nano",
            3964 * _MIB,
            "gpu",
            "NVIDIA Jetson Nano 4 GB, shared CPU/GPU (tegrastats)",
        ),
        _preset("t4", 15360 * _MIB, "gpu", "NVIDIA T4, Colab and Kaggle (nvidia-smi 15360MiB)"),
        _preset("p100", 16384 * _MIB, "gpu", "NVIDIA P100 16 GB, Kaggle (nvidia-smi 16384MiB)"),
        _preset("v100", 16384 * _MIB, "gpu", "NVIDIA V100 16 GB (nvidia-smi 16384MiB)"),
        _preset(
            "rtx3060", 12288 * _MIB, "gpu", "NVIDIA GeForce RTX 3060 12 GB (nvidia-smi 12288MiB)"
        ),
        _preset("rtx3090", 24576 * _MIB, "gpu", "NVIDIA GeForce RTX 3090 (nvidia-smi 24576MiB)"),
        _preset("rtx4090", 24564 * _MIB, "gpu", "NVIDIA GeForce RTX 4090 (nvidia-smi 24564MiB)"),
        _preset("l4", 23034 * _MIB, "gpu", "NVIDIA L4 (nvidia-smi 23034MiB)"),
        _preset("a10g", 23028 * _MIB, "gpu", "NVIDIA A10G, AWS g5 (nvidia-smi 23028MiB)"),
        _preset("a100-40gb", 40960 * _MIB, "gpu", "NVIDIA A100 40 GB (nvidia-smi 40960MiB)"),
        _preset("a100-80gb", 81920 * _MIB, "gpu", "NVIDIA A100 80 GB (nvidia-smi 81920MiB)"),
        _preset("h100", 81559 * _MIB, "gpu", "NVIDIA H100 80 GB (nvidia-smi 81559MiB)"),
        _preset("h200", 143771 * _MIB, "gpu", "NVIDIA H200 141 GB (nvidia-smi 143771MiB)"),
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
