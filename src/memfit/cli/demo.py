"""`memfit demo`: the main job on built-in data: profile, budget, plan, train, compare."""

from __future__ import annotations


def add_parser(sub) -> None:
    from memfit.cli._common import report_path

    parser = sub.add_parser(
        "demo",
        help="train a digits CNN in 1/8 of its memory: profile, plan, train, compare",
        description="The main job on real data (scikit-learn's bundled digits, nothing "
        "downloaded): profile a CNN's training step, set a budget of one eighth of its peak, "
        "plan, train it under the plan and with plain PyTorch, and compare accuracy, measured "
        "peak and time. Writes a before/after chart and an HTML report.",
    )
    parser.add_argument(
        "--plot",
        default="memfit-demo.png",
        metavar="FILE.png",
        help="before/after chart file (default memfit-demo.png)",
    )
    parser.add_argument(
        "--report",
        default="memfit-demo.html",
        metavar="FILE.html",
        type=report_path,
        help="HTML report of the plan and both runs (default memfit-demo.html)",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.demo import run_demo

    return run_demo(plot_path=args.plot, report_path=args.report)
