"""`memfit demo`: the main job on built-in models and data."""

from __future__ import annotations


def add_parser(sub) -> None:
    parser = sub.add_parser("demo", help="profile a ResNet and a Transformer side by side")
    parser.add_argument("--plot", default="memfit-demo.png", help="chart file (PNG)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from memfit.demo import run_demo

    return run_demo(plot_path=args.plot)
