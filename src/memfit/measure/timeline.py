"""Live bytes by category over one training step, in operation order, small enough to keep.

The tracker records every allocation and free; `Timeline.from_events` turns them into at
most `MAX_SAMPLES` samples. Each sample is a moment after an allocation or a free: the
operation number, the phase, the module running, and the live bytes of each category.
Categories are those the tensors ended up with (a temporary that autograd saved is an
activation from the moment it was made), so the peak sample matches the categories a
profile reports at its peak.

Long steps are thinned bucket by bucket, keeping each bucket's lowest and highest total in
order (the envelope a chart needs), the peak itself and the first moment of each phase.

    >>> t = Timeline.from_samples([(0, 0, {"parameters": 10}), (3, 1, {"parameters": 10,
    ...     "activations": 5}), (7, 2, {"parameters": 10})])
    >>> t.peak_bytes, t.peak_op, t.phase_spans()[1]
    (15, 3, ('backward', 3, 7))
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "other")
PHASES = ("forward", "backward", "optimizer_step", "zero_grad")
MAX_SAMPLES = 2000
"""Samples kept per step: enough for a chart a screen wide, about 60 kB of JSON."""


@dataclass
class Timeline:
    """Samples of live bytes by category; iterating gives `(total, phase index)` pairs."""

    ops: list[int] = field(default_factory=list)
    """Operation number of each sample (0 is the step's start)."""
    phases: list[int] = field(default_factory=list)
    """Index into `PHASES` of each sample."""
    categories: dict[str, list[int]] = field(default_factory=dict)
    """Bytes per category at each sample; empty when only totals are known."""
    totals: list[int] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    """The module running at each sample ("" outside every module)."""
    events: int = 0
    """Allocations and frees the step had before thinning."""
    operations: int = 0
    """Operations the step ran."""

    def __post_init__(self) -> None:
        if self.categories and not self.totals:
            self.totals = [sum(v) for v in zip(*self.categories.values(), strict=True)]
        if not self.modules:
            self.modules = [""] * len(self.totals)

    # ---- building ------------------------------------------------------------------------------
    @classmethod
    def from_samples(
        cls, samples: Sequence[tuple[int, int, Mapping[str, int]]], events: int | None = None
    ) -> Timeline:
        """From `(operation, phase index, {category: bytes})` samples, in order."""
        return cls(
            ops=[op for op, _, _ in samples],
            phases=[phase for _, phase, _ in samples],
            categories={c: [int(cats.get(c, 0)) for _, _, cats in samples] for c in CATEGORIES},
            events=len(samples) if events is None else events,
            operations=samples[-1][0] if samples else 0,
        )

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[int, int]]) -> Timeline:
        """Totals only, as `(total, phase index)` pairs: no split by category is known."""
        return cls(
            ops=list(range(len(pairs))),
            phases=[int(p) for _, p in pairs],
            totals=[int(t) for t, _ in pairs],
            events=len(pairs),
            operations=len(pairs),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence | None) -> Timeline:
        """Read `to_dict()` output back (or the older list of `[total, phase]` pairs)."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            return cls.from_pairs([tuple(pair) for pair in data])
        names = list(data.get("module_names", []))
        ops = list(data.get("op", []))
        phases = [0] * len(ops)
        for name, first in data.get("phase_starts", []):
            index = PHASES.index(name) if name in PHASES else 0
            phases[first:] = [index] * (len(ops) - first)
        return cls(
            ops=ops,
            phases=phases,
            categories={c: list(v) for c, v in data.get("categories", {}).items()},
            totals=list(data.get("total", [])),
            modules=[names[i] if 0 <= i < len(names) else "" for i in data.get("module", [])],
            events=int(data.get("events", 0)),
            operations=int(data.get("operations", 0)),
        )

    # ---- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.totals)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.totals, self.phases, strict=True))

    def __bool__(self) -> bool:
        return bool(self.totals)

    @property
    def peak_index(self) -> int:
        """The first sample with the highest total (-1 when empty)."""
        if not self.totals:
            return -1
        return max(range(len(self.totals)), key=self.totals.__getitem__)

    @property
    def peak_bytes(self) -> int:
        return self.totals[self.peak_index] if self.totals else 0

    @property
    def peak_op(self) -> int:
        return self.ops[self.peak_index] if self.totals else 0

    def categories_at(self, index: int) -> dict[str, int]:
        return {c: values[index] for c, values in self.categories.items()}

    def phase_spans(self) -> list[tuple[str, int, int]]:
        """`(phase, first operation, last operation)` for each run of samples in one phase."""
        spans: list[tuple[str, int, int]] = []
        for op, phase in zip(self.ops, self.phases, strict=True):
            name = PHASES[phase] if 0 <= phase < len(PHASES) else "other"
            if spans and spans[-1][0] == name:
                spans[-1] = (name, spans[-1][1], op)
            else:
                if spans:  # a phase lasts until the next one starts
                    spans[-1] = (spans[-1][0], spans[-1][1], op)
                spans.append((name, op, op))
        return spans

    def matches(self, categories: Mapping[str, int]) -> bool:
        """Whether the peak sample holds these categories (false for a sharded view)."""
        if not self.categories or not self.totals:
            return False
        at_peak = self.categories_at(self.peak_index)
        return all(int(categories.get(c, 0)) == at_peak.get(c, 0) for c in CATEGORIES)

    # ---- changing ------------------------------------------------------------------------------
    def shifted(self, category: str, delta: int) -> Timeline:
        """Every moment with `delta` more bytes of `category` (a state whose size is constant)."""
        cats = {c: list(v) for c, v in self.categories.items()}
        if category in cats:
            cats[category] = [v + delta for v in cats[category]]
        return Timeline(
            ops=list(self.ops),
            phases=list(self.phases),
            categories=cats,
            totals=[t + delta for t in self.totals],
            modules=list(self.modules),
            events=self.events,
            operations=self.operations,
        )

    def rebased(self, pairs: Sequence[tuple[int, int]], categories: Mapping[str, int]) -> Timeline:
        """This timeline with its totals replaced by `pairs` (same length), split kept if it can be.

        A caller that moves every total by one amount because one category changed size
        (a low-bit optimizer state counted by formula) gets that category moved; any other
        change keeps the new totals without a split.
        """
        if len(pairs) != len(self.totals):
            return Timeline.from_pairs(pairs)
        deltas = {int(t) - old for (t, _), old in zip(pairs, self.totals, strict=True)}
        if len(deltas) == 1 and self.categories:
            delta = deltas.pop()
            if delta == 0:
                return self
            at_peak = self.categories_at(self.peak_index)
            moved = [
                c for c in CATEGORIES if int(categories.get(c, 0)) - at_peak.get(c, 0) == delta
            ]
            if len(moved) == 1:
                return self.shifted(moved[0], delta)
        rebuilt = Timeline.from_pairs(pairs)
        rebuilt.ops, rebuilt.modules = list(self.ops), list(self.modules)
        rebuilt.events, rebuilt.operations = self.events, self.operations
        return rebuilt

    # ---- saving --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Compact JSON: parallel lists per sample, phases as the sample each one starts at,
        module names stored once (`module` indexes `module_names`)."""
        names: dict[str, int] = {}
        module_ids = [names.setdefault(m, len(names)) for m in self.modules]
        starts = [
            [PHASES[p] if 0 <= p < len(PHASES) else "other", i]
            for i, p in enumerate(self.phases)
            if i == 0 or p != self.phases[i - 1]
        ]
        out: dict[str, Any] = {
            "events": self.events,
            "operations": self.operations,
            "samples": len(self.totals),
            "op": list(self.ops),
            "phase_starts": starts,
            "categories": {c: list(v) for c, v in self.categories.items()},
            "module": module_ids,
            "module_names": list(names),
        }
        if not self.categories:  # the totals are the sums of the categories otherwise
            out["total"] = list(self.totals)
        return out


def thin(totals: Sequence[int], keep: set[int], limit: int = MAX_SAMPLES) -> list[int]:
    """Indices to keep: every one when few, else each bucket's lowest and highest, plus `keep`.

    >>> thin([0, 5, 1, 9, 2, 3, 8, 0], keep={4}, limit=4)
    [0, 3, 4, 6, 7]
    """
    n = len(totals)
    if n <= limit:
        return list(range(n))
    buckets = max(1, limit // 2)
    size = n / buckets
    chosen = set(keep) | {0, n - 1}
    for b in range(buckets):
        lo, hi = int(b * size), min(n, int((b + 1) * size))
        if lo >= hi:
            continue
        span = range(lo, hi)
        chosen.add(min(span, key=totals.__getitem__))
        chosen.add(max(span, key=totals.__getitem__))
    return sorted(chosen)
