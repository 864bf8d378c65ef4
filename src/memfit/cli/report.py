"""`memfit report RESULT.json`: the HTML report of a saved `profile`, `estimate` or `plan --json`."""

from __future__ import annotations

import sys
from pathlib import Path

from memfit.cli._common import report_path


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "report",
        help="draw the HTML report of saved --json output (profile, estimate or plan)",
        description="Read what `memfit profile`, `estimate` or `plan` printed with --json and "
        "write the same self-contained HTML report that their --report flag writes.",
    )
    parser.add_argument(
        "result",
        metavar="RESULT.json",
        help="a file holding the --json output, or - to read it from standard input",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE.html",
        type=report_path,
        default=None,
        help="where to write the report (default: RESULT.html beside RESULT.json; "
        "memfit-report.html when reading standard input)",
    )
    parser.add_argument(
        "--top", type=_top, default=10, help="modules to show for a profile (default 10)"
    )
    parser.set_defaults(run=run)


def _top(text: str) -> int:
    from memfit.cli._model_args import non_negative_int

    return non_negative_int(text)


def run(args) -> int:
    from memfit.report.html import write_plan_report, write_report
    from memfit.report.saved import read_result

    data, kind = read_result(args.result)
    output = Path(args.output or _default_output(args.result))
    if kind == "plan":
        write_plan_report(data, output)
    else:
        write_report(data, output, top=args.top)
    print(f"report written to {output}")
    return 0


def _default_output(result: str) -> str:
    if result == "-":
        return "memfit-report.html"
    return str(Path(result).with_suffix(".html"))


def write_plan_report_for(args, the_plan, workload, verification=None) -> None:
    """`memfit plan --report`: the plan, with the baseline step's estimate for its timeline."""
    from memfit import progress
    from memfit.errors import MemfitError
    from memfit.estimator import estimate
    from memfit.report.html import write_plan_report

    data = the_plan.to_dict()
    if verification is not None:
        data.update(verification.to_dict())
    baseline = None
    try:
        if getattr(args, "nodes", 1) > 1:
            # The plan's peaks are one rank's; an unsharded baseline would not compare.
            raise MemfitError("sharded")
        with progress.task("estimating the baseline step for the report"):
            optimizer = data.get("optimizer")
            baseline = estimate(
                workload,
                data.get("batch_size"),
                None if optimizer == "workload" else optimizer,
                device=args.device,
            )
    except MemfitError:
        pass  # the plan's report still holds; only the baseline's timeline is missing
    write_plan_report(data, args.report, baseline=baseline)
    print(f"report written to {args.report}", file=sys.stderr if args.json else sys.stdout)
