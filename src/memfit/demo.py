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

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from memfit import zoo
from memfit.budget import Budget, format_bytes
from memfit.errors import MeasureError
from memfit.measure.profile import run_tracked_step
from memfit.measure.step import TrainingStep
from memfit.measure.tracker import TrackerResult
from memfit.memory_profile import CATEGORIES, MemoryProfile, ModuleRow
from memfit.optim import make_optimizer
from memfit.planning import Plan, plan
from memfit.report.chart import plot_before_after
from memfit.report.plan_table import print_plan
from memfit.report.text import category_table
from memfit.train import training_progress
from memfit.workload import Workload

CHANNELS = 32
"""The zoo CNN's default width."""
BATCH_SIZE = 512
"""Large enough that activations dominate the step, so an eighth is reachable exactly."""
EPOCHS = 20
"""A batch of 512 gives only 3 updates per epoch on 1347 images; the baseline's BatchNorm
running statistics (momentum 0.1) lag its weights until about epoch 14."""
THREADS = 1
"""Convolutions on 8x8 images are too small to share: on two busy cores, two OpenMP
threads made one update of 512 take 1000 ms where one thread took 27 ms."""
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
    """Wall time of one update of a full batch: the median per-sample time of the untracked
    updates, times the batch size."""
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
        return self.plan.room.within(self.planned.peak_bytes)

    @property
    def accuracy_gap(self) -> float:
        """Planned accuracy less baseline accuracy (negative: the plan lost some)."""
        return self.planned.accuracy - self.baseline.accuracy

    @property
    def memory_ratio(self) -> float:
        """How many times less the planned step held at its peak than the baseline step."""
        return self.baseline.peak_bytes / max(self.planned.peak_bytes, 1)


def run_demo(
    plot_path: str = "memfit-demo.png",
    console: Console | None = None,
    report_path: str | None = "memfit-demo.html",
) -> int:
    """`memfit demo`: 0 when the planned run stayed inside its budget, 1 when it did not."""
    result = demo_story(plot_path, console, report_path=report_path)
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
    report_path: str | Path | None = None,
) -> DemoResult:
    """Profile, budget, plan, train both ways, compare; print the story and return its numbers.

    With `report_path`, the HTML report of the plan (measured peaks included) is written too.
    """
    console = console or Console()
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        result = _story(Path(plot_path), console, channels, batch_size, epochs, lr, seed)
    finally:
        torch.set_num_threads(threads)
    if report_path is not None:
        from memfit.report.html import write_plan_report

        measured = {
            "measured_peak_bytes": result.planned.peak_bytes,
            "measured_categories": result.planned.categories,
        }
        path = write_plan_report(
            {**result.plan.to_dict(), **measured}, report_path, baseline=result.baseline_profile
        )
        console.print(f"Report: {path} (open it in a browser; it needs no network)")
    return result


def _story(
    plot_path: Path,
    console: Console,
    channels: int,
    batch_size: int,
    epochs: int,
    lr: float,
    seed: int,
) -> DemoResult:
    start = time.perf_counter()
    workload = zoo.get("cnn", channels=channels)
    x_train, y_train, x_test, y_test = workload.load_data()
    console.rule(f"[bold]memfit demo: train a digits CNN in 1/{BUDGET_DIVISOR} of its memory")
    console.print(
        f"Real data: scikit-learn's handwritten digits, {len(x_train)} training and "
        f"{len(x_test)} test images of 8x8 pixels (bundled, nothing downloaded).\n"
        f"Model: {workload.description}; {OPTIMIZER}, batch {batch_size}; "
        f"{THREADS} CPU thread (the convolutions are too small to share)."
    )

    console.rule("1 · where the baseline step's memory goes")
    base = _profile_elsewhere(channels, batch_size, seed)
    console.print(
        category_table(base, title=f"baseline training step, batch {batch_size} (measured)")
    )
    acts = base.categories["activations"] / max(base.peak_bytes, 1)
    console.print(
        f"The peak ({format_bytes(base.peak_bytes)}) comes in the {base.peak_phase} "
        f"pass, and activations are {100 * acts:.0f}% of it: exact techniques "
        "(micro-batching, checkpointing) can cut them without changing the maths."
    )

    console.rule("2 · the budget")
    budget = Budget(
        base.peak_bytes // BUDGET_DIVISOR, "cpu", "demo", f"1/{BUDGET_DIVISOR} of the baseline peak"
    )
    console.print(
        f"Budget: one {_ordinal(BUDGET_DIVISOR)} of the measured peak = "
        f"[bold]{budget.bytes:,} bytes[/bold] ({format_bytes(budget.bytes)}).\n"
        "It is planned with reserve_bytes=0: the budget covers the training step's "
        "tensors (parameters, gradients, optimizer state, activations, inputs), "
        "not the Python interpreter and libraries around them."
    )

    console.rule("3 · the plan")
    t0 = time.perf_counter()
    the_plan = plan(workload, budget, batch_size, optimizer=OPTIMIZER, reserve_bytes=0)
    plan_s = time.perf_counter() - t0
    print_plan(the_plan, console)
    console.print(
        f"(planned in {plan_s:.1f} s from fake-tensor runs: nothing of the model's "
        "size was allocated while searching)"
    )
    if not the_plan.fits:
        console.print(
            "[bold red]No combination fits this budget; the demo trains under the "
            "closest one to show how far over it lands.[/bold red]"
        )
    elif not the_plan.settings.exact:
        console.print(
            "[yellow]No exact combination fits: the plan uses lossy techniques "
            f"({', '.join(the_plan.techniques)}), so accuracy may move.[/yellow]"
        )

    console.rule(f"4 · training {epochs} epochs, same initial weights, same batches")
    baseline, planned = _train_both(
        workload,
        the_plan,
        (x_train, y_train, x_test, y_test),
        batch_size,
        epochs,
        lr,
        seed,
        console,
    )

    console.rule("5 · before and after")
    result = DemoResult(
        workload=workload.name,
        batch_size=batch_size,
        epochs=epochs,
        budget=budget,
        baseline_profile=base,
        plan=the_plan,
        plan_s=plan_s,
        baseline=baseline,
        planned=planned,
        plot_path=plot_path,
        seconds=0.0,
    )
    console.print(_comparison_table(result))
    plot_before_after(
        [
            (f"baseline\nbatch {batch_size}", baseline.categories),
            (f"planned\n{the_plan.settings.label()}", planned.categories),
        ],
        plot_path,
        budget_bytes=budget.bytes,
        title=f"digits CNN, batch {batch_size}: memory at the step's peak",
    )
    result.seconds = time.perf_counter() - start
    _verdict(result, console)
    return result


def _profile_elsewhere(channels: int, batch_size: int, seed: int) -> MemoryProfile:
    """`memfit.profile` of the baseline step, run in a child Python process.

    `profile` sets glibc's mmap threshold low for repeatable RSS readings, and that setting
    lasts for the process: every later allocation over 1 MiB becomes an mmap with fresh page
    faults. Here that slowed the plain batch-512 update by about 45% (62 -> 90 ms) and left
    the 32-sample micro-batches alone, which would flatter the plan's time. The child keeps
    the setting to itself.
    """
    code = (
        "import json, sys; from memfit import zoo; from memfit.measure.profile import "
        "profile; c, b, s, o = sys.argv[1:5]; print(json.dumps(profile(zoo.get('cnn', "
        "channels=int(c)), int(b), o, device='cpu', seed=int(s)).to_dict(timeline=True)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(channels), str(batch_size), str(seed), OPTIMIZER],
        capture_output=True,
        text=True,
        check=False,
        # The child imports memfit from wherever this process did.
        env={
            **os.environ,
            "OMP_NUM_THREADS": str(THREADS),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        },
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise MeasureError(f"profiling the baseline step failed: {tail[0]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["modules"] = [ModuleRow(**row) for row in data["modules"]]
    return MemoryProfile(**data)


# ---- training ----------------------------------------------------------------------------------


class _Run:
    """One training run: its model and optimizer, its updates, and what they measured."""

    def __init__(self, label: str, workload: Workload, lr: float, seed: int):
        self.label = label
        self.workload = workload
        # The same seed before building: both runs start from the same weights.
        torch.manual_seed(seed)
        self.model = workload.build_model().train()
        self.optimizer = make_optimizer(OPTIMIZER, self.model.parameters(), lr)
        self.peak_bytes = 0
        self.categories = dict.fromkeys(CATEGORIES, 0)
        self.untracked_s_per_sample: list[float] = []
        self.epoch_losses: list[float] = []
        self.seconds = 0.0

    def update(self, batch) -> float:
        """One optimizer update over `batch`; returns its mean loss."""
        raise NotImplementedError

    def tracked(self, batch, epoch: int) -> tuple[float, TrackerResult]:
        """The same update under a tracker."""
        raise NotImplementedError

    def epoch(self, epoch: int, batches: list, on_update: Callable[[float], None]) -> None:
        start = time.perf_counter()
        loss_sum, samples = 0.0, 0
        for i, batch in enumerate(batches):
            if i == 0:
                # The first update of every epoch runs tracked: its peak is the run's evidence.
                loss, result = self.tracked(batch, epoch)
                self.peak_bytes = max(self.peak_bytes, result.peak_bytes)
                if result.categories and result.peak_bytes >= sum(self.categories.values()):
                    self.categories = dict(result.categories)
            else:
                t0 = time.perf_counter()
                loss = self.update(batch)
                self.untracked_s_per_sample.append((time.perf_counter() - t0) / len(batch[1]))
            loss_sum += loss * len(batch[1])
            samples += len(batch[1])
            on_update(loss)
        self.epoch_losses.append(loss_sum / samples)
        self.seconds += time.perf_counter() - start

    def result(self, x_test: torch.Tensor, y_test: torch.Tensor, batch_size: int) -> RunResult:
        return RunResult(
            label=self.label,
            accuracy=_accuracy(self.model, x_test, y_test),
            peak_bytes=self.peak_bytes,
            categories=self.categories,
            # The median: a burst of load elsewhere spoils one update, not all.
            update_s=statistics.median(self.untracked_s_per_sample or [0.0]) * batch_size,
            epoch_losses=self.epoch_losses,
            seconds=self.seconds,
        )


class _PlainRun(_Run):
    """Plain PyTorch: memfit's one training step with no technique is forward, backward,
    optimizer step and zero_grad, as in any loop; the tracker watches tracked updates."""

    def __init__(self, label: str, workload: Workload, lr: float, seed: int):
        super().__init__(label, workload, lr, seed)
        self.step = TrainingStep.for_workload(workload, self.model, self.optimizer)

    def update(self, batch) -> float:
        return float(self.step(batch))

    def tracked(self, batch, epoch: int) -> tuple[float, TrackerResult]:
        # The same update under the tracker that `memfit.profile` uses.
        x, y = batch
        with torch.no_grad():
            loss = float(self.workload.loss_fn(self.model(x), y))
        result, _ = run_tracked_step(None, self.model, self.optimizer, batch, step=self.step)
        return loss, result


class _PlannedRun(_Run):
    """The same model and optimizer changed by `plan.apply`; updates are `PlannedStep`s."""

    def __init__(
        self, label: str, workload: Workload, lr: float, seed: int, the_plan: Plan, epochs: int
    ):
        super().__init__(label, workload, lr, seed)
        self.step = the_plan.apply(self.model, self.optimizer)
        # Once, when optimizer state exists (as in every update after the first).
        self.categories_epoch = min(1, epochs - 1)

    def update(self, batch) -> float:
        return self.step(batch)

    def tracked(self, batch, epoch: int) -> tuple[float, TrackerResult]:
        if epoch == self.categories_epoch:
            return self.step.measure_result(batch)
        # Every other epoch: `PlannedStep.measure`, memfit's own check of a planned step.
        loss, peak = self.step.measure(batch)
        return loss, TrackerResult(
            peak_bytes=peak,
            peak_phase="",
            categories={},
            phase_peaks={},
            module_activations={},
            module_forward_s={},
        )


def _train_both(
    workload: Workload,
    the_plan: Plan,
    data,
    batch_size: int,
    epochs: int,
    lr: float,
    seed: int,
    console: Console,
) -> tuple[RunResult, RunResult]:
    """Train the plain and the planned run epoch by epoch, in turns, on the same batches.

    Taking turns keeps the timing comparison fair on a shared machine: whatever else runs
    there slows both runs alike instead of whichever happened to go second.
    """
    x_train, y_train, x_test, y_test = data
    runs = [
        _PlainRun("plain PyTorch", workload, lr, seed),
        _PlannedRun("memfit plan", workload, lr, seed, the_plan, epochs),
    ]
    steps_per_epoch = -(-len(x_train) // batch_size)
    with training_progress(console) as bar:
        tasks = [bar.add_task(run.label, total=epochs * steps_per_epoch) for run in runs]
        for epoch in range(epochs):
            batches = list(_batches(x_train, y_train, batch_size, seed + epoch))
            # Alternate who goes first, so neither always meets a warm cache.
            order = list(zip(runs, tasks, strict=True))
            for run, task in order if epoch % 2 == 0 else reversed(order):

                def on_update(loss: float, run: _Run = run, task=task, epoch: int = epoch) -> None:
                    bar.update(
                        task,
                        advance=1,
                        description=(
                            f"{run.label:<14} epoch {epoch + 1:>2}/{epochs} · loss {loss:.3f} · "
                            f"peak {format_bytes(run.peak_bytes)}"
                        ),
                    )

                run.epoch(epoch, batches, on_update)
    plain, planned = (run.result(x_test, y_test, batch_size) for run in runs)
    return plain, planned


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    # Seeded per epoch, so both runs see exactly the same batches in the same order.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


# ---- the telling ---------------------------------------------------------------------------------


def _comparison_table(r: DemoResult) -> Table:
    b, p = r.baseline, r.planned
    table = Table(
        title=f"{r.workload} on digits · batch {r.batch_size} · {r.epochs} epochs · "
        f"budget {r.budget.bytes:,} bytes"
    )
    table.add_column("")
    table.add_column("plain PyTorch", justify="right")
    table.add_column(f"memfit plan ({r.plan.settings.label()})", justify="right")
    table.add_row("test accuracy", f"{100 * b.accuracy:.1f}%", f"{100 * p.accuracy:.1f}%")
    table.add_row("final epoch loss", f"{b.epoch_losses[-1]:.4f}", f"{p.epoch_losses[-1]:.4f}")
    table.add_row("measured peak (live tensors)", f"{b.peak_bytes:,} B", f"{p.peak_bytes:,} B")
    table.add_row("", format_bytes(b.peak_bytes), format_bytes(p.peak_bytes))
    table.add_row("budget", "", f"{r.budget.bytes:,} B")
    table.add_row(
        "predicted peak",
        format_bytes(r.plan.baseline_peak_bytes),
        format_bytes(r.plan.predicted_peak_bytes),
    )
    inside = r.within_budget
    table.add_row(
        "inside the budget",
        "no" if b.peak_bytes > r.budget.bytes else "yes",
        "[green]yes[/green]" if inside else "[red]no[/red]",
    )
    table.add_row(
        f"time per update of {r.batch_size}",
        f"{1000 * b.update_s:.1f} ms",
        f"{1000 * p.update_s:.1f} ms ({100 * (p.update_s / max(b.update_s, 1e-9) - 1):+.0f}%)",
    )
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
        f"{100 * b.accuracy:.1f}% ({100 * r.accuracy_gap:+.1f} points); an update took "
        f"{p.update_s / max(b.update_s, 1e-9):.2f}x plain PyTorch's time."
    )
    if r.plan.settings.accumulation_steps > 1:
        # Micro-batching is exact for the gradient sums but not for BatchNorm, which
        # normalises each micro-batch by its own statistics: say so, whatever the gap.
        console.print(
            (
                "The accuracies differ"
                if abs(r.accuracy_gap) >= 0.0005
                else "The accuracies could have differed"
            )
            + " slightly: BatchNorm computes "
            f"its statistics on micro-batches of {r.plan.settings.micro_batch_size}, "
            f"not on the {r.batch_size}-sample batch; the gradient is otherwise the "
            "same sum."
        )
    if r.plan.settings.checkpointed:
        # The tracker labels a tensor "activations" when autograd saves it; checkpointing
        # saves through its own hooks and recomputes in backward, so those bytes show as
        # "other" (temporaries). The total is right; the split between the two is not.
        console.print(
            "With checkpointing, the segment inputs it keeps and the activations it "
            "recomputes during backward are counted as [italic]other[/italic] in the "
            "planned bar, not as activations; the total is the same either way."
        )
    console.print(f"Chart: {r.plot_path} · whole demo {r.seconds:.0f} s")


def _ordinal(n: int) -> str:
    return {2: "half", 4: "quarter", 8: "eighth", 16: "sixteenth"}.get(n, f"1/{n}")
