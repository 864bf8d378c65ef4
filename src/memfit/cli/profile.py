"""`memfit profile MODEL`: measure a real training step."""

from __future__ import annotations

from memfit.cli._common import add_report_args, print_json, said_report
from memfit.cli._model_args import add_model_args, resolve_workload


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "profile",
        help="measure where a real training step's memory goes",
        description="Run a warm-up step, then one measured training step (forward, backward, "
        "optimizer step), and report the peak by category and by module. The step is first "
        "estimated on fake tensors: a step larger than the memory available is refused.",
    )
    add_model_args(parser)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="run even when the estimated step is larger than the memory available",
    )
    add_report_args(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from memfit import progress
    from memfit.measure.profile import profile

    workload = resolve_workload(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with progress.task(f"profiling {workload.name}: warm-up and measured step"):
        result = profile(
            workload,
            args.batch_size,
            args.optimizer,
            precision=args.precision,
            device=device,
            force=args.force,
        )
    if args.plot:
        from memfit.report.chart import plot_profiles

        plot_profiles([result], args.plot)
    if args.report:
        from memfit.report.html import write_report

        write_report(result, args.report, top=args.top)
    if args.json:
        print_json(result.to_dict(timeline=True))
    else:
        from memfit.report.text import print_profile

        print_profile(result, top=args.top)
        if args.plot:
            print(f"chart written to {args.plot}")
    if args.report:
        said_report(args, args.report)
    return 0
