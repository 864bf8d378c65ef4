"""`memfit profile MODEL`: measure a real training step."""

from __future__ import annotations

from memfit.cli._common import add_report_args, print_json
from memfit.cli._model_args import add_model_args, resolve_workload


def add_parser(sub) -> None:
    parser = sub.add_parser("profile", help="measure where a real training step's memory goes")
    add_model_args(parser)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    add_report_args(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.measure.profile import profile

    workload = resolve_workload(args)
    result = profile(
        workload, args.batch_size, args.optimizer, precision=args.precision, device=args.device
    )
    if args.plot:
        from memfit.report.chart import plot_profiles

        plot_profiles([result], args.plot)
    if args.json:
        print_json(result.to_dict())
    else:
        from memfit.report.text import print_profile

        print_profile(result, top=args.top)
        if args.plot:
            print(f"chart written to {args.plot}")
    return 0
