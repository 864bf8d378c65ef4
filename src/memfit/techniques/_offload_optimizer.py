"""OffloadedOptimizer: Adam/AdamW whose state lives in files, updated one bounded chunk at a time."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.adam import adam as adam_update

from memfit.errors import OffloadError
from memfit.techniques._offload_store import (
    ELEMENT_BYTES,
    StateFiles,
    read_manifest,
    write_manifest,
)

DEFAULT_MAX_RESIDENT_BYTES = 256 * 2**20
MIN_RESIDENT_BYTES = 2**20
# torch's single-tensor Adam makes `denom = (exp_avg_sq.sqrt() / c).add_(eps)`: the sqrt and the
# quotient are alive together for a moment, two float32 temporaries per element of a chunk.
TEMPORARY_BYTES_PER_ELEMENT = 2 * ELEMENT_BYTES
_DECOUPLED = {"adam": False, "adamw": True}


def state_names(amsgrad: bool) -> list[str]:
    """The per-element float32 states Adam keeps, in file order."""
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])


# Kept free inside the bound: a window is mapped from the page boundary before its first
# element (up to one extra page each), and a step makes a few small Python and tensor objects.
RESERVED_BYTES = 256 * 2**10
PAGE_BYTES = 4096


def chunk_elements(max_resident_bytes: int, windows: int) -> int:
    """Elements per chunk so that `windows` mapped files plus temporaries fit the bound."""
    per_element = windows * ELEMENT_BYTES + TEMPORARY_BYTES_PER_ELEMENT
    usable = max_resident_bytes - RESERVED_BYTES - windows * PAGE_BYTES
    return max(1, usable // per_element)


@dataclass(slots=True)
class _Slot:
    """Where one parameter's values sit in the state files."""

    param: torch.Tensor
    index: int
    offset: int
    numel: int
    step: int = 0
    grad_on_disk: bool = False

    @property
    def stop(self) -> int:
        return self.offset + self.numel


class OffloadedOptimizer(Optimizer):
    """Adam or AdamW with its state in memory-mapped files under `state_dir`.

    Each `step` walks the state files in chunks of at most `max_resident_bytes`
    (mapped state windows plus the update's temporaries), applies torch's own
    Adam update (`torch.optim.adam.adam`, single-tensor path) to each chunk and
    unmaps it, so the optimizer's resident memory stays under the bound whatever
    the model size. With `offload_gradients=True` each gradient is moved to a
    file as soon as backward produces it, so at most one parameter's gradient
    is in RAM at a time. Parameters stay in RAM (the forward pass needs them).

    `checkpoint()` (also called by `state_dict()`) flushes the files and writes
    the manifest last; `resume=True` continues from a checkpointed folder and
    raises OffloadError if the files changed after the checkpoint (a process
    killed mid-step) or do not match their checksums.

    >>> import tempfile
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = OffloadedOptimizer(model.parameters(), lr=0.1, state_dir=tempfile.mkdtemp())
    >>> model(torch.ones(1, 4)).sum().backward()
    >>> opt.step(); opt.zero_grad()
    >>> opt.state[model.weight]["step"].item()
    1.0
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        optimizer: str = "adamw",
        *,
        state_dir: str | os.PathLike[str],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
        amsgrad: bool = False,
        maximize: bool = False,
        max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES,
        offload_gradients: bool = False,
        drop_page_cache: bool = False,
        resume: bool = False,
        verify_checksums: bool = True,
    ) -> None:
        kind = optimizer.lower()
        if kind not in _DECOUPLED:
            raise OffloadError(
                f"OffloadedOptimizer supports optimizer='adam' or 'adamw', not {optimizer!r}"
            )
        if max_resident_bytes < MIN_RESIDENT_BYTES:
            raise OffloadError(
                f"max_resident_bytes={max_resident_bytes} is too small; pass at least "
                f"{MIN_RESIDENT_BYTES} (1 MiB)"
            )
        if weight_decay is None:
            weight_decay = 0.01 if kind == "adamw" else 0.0  # torch's own defaults
        self._kind = kind
        self._amsgrad = amsgrad
        self._state_names = state_names(amsgrad)
        self._offload_gradients = offload_gradients
        self._drop_page_cache = drop_page_cache
        self._verify_checksums = verify_checksums
        self._max_resident_bytes = max_resident_bytes
        windows = len(self._state_names) + (1 if offload_gradients else 0)
        self._chunk = chunk_elements(max_resident_bytes, windows)
        self._slots: list[_Slot] = []
        self._slot_of: dict[torch.Tensor, _Slot] = {}
        self._numel = 0
        self._hooks: list[Any] = []
        self._files: StateFiles | None = None
        self._status = "stepping"
        self.state_dir = Path(state_dir)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

        saved = read_manifest(self.state_dir) if self.state_dir.is_dir() else None
        if saved is not None and not resume:
            raise OffloadError(
                f"{self.state_dir} already holds offloaded optimizer state; pass resume=True "
                "to continue from it, or choose an empty state_dir"
            )
        if resume and saved is None:
            raise OffloadError(
                f"no offloaded state to resume in {self.state_dir}; pass resume=False to start "
                "fresh, or point state_dir at a folder written by checkpoint()"
            )
        names = self._state_names + (["grad"] if offload_gradients else [])
        self._files = StateFiles(
            self.state_dir, names, self._numel, create=not resume, scratch=frozenset({"grad"})
        )
        if resume:
            self._adopt(saved)
        else:
            # Nothing is checkpointed yet: a restart from this folder must be refused.
            write_manifest(self.state_dir, self._manifest("stepping", checksums=False))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_optimizer(
        cls, optimizer: Optimizer, *, state_dir: str | os.PathLike[str], **kwargs: Any
    ) -> OffloadedOptimizer:
        """Move an existing torch Adam/AdamW (its groups, hyper-parameters and state) to disk.

        Drop the original optimizer afterwards: its state has been copied.
        """
        if not isinstance(optimizer, torch.optim.Adam):
            raise OffloadError(
                f"cannot offload {type(optimizer).__name__}; offload supports torch.optim.Adam "
                "and AdamW"
            )
        decoupled = optimizer.defaults.get(
            "decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW)
        )
        amsgrad = {bool(g["amsgrad"]) for g in optimizer.param_groups}
        if len(amsgrad) > 1:
            raise OffloadError("parameter groups mix amsgrad on and off; use one setting")
        # The very group dicts: one learning rate per group for both optimizers, so a
        # scheduler built on the original keeps steering the offloaded one.
        groups = list(optimizer.param_groups)
        for group in groups:
            group.setdefault("maximize", False)
        offloaded = cls(
            groups,
            "adamw" if decoupled else "adam",
            state_dir=state_dir,
            amsgrad=amsgrad.pop(),
            **kwargs,
        )
        offloaded._copy_state_from(optimizer)
        return offloaded

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        for param in self.param_groups[-1]["params"]:
            self._add_slot(param)
        if self._files is not None:
            self._files.grow(self._numel)
            self._mark_stepping()

    def _add_slot(self, param: torch.Tensor) -> None:
        if param.dtype != torch.float32 or param.device.type != "cpu":
            raise OffloadError(
                f"OffloadedOptimizer needs float32 CPU parameters, got {param.dtype} on "
                f"{param.device}; call model.float().cpu() first"
            )
        if not param.is_contiguous():
            raise OffloadError("a parameter is not contiguous; make it so with .contiguous()")
        slot = _Slot(param=param, index=len(self._slots), offset=self._numel, numel=param.numel())
        self._slots.append(slot)
        self._slot_of[param] = slot
        self._numel += slot.numel
        if self._offload_gradients:
            self._hooks.append(param.register_post_accumulate_grad_hook(self._stash_gradient))

    def _copy_state_from(self, optimizer: Optimizer) -> None:
        assert self._files is not None
        for slot in self._slots:
            saved = optimizer.state.get(slot.param)
            if not saved:
                continue
            for name in self._state_names:
                flat = saved[name].detach().reshape(-1)
                for start in range(slot.offset, slot.stop, self._chunk):
                    stop = min(start + self._chunk, slot.stop)
                    with self._files.windows([name], start, stop) as window:
                        window[name].copy_(flat[start - slot.offset : stop - slot.offset])
            slot.step = int(saved["step"])
            self.state[slot.param]["step"] = torch.tensor(float(slot.step))

    # -- training -----------------------------------------------------------------------------

    def _has_grad(self, slot: _Slot) -> bool:
        return slot.param.grad is not None or slot.grad_on_disk

    def _stash_gradient(self, param: torch.Tensor) -> None:
        """Backward hook: add this gradient to its file and free it from RAM."""
        assert self._files is not None
        slot = self._slot_of[param]
        flat = param.grad.reshape(-1)
        for start in range(slot.offset, slot.stop, self._chunk):
            stop = min(start + self._chunk, slot.stop)
            piece = flat[start - slot.offset : stop - slot.offset]
            with self._files.windows(["grad"], start, stop) as window:
                if slot.grad_on_disk:
                    window["grad"].add_(piece)
                else:
                    window["grad"].copy_(piece)
        slot.grad_on_disk = True
        param.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for slot in self._slots:
            slot.grad_on_disk = False

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        assert self._files is not None
        self._mark_stepping()
        windows = self._state_names + (["grad"] if self._offload_gradients else [])
        for group in self.param_groups:
            active = [s for s in (self._slot_of[p] for p in group["params"]) if self._has_grad(s)]
            if not active:
                continue
            for s in active:
                if s.param.grad is not None and s.param.grad.is_sparse:
                    raise OffloadError("sparse gradients are not supported; use dense embeddings")
            # A group's parameters are contiguous in the files; inactive ones are skipped.
            for start in range(active[0].offset, active[-1].stop, self._chunk):
                stop = min(start + self._chunk, active[-1].stop)
                pieces = [
                    (s, max(start, s.offset), min(stop, s.stop))
                    for s in active
                    if s.offset < stop and s.stop > start
                ]
                if not pieces:
                    continue
                with self._files.windows(
                    windows, start, stop, drop_page_cache=self._drop_page_cache
                ) as window:
                    self._update_chunk(group, pieces, window, start)
            for s in active:
                s.step += 1
                self.state[s.param]["step"] = torch.tensor(float(s.step))
        return loss

    def _update_chunk(
        self,
        group: dict[str, Any],
        pieces: list[tuple[_Slot, int, int]],
        window: dict[str, torch.Tensor],
        window_start: int,
    ) -> None:
        params, grads, steps = [], [], []
        states: dict[str, list[torch.Tensor]] = {name: [] for name in self._state_names}
        for slot, start, stop in pieces:
            lo, hi = start - slot.offset, stop - slot.offset
            params.append(slot.param.detach().view(-1)[lo:hi])
            if self._offload_gradients:
                grads.append(window["grad"][start - window_start : stop - window_start])
            else:
                grads.append(slot.param.grad.reshape(-1)[lo:hi])
            for name in self._state_names:
                states[name].append(window[name][start - window_start : stop - window_start])
            # adam() increments the step it is given; every chunk of a parameter starts from
            # the same count so the bias corrections match the in-memory optimizer's.
            steps.append(torch.tensor(float(slot.step)))
        beta1, beta2 = group["betas"]
        adam_update(
            params,
            grads,
            states["exp_avg"],
            states["exp_avg_sq"],
            states.get("max_exp_avg_sq", []),
            steps,
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=False,
            grad_scale=None,
            found_inf=None,
            has_complex=False,
            decoupled_weight_decay=_DECOUPLED[self._kind],
            amsgrad=self._amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint(self, copy_to: str | os.PathLike[str] | None = None) -> Path:
        """Flush the files and write a clean manifest (last, atomically); return the folder.

        The next `step` changes the files in place, so this checkpoint lasts until then;
        `copy_to` also copies the files and their manifest to a folder that keeps it.
        """
        manifest = self._write_checkpoint()
        if copy_to is None:
            return self.state_dir
        target = Path(copy_to)
        if read_manifest(target) if target.is_dir() else None:
            raise OffloadError(f"{target} already holds a checkpoint; copy to an empty folder")
        target.mkdir(parents=True, exist_ok=True)
        for name in self._state_names:
            # copyfile uses the kernel's copy (sendfile): bounded memory for any size.
            shutil.copyfile(self._files.path(name), target / self._files.path(name).name)
            fd = os.open(target / self._files.path(name).name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        write_manifest(target, manifest)
        return target

    def _write_checkpoint(self) -> dict[str, Any]:
        assert self._files is not None
        self._files.sync()
        manifest = self._manifest("clean", checksums=True)
        write_manifest(self.state_dir, manifest)
        self._status = "clean"
        return manifest

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint, then return the small description of the state (the files hold the rest)."""
        manifest = self._write_checkpoint()
        return {
            "state": {s.index: {"step": s.step} for s in self._slots},
            "param_groups": manifest["param_groups"],
            "offload": manifest | {"state_dir": str(self.state_dir)},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt a state_dict whose files are this optimizer's `state_dir`, unchanged since."""
        saved = state_dict.get("offload")
        if saved is None:
            raise OffloadError(
                "this state_dict was not made by OffloadedOptimizer; build one with "
                "OffloadedOptimizer.from_optimizer() instead"
            )
        on_disk = read_manifest(self.state_dir)
        same = (
            on_disk is not None
            and on_disk.get("status") == "clean"
            and on_disk.get("files") == saved.get("files")
            and [p["step"] for p in on_disk["params"]] == [p["step"] for p in saved["params"]]
        )
        if not same:
            raise OffloadError(
                f"the files in {self.state_dir} are not the ones this state_dict was saved with "
                "(they changed since, or belong to another run); point state_dir at the folder "
                "saved with it"
            )
        self._adopt(saved)

    def _adopt(self, manifest: dict[str, Any]) -> None:
        """Take steps and hyper-parameters from a clean manifest after checking the files."""
        assert self._files is not None
        where = self.state_dir
        if manifest.get("status") != "clean":
            raise OffloadError(
                f"the state in {where} was changed after its last checkpoint (the process "
                "stopped during or after a step), so its files cannot be trusted; start from an "
                "empty state_dir or a folder saved with checkpoint(copy_to=...)"
            )
        shapes = [list(s.param.shape) for s in self._slots]
        if (
            manifest["optimizer"] != self._kind
            or manifest["amsgrad"] != self._amsgrad
            or [p["shape"] for p in manifest["params"]] != shapes
        ):
            raise OffloadError(
                f"the state in {where} belongs to another setup ({manifest['optimizer']}, "
                f"{len(manifest['params'])} parameters); build the optimizer with the same model "
                "and optimizer name"
            )
        sizes = self._files.sizes_bytes()
        for name, info in manifest["files"].items():
            if sizes.get(name) != info["bytes"]:
                raise OffloadError(
                    f"{self._files.path(name)} has {sizes.get(name)} bytes, the manifest says "
                    f"{info['bytes']}: the file was cut short; restore the folder from a copy"
                )
            if self._verify_checksums and self._files.crc32(name) != info["crc32"]:
                raise OffloadError(
                    f"{self._files.path(name)} does not match its checksum: it was changed "
                    "after the checkpoint; restore the folder from a copy"
                )
        for slot, saved in zip(self._slots, manifest["params"], strict=True):
            slot.step = int(saved["step"])
            if slot.step:
                self.state[slot.param]["step"] = torch.tensor(float(slot.step))
        for group, saved in zip(self.param_groups, manifest["param_groups"], strict=True):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if key == "betas" else value
        self._status = "clean"

    def _mark_stepping(self) -> None:
        if self._status != "stepping":
            write_manifest(self.state_dir, self._manifest("stepping", checksums=False))
            self._status = "stepping"

    def _manifest(self, status: str, *, checksums: bool) -> dict[str, Any]:
        assert self._files is not None
        sizes = self._files.sizes_bytes()
        groups = []
        for group in self.param_groups:
            saved = {k: _plain(v) for k, v in group.items() if k != "params"}
            saved["params"] = [self._slot_of[p].index for p in group["params"]]
            groups.append(saved)
        return {
            "status": status,
            "optimizer": self._kind,
            "amsgrad": self._amsgrad,
            "numel": self._numel,
            "params": [
                {"shape": list(s.param.shape), "offset": s.offset, "step": s.step}
                for s in self._slots
            ],
            "param_groups": groups,
            "files": {
                name: {
                    "bytes": sizes[name],
                    "crc32": self._files.crc32(name) if checksums else None,
                }
                for name in self._state_names
            },
        }

    # -- resources ----------------------------------------------------------------------------

    @property
    def chunk_elements(self) -> int:
        """Elements updated per chunk (mapped windows plus temporaries fit max_resident_bytes)."""
        return self._chunk

    def close(self) -> None:
        """Remove gradient hooks and close the files (the state stays on disk)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if self._files is not None:
            self._files.close()

    def __del__(self) -> None:
        files = getattr(self, "_files", None)
        if files is not None:
            files.close()


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a hyper-parameter (tensors become floats, tuples lists)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise OffloadError(f"hyper-parameter {value} is not finite; pass a finite value")
    return value
