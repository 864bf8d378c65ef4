"""Planning: measure once, search the techniques' combinations, compose the plan.

plan()  =  gather (measurements, in one place)  ->  search (pure)  ->  notes  ->  Plan
"""

from __future__ import annotations

from collections.abc import Iterable

from memfit.budget import Budget
from memfit.errors import PlanError
from memfit.optim import optimizer_label
from memfit.planning.inputs import (
    MEASURED_STAGES,
    FakeRuns,
    PlanContext,
    PlanRequest,
    gather,
    measure_more,
)
from memfit.planning.notes import compose_notes
from memfit.planning.search import SearchResult, evaluate, search
from memfit.planning.types import Candidate, Plan, PlanSettings
from memfit.techniques.base import LOSSY, SLOW, TechniqueConfig
from memfit.techniques.registry import of
from memfit.timing import StepTimeModel
from memfit.workload import Workload, load_workload

__all__ = [
    "Candidate",
    "Plan",
    "PlanContext",
    "PlanRequest",
    "PlanSettings",
    "build_plan",
    "plan",
    "predict",
]


def plan(
    workload: Workload | str,
    budget: Budget | str,
    batch_size: int | None = None,
    exact: bool = False,
    *,
    optimizer: str | None = None,
    device: str = "cpu",
    reserve_bytes: int | None = None,
    allow_offload: bool = True,
    allow: Iterable[str] = (),
    state_dir: str | None = None,
    nodes: int = 1,
    time_model: StepTimeModel | None = None,
) -> Plan:
    """Find the fastest combination of techniques whose predicted peak fits `budget`.

    `optimizer` names one (`adam`, `adamw`, `sgd`); None uses the workload's own
    (`Workload.build_optimizer`) or Adam. With `nodes` > 1 memory is per rank of a
    sharded (FSDP) run and `batch_size` is each rank's batch. `allow` names techniques
    that change what is learned, offered only when named. `time_model` replaces the
    timed one (to plan again with the same measurements).

        >>> from memfit import zoo
        >>> p = plan(zoo.get("mlp", depth=4, width=256, inputs=256), "12MB", batch_size=2048,
        ...          reserve_bytes=0)
        >>> p.fits and p.predicted_peak_bytes <= 12e6 < p.baseline_peak_bytes
        True
    """
    from memfit import progress

    workload = load_workload(workload)
    budget = Budget.parse(budget)
    if nodes < 1:
        raise PlanError("nodes must be at least 1")
    batch = batch_size or workload.default_batch_size
    if batch < 1:
        raise PlanError("the batch size must be at least 1")
    allow = _checked_allow(allow)
    room = budget.room(reserve_bytes)
    if room.usable_bytes <= 0:
        raise PlanError(
            f"{budget} leaves nothing for training after the runtime's own "
            f"{room.reserve_bytes:,} bytes; give a larger budget (or --reserve)"
        )
    request = PlanRequest(
        batch_size=batch,
        optimizer=optimizer,
        device=device,
        room=room,
        exact=exact,
        allow=frozenset(allow),
        allow_offload=allow_offload,
        nodes=nodes,
    )
    ctx = gather(workload, request, time_model=time_model)
    runs = FakeRuns(workload, request)
    with progress.task("planning: searching") as bar:
        result = search(ctx, runs, bar)
        for stage in MEASURED_STAGES:
            if result.chosen is not None:
                break
            # Exact techniques were not enough: measure what the next kind needs and search
            # again (the fake-tensor runs already made are reused).
            more = measure_more(ctx, stage, state_dir=state_dir)
            if more is not ctx:
                ctx = more
                result = search(ctx, runs, bar)
    return build_plan(ctx, result, workload, state_dir)


def _checked_allow(allow: Iterable[str]) -> frozenset[str]:
    """The names in `allow`, each a technique that changes what is learned."""
    from memfit.techniques.base import LEARNS
    from memfit.techniques.registry import TECHNIQUES

    if isinstance(allow, str):
        allow = [allow]
    learns = [t.name for t in TECHNIQUES if t.kind == LEARNS]
    for name in allow:
        if name not in learns:
            raise PlanError(
                f"--allow {name!r} is not a technique that changes what is learned; "
                f"memfit has: {', '.join(learns)}"
            )
    return frozenset(allow)


def predict(
    workload: Workload | str,
    configs: Iterable[TechniqueConfig],
    budget: Budget | str = "1TB",
    batch_size: int | None = None,
    *,
    optimizer: str | None = None,
    device: str = "cpu",
    reserve_bytes: int | None = 0,
    nodes: int = 1,
    time_model: StepTimeModel | None = None,
) -> Candidate:
    """The planner's prediction for one combination of technique settings, chosen by hand.

    The same fake-tensor run and effects the search uses, for the settings given (they
    need not fit, or be what the planner would choose).

        >>> from memfit import zoo
        >>> from memfit.techniques.accumulation import MicroBatchConfig
        >>> w = zoo.get("mlp", depth=4, width=256, inputs=256)
        >>> whole = predict(w, [], batch_size=2048)
        >>> micro = predict(w, [MicroBatchConfig(micro_batch_size=256)], batch_size=2048)
        >>> micro.predicted_peak_bytes < whole.predicted_peak_bytes
        True
    """
    workload = load_workload(workload)
    budget = Budget.parse(budget)
    request = PlanRequest(
        batch_size=batch_size or workload.default_batch_size,
        optimizer=optimizer,
        device=device,
        room=budget.room(reserve_bytes),
        nodes=nodes,
    )
    configs = tuple(configs)
    if time_model is None:
        time_model = StepTimeModel(
            fixed_s=0.0, per_sample_s=0.0, optimizer_s=0.0, source="not needed"
        )
    ctx = gather(workload, request, time_model=time_model, calibrate=True)
    kinds = {of(c).kind for c in configs}
    if kinds & {LOSSY}:
        ctx = measure_more(ctx, "lossy")
    if kinds & {SLOW}:
        ctx = measure_more(ctx, "slow")
    return evaluate(ctx, FakeRuns(workload, request), configs)


def build_plan(
    ctx: PlanContext, result: SearchResult, workload: Workload | None, state_dir: str | None
) -> Plan:
    """The Plan for a search result: the chosen (or closest) candidate and the notes."""
    chosen = result.chosen or min(result.considered, key=lambda c: c.predicted_peak_bytes)
    cats = chosen.prediction.categories
    numel = sum(p.numel() for p in ctx.facts.trainable_parameters)
    states = cats.get("parameters", 0) + cats.get("gradients", 0) + cats.get("optimizer", 0)
    req = ctx.request
    return Plan(
        workload=ctx.workload_name,
        budget=req.room.budget,
        room=req.room,
        batch_size=req.batch_size,
        optimizer=optimizer_label(workload, req.optimizer),
        device=req.device,
        nodes=req.nodes,
        min_nodes=result.min_nodes,
        baseline=result.baseline,
        chosen=chosen,
        alternatives=tuple(c for c in result.considered if c is not chosen),
        notes=tuple(compose_notes(ctx, result)),
        time_source=ctx.measurements.time_model.source,
        state_dir=state_dir,
        bytes_per_parameter=states / numel if numel else None,
        _workload=workload,
    )
