"""Count live tensor storages by category while a training step runs.

A TorchDispatchMode sees every op's outputs; each new storage is recorded once
(views and in-place results share a storage) and a weakref finalizer forgets it
when it is freed. The same code runs on real tensors (`memfit profile`) and on
fake ones (`memfit estimate`), so measurement and estimate cannot drift apart.

PyTorch's private `torch.distributed._tools.mem_tracker` works the same way; we
keep our own small version because that module is private and may change.

Categories:
- `parameters`: parameters and buffers, registered before the step.
- `gradients`: a storage becomes a gradient when autograd accumulates it into `.grad`.
- `optimizer`: optimizer state, registered before the step.
- `activations`: storages created in the forward pass and saved for backward.
- `other`: inputs, and temporaries of any phase.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from memfit.measure.bytes import iter_storages
from memfit.measure.timeline import MAX_SAMPLES, Timeline, thin

CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "other")
PHASES = ("forward", "backward", "optimizer_step", "zero_grad")


@dataclass(slots=True)
class _Entry:
    nbytes: int
    category: str
    seq: int  # allocation order: lets a relabel correct the peak snapshot
    module: str | None = None
    created_in: str | None = None


@dataclass
class TrackerResult:
    """What a tracked step used: the peak, its make-up, and where it happened."""

    peak_bytes: int
    peak_phase: str
    categories: dict[str, int]
    phase_peaks: dict[str, int]
    module_activations: dict[str, int]
    module_forward_s: dict[str, float]
    timeline: Timeline = field(default_factory=Timeline)
    """Live bytes by category after each allocation or free (thinned when long), for charts;
    iterating it gives `(total, phase index)` pairs."""
    start_bytes: int = 0
    """Live bytes registered before the step began (parameters, state, inputs)."""
    phase_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    """Bytes per category at each phase's own peak (they add up to `phase_peaks`)."""
    reserved_peak_bytes: int | None = None
    """With `model_cuda_allocator`: what PyTorch's CUDA caching allocator would have
    reserved for these allocations at its peak (`memfit.measure.cuda_allocator`)."""

    def __setattr__(self, name: str, value) -> None:
        # Code that rewrites the totals as plain `(total, phase)` pairs (the low-bit estimate
        # moves every moment by the formula's optimizer bytes) keeps the split by category
        # when the change is that one category's: see `Timeline.rebased`.
        if name == "timeline" and not isinstance(value, Timeline):
            current = self.__dict__.get("timeline")
            value = (
                current.rebased(list(value), self.categories)
                if isinstance(current, Timeline)
                else Timeline.from_pairs(list(value))
            )
        object.__setattr__(self, name, value)


class MemoryTracker:
    """Live tensor bytes by category. Use `register_*` first, then `with tracker.track(model):`."""

    def __init__(self, keep_timeline: bool = True):
        self._live: dict[int, _Entry] = {}
        self._refs: dict[int, weakref.finalize] = {}
        self._totals = dict.fromkeys(CATEGORIES, 0)
        self._total = 0
        self._seq = 0
        self._phase = "forward"
        self._peak = 0
        self._peak_seq = -1
        self._peak_phase = "forward"
        self._peak_categories = dict.fromkeys(CATEGORIES, 0)
        self._phase_peaks = dict.fromkeys(PHASES, 0)
        # Each phase's peak make-up, with the allocation count it was taken at (for relabels).
        self._phase_snapshots: dict[str, tuple[int, dict[str, int]]] = {}
        self._module_stack: list[str] = []
        self._module_activations: dict[str, int] = {}
        self._module_forward_s: dict[str, float] = {}
        self._keep_timeline = keep_timeline
        # One row per allocation or free: (entry, +1 or -1, operation number, phase, module).
        # Categories are read from the entries only at the end, once relabels are done.
        self._events: list[tuple[_Entry, int, int, str, str]] = []
        self._ops = 0
        self._track_start_event: int | None = None
        self._track_start_op = 0
        self._start_bytes: int | None = None

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, phase: str) -> None:
        if self._phase == "forward" and phase == "backward":
            self._label_kept_forward_tensors()
        # A phase that allocates nothing (an in-place optimizer step) still holds what is live.
        self._phase = phase
        if self._total > self._phase_peaks.get(phase, 0):
            self._raise_phase_peak(phase)
        if self._keep_timeline and self._track_start_event is not None:
            # A moment with nothing changed, so the timeline shows where the phase began.
            self._after_change(_Entry(0, "other", self._seq), 0)

    def _label_kept_forward_tensors(self) -> None:
        # Tensors made in forward and still alive when backward starts are held for it.
        # Most were seen by the saved-tensor hook already; the inputs that activation
        # checkpointing keeps go through its own hooks instead, and are caught here.
        for entry in self._live.values():
            if entry.category == "other" and entry.created_in == "forward":
                name = entry.module or "(model)"
                self._module_activations[name] = (
                    self._module_activations.get(name, 0) + entry.nbytes
                )
                self.relabel_entry(entry, "activations")

    # ---- registering what exists before the step -------------------------------------------
    def register(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Record storages that already exist (parameters, optimizer state, inputs)."""
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor):
                for storage in iter_storages(tensor):
                    self._add(storage, category, created_in=None)

    def register_model(self, model: nn.Module) -> None:
        self.register(model.parameters(), "parameters")
        self.register(model.buffers(), "parameters")
        self.register((p.grad for p in model.parameters() if p.grad is not None), "gradients")

    def register_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.register(optimizer_state_tensors(optimizer), "optimizer")

    # ---- the bookkeeping -----------------------------------------------------------------------
    def _add(self, storage: torch.UntypedStorage, category: str, created_in: str | None) -> None:
        key = id(storage)
        if key in self._live:
            return
        nbytes = storage.nbytes()
        module = self._module_stack[-1] if self._module_stack else None
        self._seq += 1
        self._live[key] = _Entry(nbytes, category, self._seq, module, created_in)
        self._refs[key] = weakref.finalize(storage, self._free, key)
        self._totals[category] += nbytes
        self._total += nbytes
        self._after_change(self._live[key], 1)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        self._refs.pop(key, None)
        if entry is None:
            return
        self._totals[entry.category] -= entry.nbytes
        self._total -= entry.nbytes
        self._after_change(entry, -1)

    def _raise_phase_peak(self, phase: str) -> None:
        self._phase_peaks[phase] = self._total
        self._phase_snapshots[phase] = (self._seq, dict(self._totals))

    def _after_change(self, entry: _Entry, sign: int) -> None:
        phase = self.phase
        if self._total > self._phase_peaks.get(phase, 0):
            self._raise_phase_peak(phase)
        if self._total > self._peak:
            self._peak = self._total
            self._peak_seq = self._seq
            self._peak_phase = phase
            self._peak_categories = dict(self._totals)
        if self._keep_timeline:
            module = self._module_stack[-1] if self._module_stack else ""
            self._events.append((entry, sign, self._ops, phase, module))

    def relabel(self, tensor: torch.Tensor, category: str, only_from: str | None = None) -> None:
        """Move a tensor's storages to `category` (a temporary that turned out to be a gradient)."""
        for storage in iter_storages(tensor):
            entry = self._live.get(id(storage))
            if entry is None or entry.category == category:
                continue
            if only_from is not None and entry.category != only_from:
                continue
            self.relabel_entry(entry, category)

    def _on_output(self, tensor: torch.Tensor) -> None:
        for storage in iter_storages(tensor):
            self._add(storage, "other", created_in=self.phase)

    def _on_saved(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.phase == "forward" and isinstance(tensor, torch.Tensor):
            for storage in iter_storages(tensor):
                entry = self._live.get(id(storage))
                if (
                    entry is not None
                    and entry.category == "other"
                    and entry.created_in == "forward"
                ):
                    name = self._module_stack[-1] if self._module_stack else "(model)"
                    self._module_activations[name] = (
                        self._module_activations.get(name, 0) + entry.nbytes
                    )
                    entry.module = name
                    self.relabel_entry(entry, "activations")
        return tensor

    def relabel_entry(self, entry: _Entry, category: str) -> None:
        self._totals[entry.category] -= entry.nbytes
        # Live now and allocated before the peak means it was live at the peak too.
        self._totals[category] += entry.nbytes
        if entry.seq <= self._peak_seq:
            self._peak_categories[entry.category] -= entry.nbytes
            self._peak_categories[category] += entry.nbytes
        for seq, cats in self._phase_snapshots.values():
            if entry.seq <= seq:
                cats[entry.category] -= entry.nbytes
                cats[category] += entry.nbytes
        entry.category = category

    # ---- running -------------------------------------------------------------------------------
    @contextmanager
    def track(
        self, model: nn.Module | None = None, *, time_modules: bool = False
    ) -> Iterator[MemoryTracker]:
        """Track allocations inside the block; hooks on `model` attribute them to modules."""
        handles = []
        if model is not None:
            handles += self._install_module_hooks(model, time_modules)
            for param in model.parameters():
                if param.requires_grad:
                    handle = param.register_post_accumulate_grad_hook(self._grad_ready)
                    _run_first(param, handle)
                    handles.append(handle)
        if self._start_bytes is None:
            self._start_bytes = self._total
            self._track_start_event = len(self._events)
            self._track_start_op = self._ops
        mode = _TrackingMode(self)
        saved = torch.autograd.graph.saved_tensors_hooks(self._on_saved, _unpack)
        try:
            with saved, mode:
                yield self
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop seeing operations for a while; frees are still counted.

        torch.compile refuses to run under a Python dispatch mode, so compiled code (torchao's
        low-bit optimizer steps) runs paused; register what it created afterwards.
        """
        try:
            from torch.utils._python_dispatch import _disable_current_modes
        except ImportError:  # private helper gone: run unpaused and let torch say why
            yield
            return
        with _disable_current_modes():
            yield

    def add_transient(self, nbytes: int, category: str = "other") -> None:
        """Count memory that existed for a moment the tracker could not see (a paused step).

        The peak is raised if the current total plus `nbytes` exceeds it; nothing stays live.
        """
        if nbytes <= 0:
            return
        self._seq += 1
        entry = _Entry(nbytes, category, self._seq)
        self._totals[category] += nbytes
        self._total += nbytes
        self._after_change(entry, 1)
        self._totals[category] -= nbytes
        self._total -= nbytes
        self._after_change(entry, -1)

    def _grad_ready(self, param: torch.Tensor) -> None:
        if param.grad is not None:
            self.relabel(param.grad, "gradients")

    def _install_module_hooks(self, model: nn.Module, time_modules: bool):
        handles = []
        starts: dict[str, float] = {}
        sync = torch.cuda.synchronize if time_modules and _on_cuda(model) else None

        def make_hooks(name: str):
            def pre(_module, _args):
                self._module_stack.append(name)
                if time_modules:
                    if sync:
                        sync()
                    starts[name] = time.perf_counter()

            def post(_module, _args, _output):
                if time_modules and name in starts:
                    if sync:
                        sync()
                    elapsed = time.perf_counter() - starts.pop(name)
                    self._module_forward_s[name] = self._module_forward_s.get(name, 0.0) + elapsed
                if self._module_stack and self._module_stack[-1] == name:
                    self._module_stack.pop()

            return pre, post

        for name, module in model.named_modules():
            pre, post = make_hooks(name or "(model)")
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post, always_call=True))
        return handles

    # ---- results -------------------------------------------------------------------------------
    @property
    def current_bytes(self) -> int:
        return self._total

    def current_categories(self) -> dict[str, int]:
        return dict(self._totals)

    model_cuda_allocator: bool = False
    """Replay the allocations through a model of the CUDA caching allocator (needs the
    timeline's events, kept by default)."""

    def reserved_peak_bytes(self) -> int | None:
        if not (self.model_cuda_allocator and self._keep_timeline):
            return None
        from memfit.measure.cuda_allocator import reserved_peak

        events = (
            (id(entry), entry.nbytes, sign) for entry, sign, *_ in self._events if entry.nbytes
        )
        return reserved_peak(events)[1]

    def result(self) -> TrackerResult:
        return TrackerResult(
            peak_bytes=self._peak,
            peak_phase=self._peak_phase,
            categories=dict(self._peak_categories),
            phase_peaks=dict(self._phase_peaks),
            module_activations=dict(self._module_activations),
            module_forward_s=dict(self._module_forward_s),
            timeline=self.timeline(),
            start_bytes=self._start_bytes or 0,
            phase_categories={k: dict(v) for k, (_, v) in self._phase_snapshots.items()},
            reserved_peak_bytes=self.reserved_peak_bytes(),
        )

    def timeline(self, max_samples: int = MAX_SAMPLES) -> Timeline:
        """The step from the start of `track` on: live bytes by category, thinned when long."""
        start = self._track_start_event or 0
        events = self._events
        # Totals per event first (cheap), to choose the moments worth keeping.
        total = 0
        totals: list[int] = []
        for entry, sign, *_ in events:
            total += sign * entry.nbytes
            totals.append(total)
        step = totals[start:] if start < len(totals) else []
        if not step:
            return Timeline()
        peak = max(range(len(step)), key=step.__getitem__)
        phase_starts = {
            i for i in range(1, len(step)) if events[start + i][3] != events[start + i - 1][3]
        }
        keep = thin(step, {peak, *phase_starts}, max_samples)
        # Then replay with each tensor's final category, reading the kept moments.
        live = dict.fromkeys(CATEGORIES, 0)
        samples = []
        wanted = iter(keep)
        next_kept = next(wanted, None)
        first_op = self._track_start_op
        modules = []
        for i, (entry, sign, op, phase, module) in enumerate(events):
            live[entry.category] += sign * entry.nbytes
            if i - start == next_kept:
                samples.append(
                    (op - first_op, PHASES.index(phase) if phase in PHASES else 0, dict(live))
                )
                modules.append(module)
                next_kept = next(wanted, None)
        out = Timeline.from_samples(samples, events=len(step))
        out.modules = modules
        out.operations = self._ops - first_op
        return out


class _TrackingMode(TorchDispatchMode):
    def __init__(self, tracker: MemoryTracker):
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.tracker._ops += 1
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.tracker._on_output, out)
        return out


def _run_first(param: torch.Tensor, handle) -> None:
    """Move a post-accumulate-grad hook before the ones already there.

    A hook registered earlier may consume the gradient and free it (an optimizer step
    inside backward): the gradient must be labelled first. torch has no `prepend` for
    these hooks, so the order of its hook dict is changed; without it, the hook runs last.
    """
    hooks = getattr(param, "_post_accumulate_grad_hooks", None)
    if hasattr(hooks, "move_to_end") and handle.id in hooks:
        hooks.move_to_end(handle.id, last=False)


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    """Every tensor an optimizer keeps in its per-parameter state."""
    for state in getattr(optimizer, "state", {}).values():
        if isinstance(state, dict):
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    yield value


def _on_cuda(model: nn.Module) -> bool:
    return any(p.is_cuda for p in model.parameters())
