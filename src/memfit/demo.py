"""The demo: train a digits CNN in an eighth of the memory its training step needs.

The whole story on real data (scikit-learn's bundled 8x8 digits, nothing downloaded):

1. profile the baseline training step and see where its memory goes;
2. set a budget of one eighth of that measured peak;
3. plan the techniques that make the step fit;
4. train twice from the same initial weights on the same batches: once with plain
   PyTorch, once under the plan, tracking the first update of every epoch;
5. compare test accuracy, measured peak against the budget, and time per update,
   and draw the before/after chart.

`demo_story` does the work, prints the narrative and returns a `DemoResult` with every
number, so tests assert on numbers rather than on console text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from memfit import zoo
from memfit.budget import Budget, format_bytes
from memfit.measure.profile import profile, run_tracked_step
from memfit.measure.step import batch_tensors
from memfit.measure.tracker import MemoryTracker, TrackerResult
from memfit.memory_profile import CATEGORIES, MemoryProfile
from memfit.optim import make_optimizer
from memfit.planner import Plan, plan
from memfit.report.chart import plot_before_after
from memfit.report.plan_table import print_plan
from memfit.report.text import category_table
from memfit.workload import Workload

CHANNELS = 16
"""Half the zoo CNN's default width: the whole demo runs in well under a minute on two
cores, and activations still dominate the step."""
BATCH_SIZE = 512
"""Large enough that activations dominate the step, so an eighth is reachable exactly."""
EPOCHS = 14
"""A batch of 512 gives only 3 updates per epoch on 1347 images; BatchNorm's running
statistics (momentum 0.1) need about a dozen epochs to settle in the baseline run."""
LEARNING_RATE = 1e-2
BUDGET_DIVISOR = 8
OPTIMIZER = "adam"


@dataclass(kw_only=True)
class RunResult:
    """One training run on the digits: how well it learned and what its steps held."""

    label: str
    accuracy: float
    """Share of the test split classified correctly, BatchNorm in eval mode."""
    peak_bytes: int
    """Highest live tensor bytes over the tracked updates (the first of every epoch)."""
    categories: dict[str, int]
    """Bytes per category at the peak of the highest tracked update that kept categories."""
    update_s: float
    """Wall time of one update of a full batch, from the untracked updates."""
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(kw_only=True)
class DemoResult:
    """Every number the demo shows."""

    workload: str
    batch_size: int
    epochs: int
    budget: Budget
    baseline_profile: MemoryProfile
    plan: Plan
    plan_s: float
    baseline: RunResult
    planned: RunResult
    plot_path: Path
    seconds: float

    @property
    def budget_bytes(self) -> int:
        return self.budget.bytes

    @property
    def within_budget(self) -> bool:
        return self.planned.peak_bytes <= self.budget.bytes

    @property
    def accuracy_gap(self) -> float:
        """Planned accuracy less baseline accuracy (negative: the plan lost some)."""
        return self.planned.accuracy - self.baseline.accuracy

    @property
    def memory_ratio(self) -> float:
        """How many times less the planned step held at its peak than the baseline step."""
        return self.baseline.peak_bytes / max(self.planned.peak_bytes, 1)


def run_demo(plot_path: str = "memfit-demo.png", console: Console | None = None) -> int:
    """`memfit demo`: 0 when the planned run stayed inside its budget, 1 when it did not."""
    result = demo_story(plot_path, console)
    return 0 if result.within_budget and result.plan.fits else 1


def demo_story(
    plot_path: str | Path = "memfit-demo.png",
    console: Console | None = None,
    *,
    channels: int = CHANNELS,
    batch_size: int = BATCH_SIZE,
    epochs: int = EPOCHS,
    lr: float = LEARNING_RATE,
    seed: int = 0,
) -> DemoResult:
    """Profile, budget, plan, train both ways, compare; print the story and return its numbers."""
    console = console or Console()
    start = time.perf_counter()
    workload = zoo.get("cnn", channels=channels)
    x_train, y_train, x_test, y_test = workload.load_data()
    console.rule(f"[bold]memfit demo: train a digits CNN in 1/{BUDGET_DIVISOR} of its memory")
    console.print(f"Real data: scikit-learn's handwritten digits, {len(x_train)} training and "
                  f"{len(x_test)} test images of 8x8 pixels (bundled, nothing downloaded).\n"
                  f"Model: {workload.description}; {OPTIMIZER}, batch {batch_size}.")

    console.rule("1 · where the baseline step's memory goes")
    base = profile(workload, batch_size, OPTIMIZER, device="cpu", seed=seed)
    console.print(category_table(base, title=f"baseline training step, batch {batch_size} "
                                 f"(measured)"))
    acts = base.categories["activations"] / max(base.peak_bytes, 1)
    console.print(f"The peak ({format_bytes(base.peak_bytes)}) comes in the {base.peak_phase} "
                  f"pass, and activations are {100 * acts:.0f}% of it: exact techniques "
                  "(micro-batching, checkpointing) can cut them without changing the maths.")

    console.rule("2 · the budget")
    budget = Budget(base.peak_bytes // BUDGET_DIVISOR, "cpu", "demo",
                    f"1/{BUDGET_DIVISOR} of the baseline peak")
    console.print(f"Budget: one {_ordinal(BUDGET_DIVISOR)} of the measured peak = "
                  f"[bold]{budget.bytes:,} bytes[/bold] ({format_bytes(budget.bytes)}).\n"
                  "It is planned with reserve_bytes=0: the budget covers the training step's "
                  "tensors (parameters, gradients, optimizer state, activations, inputs), "
                  "not the Python interpreter and libraries around them.")

    console.rule("3 · the plan")
    t0 = time.perf_counter()
    the_plan = plan(workload, budget, batch_size, optimizer=OPTIMIZER, reserve_bytes=0)
    plan_s = time.perf_counter() - t0
    print_plan(the_plan, console)
    console.print(f"(planned in {plan_s:.1f} s from fake-tensor runs: nothing of the model's "
                  "size was allocated while searching)")
    if not the_plan.fits:
        console.print("[bold red]No combination fits this budget; the demo trains under the "
                      "closest one to show how far over it lands.[/bold red]")
    elif not the_plan.settings.exact:
        console.print("[yellow]No exact combination fits: the plan uses lossy techniques "
                      f"({', '.join(the_plan.techniques)}), so accuracy may move.[/yellow]")

    console.rule(f"4 · training {epochs} epochs, same initial weights, same batches")
    data = (x_train, y_train, x_test, y_test)
    with _progress(console) as bar:
        baseline = _train(workload, data, batch_size, epochs, lr, seed, bar,
                          "plain PyTorch", _plain_updates(workload))
        planned = _train(workload, data, batch_size, epochs, lr, seed, bar,
                         "memfit plan", _planned_updates(the_plan, epochs))

    console.rule("5 · before and after")
    result = DemoResult(workload=workload.name, batch_size=batch_size, epochs=epochs,
                        budget=budget, baseline_profile=base, plan=the_plan, plan_s=plan_s,
                        baseline=baseline, planned=planned, plot_path=Path(plot_path),
                        seconds=0.0)
    console.print(_comparison_table(result))
    plot_before_after(
        [(f"baseline\nbatch {batch_size}", baseline.categories),
         (f"planned\n{the_plan.settings.label()}", planned.categories)],
        plot_path, budget_bytes=budget.bytes,
        title=f"digits CNN, batch {batch_size}: memory at the step's peak")
    result.seconds = time.perf_counter() - start
    _verdict(result, console)
    return result


# ---- training ----------------------------------------------------------------------------------

Update = Callable[[Any], float]
"""One optimizer update over a batch; returns the batch's mean loss."""
TrackedUpdate = Callable[[Any, int], tuple[float, TrackerResult]]
"""A tracked update over a batch in the given epoch; returns the loss and the tracker's result."""


@dataclass
class _Updates:
    """How one run trains: build the model and optimizer, then plain or tracked updates."""

    start: Callable[[nn.Module, torch.optim.Optimizer], None]
    update: Update
    tracked: TrackedUpdate


def _plain_updates(workload: Workload) -> Callable[[], _Updates]:
    def make() -> _Updates:
        state: dict[str, Any] = {}

        def start(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            state.update(model=model, optimizer=optimizer)

        def update(batch) -> float:
            # Plain PyTorch, nothing of memfit in the loop.
            x, y = batch
            loss = workload.loss_fn(state["model"](x), y)
            loss.backward()
            state["optimizer"].step()
            state["optimizer"].zero_grad(set_to_none=True)
            return float(loss.detach())

        def tracked(batch, _epoch: int) -> tuple[float, TrackerResult]:
            # The same update under the tracker that `memfit.profile` uses.
            result, _ = run_tracked_step(workload, state["model"], state["optimizer"], batch)
            x, y = batch
            with torch.no_grad():
                loss = float(workload.loss_fn(state["model"](x), y))
            return loss, result

        return _Updates(start, update, tracked)

    return make


def _planned_updates(the_plan: Plan, epochs: int) -> Callable[[], _Updates]:
    def make() -> _Updates:
        state: dict[str, Any] = {}

        def start(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            state["step"] = the_plan.apply(model, optimizer)

        def update(batch) -> float:
            return state["step"](batch)

        def tracked(batch, epoch: int) -> tuple[float, TrackerResult]:
            step = state["step"]
            if epoch == min(1, epochs - 1):
                # Once, when optimizer state exists (as in every update after the first): a
                # tracker that keeps the categories at the peak, for the chart.
                return _tracked_planned_update(step, batch)
            # Every other epoch: `PlannedStep.measure`, memfit's own check of a planned step.
            loss, peak = step.measure(batch)
            return loss, TrackerResult(peak_bytes=peak, peak_phase="", categories={},
                                       phase_peaks={}, module_activations={},
                                       module_forward_s={})

        return _Updates(start, update, tracked)

    return make


def _tracked_planned_update(step, batch) -> tuple[float, TrackerResult]:
    """One planned update under a tracker, registered as `PlannedStep.measure` registers it,
    but returning the whole result: `measure` gives the peak only, the chart needs categories."""
    tracker = MemoryTracker(keep_timeline=False)
    tracker.register_model(step.model)
    tracker.register(_optimizer_tensors(step.optimizer), "optimizer")
    tracker.register(batch_tensors(batch), "other")

    def on_phase(phase: str) -> None:
        tracker.phase = phase

    step.on_phase = on_phase
    if type(step.optimizer).__module__.startswith("torchao"):
        # torch.compile refuses to run under a dispatch mode: the low-bit step runs paused
        # and the state it created is registered afterwards, as `measure` does.
        @contextmanager
        def paused_step() -> Iterator[None]:
            with tracker.paused():
                yield
            tracker.register(_optimizer_tensors(step.optimizer), "optimizer")

        step.around_optimizer_step = paused_step
    try:
        with tracker.track(step.model):
            loss = step(batch)
    finally:
        step.on_phase = None
        step.around_optimizer_step = None
    return loss, tracker.result()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in getattr(optimizer, "state", {}).values():
        if isinstance(state, dict):
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    yield value


def _train(workload: Workload, data, batch_size: int, epochs: int, lr: float, seed: int,
           bar: Progress, label: str, make_updates: Callable[[], _Updates]) -> RunResult:
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = workload.build_model().train()
    optimizer = make_optimizer(OPTIMIZER, model.parameters(), lr)
    updates = make_updates()
    updates.start(model, optimizer)
    peak, categories = 0, dict.fromkeys(CATEGORIES, 0)
    untracked_s, untracked_samples = 0.0, 0
    epoch_losses: list[float] = []
    steps_per_epoch = -(-len(x_train) // batch_size)
    task = bar.add_task(label, total=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for i, batch in enumerate(_batches(x_train, y_train, batch_size, seed + epoch)):
            if i == 0:
                # The first update of every epoch runs tracked: its peak is the run's evidence.
                loss, tracked = updates.tracked(batch, epoch)
                peak = max(peak, tracked.peak_bytes)
                if tracked.categories and tracked.peak_bytes >= sum(categories.values()):
                    categories = dict(tracked.categories)
            else:
                t0 = time.perf_counter()
                loss = updates.update(batch)
                untracked_s += time.perf_counter() - t0
                untracked_samples += len(batch[1])
            losses.append(loss * len(batch[1]))
            bar.update(task, advance=1, description=(
                f"{label:<14} epoch {epoch + 1:>2}/{epochs} · loss {loss:.3f} · "
                f"peak {format_bytes(peak)}"))
        epoch_losses.append(sum(losses) / len(x_train))
    seconds = time.perf_counter() - start
    return RunResult(label=label, accuracy=_accuracy(model, x_test, y_test), peak_bytes=peak,
                     categories=categories,
                     update_s=untracked_s / max(untracked_samples, 1) * batch_size,
                     epoch_losses=epoch_losses, seconds=seconds)


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    # Seeded per epoch, so both runs see exactly the same batches in the same order.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


# ---- the telling ---------------------------------------------------------------------------------


def _comparison_table(r: DemoResult) -> Table:
    b, p = r.baseline, r.planned
    table = Table(title=f"{r.workload} on digits · batch {r.batch_size} · {r.epochs} epochs · "
                  f"budget {r.budget.bytes:,} bytes")
    table.add_column("")
    table.add_column("plain PyTorch", justify="right")
    table.add_column(f"memfit plan ({r.plan.settings.label()})", justify="right")
    table.add_row("test accuracy", f"{100 * b.accuracy:.1f}%", f"{100 * p.accuracy:.1f}%")
    table.add_row("final epoch loss", f"{b.epoch_losses[-1]:.4f}", f"{p.epoch_losses[-1]:.4f}")
    table.add_row("measured peak (live tensors)", f"{b.peak_bytes:,} B", f"{p.peak_bytes:,} B")
    table.add_row("", format_bytes(b.peak_bytes), format_bytes(p.peak_bytes))
    table.add_row("budget", "", f"{r.budget.bytes:,} B")
    table.add_row("predicted peak", format_bytes(r.plan.baseline_peak_bytes),
                  format_bytes(r.plan.predicted_peak_bytes))
    inside = p.peak_bytes <= r.budget.bytes
    table.add_row("inside the budget", "no" if b.peak_bytes > r.budget.bytes else "yes",
                  "[green]yes[/green]" if inside else "[red]no[/red]")
    table.add_row(f"time per update of {r.batch_size}", f"{1000 * b.update_s:.1f} ms",
                  f"{1000 * p.update_s:.1f} ms "
                  f"({100 * (p.update_s / max(b.update_s, 1e-9) - 1):+.0f}%)")
    table.add_row("predicted time overhead", "", f"{100 * r.plan.predicted_time_overhead:+.0f}%")
    table.add_row("training time", f"{b.seconds:.1f} s", f"{p.seconds:.1f} s")
    return table


def _verdict(r: DemoResult, console: Console) -> None:
    p, b = r.planned, r.baseline
    inside = "inside" if r.within_budget else "[red]over[/red]"
    console.print(
        f"The planned run held at most {p.peak_bytes:,} bytes of live tensors, {inside} the "
        f"{r.budget.bytes:,}-byte budget ({r.memory_ratio:.1f}x less than plain PyTorch's "
        f"{b.peak_bytes:,}), and reached {100 * p.accuracy:.1f}% test accuracy against "
        f"{100 * b.accuracy:.1f}% ({100 * r.accuracy_gap:+.1f} points); each update took "
        f"{p.update_s / max(b.update_s, 1e-9):.1f}x as long.")
    if r.plan.settings.accumulation_steps > 1:
        # Micro-batching is exact for the gradient sums but not for BatchNorm, which
        # normalises each micro-batch by its own statistics: say so, whatever the gap.
        console.print(("The accuracies differ" if abs(r.accuracy_gap) >= 0.0005 else
                       "The accuracies could have differed") + " slightly: BatchNorm computes "
                      f"its statistics on micro-batches of {r.plan.settings.micro_batch_size}, "
                      f"not on the {r.batch_size}-sample batch; the gradient is otherwise the "
                      "same sum.")
    if r.plan.settings.checkpointed:
        # The tracker labels a tensor "activations" when autograd saves it; checkpointing
        # saves through its own hooks and recomputes in backward, so those bytes show as
        # "other" (temporaries). The total is right; the split between the two is not.
        console.print("With checkpointing, the segment inputs it keeps and the activations it "
                      "recomputes during backward are counted as [italic]other[/italic] in the "
                      "planned bar, not as activations; the total is the same either way.")
    console.print(f"Chart: {r.plot_path} · whole demo {r.seconds:.0f} s")


def _ordinal(n: int) -> str:
    return {2: "half", 4: "quarter", 8: "eighth", 16: "sixteenth"}.get(n, f"1/{n}")
