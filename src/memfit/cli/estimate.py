"""`memfit estimate MODEL`: a step's memory on fake tensors, and whether it fits a budget."""

from __future__ import annotations

from memfit.cli._common import add_report_args, print_json, said_report
from memfit.cli._model_args import add_model_args, positive_int, resolve_workload


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "estimate", help="estimate a training step's memory without allocating it"
    )
    add_model_args(parser, optimizers=("sgd", "adam", "adamw", "adam8bit", "adam4bit"))
    parser.add_argument(
        "--budget",
        default=None,
        help="a size (12GB, 16GiB) or preset (colab, t4): say whether it fits, "
        "how much is missing, and the largest batch that fits",
    )
    parser.add_argument("--device", default="cpu", help="device whose kernels to assume (cpu)")
    parser.add_argument(
        "--nodes",
        type=positive_int,
        default=1,
        help="ranks sharing the model states (FSDP); memory is per rank and "
        "--batch-size is each rank's batch",
    )
    add_report_args(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit import progress
    from memfit.budget import Budget
    from memfit.estimator import FitVerdict, estimate, max_batch_size
    from memfit.estimator.verdict import runtime_reserve

    # An empty --budget is a mistake (a shell variable that was not set), not "no budget".
    budget = Budget.parse(args.budget) if args.budget is not None else None
    workload = resolve_workload(args)
    with progress.task(f"estimating {workload.name} on fake tensors"):
        result = estimate(
            workload, args.batch_size, args.optimizer, precision=args.precision, device=args.device
        )
    if args.nodes > 1:
        from memfit.estimator.sharded import shard_profile

        result = shard_profile(result, args.nodes, workload)
    verdict = None
    if budget is not None:
        peak_of = None
        if args.nodes > 1:
            from memfit.estimator.sharded import shard_profile

            def peak_of(b):
                return shard_profile(
                    estimate(
                        workload, b, args.optimizer, precision=args.precision, device=args.device
                    ),
                    args.nodes,
                    workload,
                )

        with progress.task("finding the largest batch that fits"):
            batch_fit = max_batch_size(
                workload,
                budget,
                args.optimizer,
                precision=args.precision,
                device=args.device,
                peak_of=peak_of,
            )
        verdict = FitVerdict(
            result.peak_bytes,
            runtime_reserve(budget),
            budget,
            batch_fit.max_batch_size,
            batch_fit.max_batch_size_pow2,
        )
    if args.plot:
        from memfit.report.chart import plot_profiles

        plot_profiles(
            [result],
            args.plot,
            title="Estimated training memory at the peak",
            budget_bytes=budget.bytes if budget else None,
        )
    data = result.to_dict(timeline=True)
    data["nodes"] = args.nodes
    if verdict is not None:
        data.update(verdict.to_dict())
    if args.report:
        from memfit.report.html import write_report

        write_report(data, args.report, top=args.top)
    if args.json:
        print_json(data)
        if args.report:
            said_report(args, args.report)
        return 0
    from rich.console import Console

    from memfit.report.text import print_profile

    console = Console()
    print_profile(result, console, top=args.top)
    if verdict is not None:
        console.print(verdict.line())
    if args.plot:
        console.print(f"chart written to {args.plot}")
    if args.report:
        said_report(args, args.report)
    return 0
