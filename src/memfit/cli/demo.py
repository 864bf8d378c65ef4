"""`memfit demo`: the main job on built-in data: profile, budget, plan, train, compare."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "demo", help="train a digits CNN in 1/8 of its memory: profile, plan, train, compare"
    )
    parser.add_argument("--plot", default="memfit-demo.png", help="before/after chart file (PNG)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.demo import run_demo

    return run_demo(plot_path=args.plot)
