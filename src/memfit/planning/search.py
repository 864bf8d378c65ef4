"""The search: the fastest combination of techniques whose predicted peak fits.

A pure function of its inputs (`PlanContext` and the fake-tensor runs it asks for):

1. every combination of the registry's on/off techniques is put in a tier by what it
   costs the user: `(slow, learns-differently, lossy)` counts, so exact combinations
   come first, then lossy ones, and disk offload only when nothing else fits; with
   `exact=True` lossy combinations are dropped;
2. within a tier, a combination that does not fit even at its smallest micro-batch with
   every unit checkpointed is left at once; the others are tried with each way of
   checkpointing, and for each the largest micro-batch that fits is found by bisection
   (the peak falls with the micro-batch);
3. the first tier with a fitting combination wins: its fastest one, where "fastest"
   ignores differences under `TIE_TOLERANCE` (timing noise) in favour of fewer
   micro-batches and fewer recomputed modules.

A combination's memory comes from a fake-tensor run with its `on_fake` techniques
applied, folded through every technique's `effect` in order; its time from the step
time model through the same effects.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from memfit.planning.inputs import FakeRuns, PlanContext
from memfit.planning.types import Candidate, PlanSettings
from memfit.techniques.accumulation import MIN_BATCHNORM_MICRO, MicroBatchConfig, micro_sizes
from memfit.techniques.base import LEARNS, LOSSY, SLOW, Prediction, TechniqueConfig, TimeParts
from memfit.techniques.checkpointing import CheckpointConfig, Checkpointing, units_for
from memfit.techniques.registry import TECHNIQUES, in_order, of
from memfit.techniques.sharding import ShardingConfig

TIE_TOLERANCE = 0.03
"""Predicted step times closer than this share are treated as equal."""
MAX_RANKS = 4096


@dataclass(frozen=True)
class SearchResult:
    baseline: Candidate
    chosen: Candidate | None
    """None when nothing fits."""
    considered: tuple[Candidate, ...]
    min_nodes: int | None


def search(ctx: PlanContext, runs: FakeRuns, progress=None) -> SearchResult:
    return _Search(ctx, runs, progress).run()


def evaluate(ctx: PlanContext, runs: FakeRuns, configs: Iterable[TechniqueConfig]) -> Candidate:
    """One combination's prediction, as the search makes it (whether or not it fits)."""
    return _Search(ctx, runs).evaluate(tuple(configs), record=False)


class _Search:
    def __init__(self, ctx: PlanContext, runs: FakeRuns, progress=None):
        self.ctx = ctx
        self.runs = runs
        self.progress = progress
        self.batch = ctx.request.batch_size
        self.room = ctx.request.room
        tm = ctx.measurements.time_model
        self.timed = tm.source != "not needed"
        self.base_time = TimeParts(compute_s=tm.pass_s(self.batch), optimizer_s=tm.optimizer_s)
        self.given = tuple(
            config
            for tech in TECHNIQUES
            if tech.role == "given" and tech.supports(ctx) is None
            for config in tech.candidates(ctx)[:1]
        )
        self.considered: dict[PlanSettings, Candidate] = {}
        self.min_micro = 1
        self.checkpointing = next(t for t in TECHNIQUES if isinstance(t, Checkpointing))

    # ---- one combination ---------------------------------------------------------------------
    def evaluate(self, configs: Iterable[TechniqueConfig], record: bool = True) -> Candidate:
        settings = PlanSettings(self.batch, tuple(configs) + self._missing_given(configs))
        if record and settings in self.considered:
            return self.considered[settings]
        prediction = self.predict(settings)
        base_s = self.base_time.step_s
        fits = self.room.fits(max(prediction.peak_bytes, prediction.process_peak_bytes))
        candidate = Candidate(settings, prediction, fits, base_s, self.timed)
        if record:
            self.considered[settings] = candidate
        return candidate

    def predict(self, settings: PlanSettings) -> Prediction:
        """The fake run of the settings' on-fake techniques, folded through every effect."""
        fake = tuple(c for c in settings.configs if of(c).on_fake)
        scratch = self.ctx.measurements.kernel_scratch
        run = self.runs.prediction(fake)
        prediction = Prediction(
            run.phases,
            self.base_time,
            scratch.at(settings.micro_batch_size, bool(settings.checkpointed)) if scratch else {},
            run.reserved_extra,
        )
        for config in settings.configs:
            prediction = of(config).effect(config, prediction, self.ctx)
        return prediction

    def _missing_given(self, configs: Iterable[TechniqueConfig]) -> tuple[TechniqueConfig, ...]:
        names = {c.technique for c in configs}
        return tuple(c for c in self.given if c.technique not in names)

    def compatible(self, configs: Sequence[TechniqueConfig]) -> bool:
        configs = tuple(configs) + self._missing_given(configs)
        by_name = {c.technique: c for c in configs}
        slots = [of(c).slot for c in configs if of(c).slot]
        if len(slots) != len(set(slots)):
            return False
        for config in configs:
            others = {k: v for k, v in by_name.items() if k != config.technique}
            if of(config).conflicts(config, others, self.ctx) is not None:
                return False
        return True

    # ---- the combinations, tier by tier ------------------------------------------------------
    def tiers(self) -> list[list[tuple[TechniqueConfig, ...]]]:
        req = self.ctx.request
        options = []
        for tech in TECHNIQUES:
            if tech.role != "option" or tech.supports(self.ctx) is not None:
                continue
            if tech.kind == LEARNS and tech.name not in req.allow:
                continue
            if tech.kind == LOSSY and req.exact:
                continue
            options.append([None, *tech.candidates(self.ctx)])
        tiers: dict[tuple[int, int, int], list[tuple[TechniqueConfig, ...]]] = {}
        for choice in itertools.product(*options):
            combo = tuple(c for c in choice if c is not None)
            if not self.compatible(combo):
                continue
            kinds = [of(c).kind for c in combo]
            key = (kinds.count(SLOW), kinds.count(LEARNS), kinds.count(LOSSY))
            tiers.setdefault(key, []).append(combo)
        return [tiers[k] for k in sorted(tiers)]

    def run(self) -> SearchResult:
        baseline = self.evaluate(())
        chosen = baseline if baseline.fits else None
        batchnorm = self.ctx.facts.has_batchnorm
        floors = [min(MIN_BATCHNORM_MICRO, self.batch), 1] if batchnorm and self.batch > 1 else [1]
        tiers = self.tiers() if chosen is None else []
        for floor in floors:
            # With BatchNorm, tiny micro-batches come last: after every other technique.
            self.min_micro = floor
            for tier in tiers:
                if chosen is not None:
                    break
                found = []
                for combo in tier:
                    found += self.best_for(combo)
                    if self.progress is not None:
                        self.progress.update(
                            description=f"planning: {len(self.runs)} fake-tensor runs, "
                            f"{len(self.considered)} combinations"
                        )
                chosen = fastest(found)
            if chosen is not None:
                break
        nodes_needed = None
        if chosen is None or self.ctx.request.nodes > 1:
            nodes_needed = self.fewest_ranks(chosen)
        return SearchResult(
            baseline=baseline,
            chosen=chosen,
            considered=tuple(self.considered.values()),
            min_nodes=nodes_needed,
        )

    # ---- micro-batches and checkpointing for one combination ---------------------------------
    def best_for(self, combo: tuple[TechniqueConfig, ...]) -> list[Candidate]:
        """The largest fitting micro-batch for each way of checkpointing `combo`."""
        if not self.can_fit(combo):
            return []
        found = []
        above = 0
        for option in self.checkpoint_options(combo):
            best = self.largest_fitting_micro(combo, option, above)
            if best is not None:
                found.append(best)
                # A simpler way already fits at this micro-batch: the same or more
                # micro-batches with more recompute could only be slower.
                above = best.settings.micro_batch_size
        return found

    def can_fit(self, combo) -> bool:
        """Whether `combo` fits at its smallest micro-batch, as is or with every unit
        checkpointed (or in segments): the lowest peaks it can reach. A combination that
        fits neither way is left before the bisections, which would each try it at
        several micro-batch sizes for nothing."""
        sizes = [
            m
            for m in micro_sizes(self.batch)
            if m >= self.min_micro and self.compatible(self.with_micro(combo, m, None))
        ]
        if not sizes:
            return False
        micro = min(sizes)
        options = [None]
        if self.checkpointing.supports(self.ctx) is None:
            options += [
                option(micro)
                for option in list(self.checkpointing.options(self.ctx, lambda _m: None))[2:]
            ]
        for checkpoint in options:
            configs = self.with_micro(combo, micro, checkpoint)
            if self.compatible(configs) and self.evaluate(configs).fits:
                return True
        return False

    def checkpoint_options(self, combo) -> Iterator:
        if self.checkpointing.supports(self.ctx) is not None:
            yield lambda _micro: None
            return

        def select(micro: int) -> CheckpointConfig | None:
            return self.select_units(combo, micro)

        yield from self.checkpointing.options(self.ctx, select)

    def with_micro(self, combo, micro: int, checkpoint: CheckpointConfig | None):
        configs = list(combo)
        if micro < self.batch:
            configs.append(MicroBatchConfig(micro_batch_size=micro))
        if checkpoint is not None:
            configs.append(checkpoint)
        return tuple(in_order(configs))

    def largest_fitting_micro(self, combo, option, above: int) -> Candidate | None:
        sizes = [
            m
            for m in micro_sizes(self.batch)
            if m >= self.min_micro
            and m > above
            # A technique may forbid accumulation (the update inside backward).
            and self.compatible(self.with_micro(combo, m, None))
        ]
        lo, hi, best = 0, len(sizes) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            micro = sizes[mid]
            configs = self.with_micro(combo, micro, option(micro))
            candidate = self.evaluate(configs) if self.compatible(configs) else None
            if candidate is not None and candidate.fits:
                best, hi = candidate, mid - 1
            else:
                lo = mid + 1
        return best

    def select_units(self, combo, micro: int) -> CheckpointConfig | None:
        """Budget-driven selection: the cheapest units whose savings cover what is missing."""
        facts = self.ctx.facts
        plain = self.with_micro(combo, micro, None)
        if not self.compatible(plain):
            return None
        need = self.evaluate(plain).predicted_peak_bytes - self.room.usable_bytes
        if need <= 0:
            return None
        fake = tuple(c for c in PlanSettings(self.batch, plain).configs if of(c).on_fake)
        rows = self.runs.profile(fake).modules
        inputs = {u: int(b * micro) for u, b in facts.unit_input_bytes_per_sample.items()}
        times = self.ctx.measurements.time_model.unit_forward_per_sample_s
        forward = {u: times.get(u, 1e-6) * micro for u in facts.units}
        chosen: list[str] = []
        for _ in range(4):  # savings are approximate: ask again with what is still missing
            chosen = units_for(rows, list(facts.units), inputs, forward, need)
            if not chosen:
                return None
            config = CheckpointConfig(modules=tuple(chosen))
            missing = (
                self.evaluate(self.with_micro(combo, micro, config)).predicted_peak_bytes
                - self.room.usable_bytes
            )
            if missing <= 0 or len(chosen) == len(facts.units):
                break
            need += missing
        return CheckpointConfig(modules=tuple(chosen))

    # ---- the honest end ----------------------------------------------------------------------
    def fewest_ranks(self, chosen: Candidate | None) -> int | None:
        """The fewest ranks with which some considered combination (or `chosen`) would fit."""
        pool = [chosen] if chosen is not None else list(self.considered.values())
        best = None
        for candidate in pool:
            base = [c for c in candidate.settings.configs if c.technique != "sharding"]
            if not self.compatible_with_sharding(base):
                continue
            lo, hi = 2, MAX_RANKS
            if not self._fits_on(base, hi):
                continue
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if self._fits_on(base, mid) else (mid + 1, hi)
            best = lo if best is None else min(best, lo)
        return best

    def compatible_with_sharding(self, configs) -> bool:
        by_name = {c.technique: c for c in configs}
        probe = ShardingConfig(nodes=2)
        return of(probe).conflicts(probe, by_name, self.ctx) is None

    def _fits_on(self, configs, ranks: int) -> bool:
        settings = PlanSettings(self.batch, (*configs, ShardingConfig(nodes=ranks)))
        prediction = self.predict(settings)
        return self.room.fits(max(prediction.peak_bytes, prediction.process_peak_bytes))


def fastest(candidates: Sequence[Candidate]) -> Candidate | None:
    """The fastest fitting candidate, preferring the simpler of near-equal ones."""
    fitting = [c for c in candidates if c is not None and c.fits]
    if not fitting:
        return None
    quickest = min(c.predicted_step_s for c in fitting)
    close = [c for c in fitting if c.predicted_step_s <= quickest * (1 + TIE_TOLERANCE) + 1e-12]
    return min(
        close,
        key=lambda c: (
            c.settings.accumulation_steps,
            len(c.settings.checkpointed),
            len(c.settings.configs),
            c.predicted_step_s,
        ),
    )
