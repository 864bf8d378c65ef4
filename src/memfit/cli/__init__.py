"""The `memfit` command: a thin shell over the public API.

Each subcommand lives in its own module here with two functions:
`add_parser(subparsers)` declares its flags and `run(args) -> int` calls the
API. Modules import torch and friends inside `run`, so `memfit --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings

from memfit.errors import MemfitError

# Order is the order of `memfit --help`.
COMMANDS = [
    "demo",
    "budgets",
    "profile",
    "estimate",
    "plan",
    "shrink",
    "convert",
    "compress",
]


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes get one line too, naming the help to read."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="memfit",
        description="Make deep-learning training fit in the memory you have.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"memfit.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def _quiet_libraries() -> None:
    # Libraries imported on the way (transformers pulls in torchao) log lines about their
    # own optional parts that say nothing about the user's question.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


MEASURING = {"profile", "demo"}
"""Commands that read the process's own memory (and `plan --verify`)."""


def _restart_with_stable_allocator(args, argv: list[str] | None) -> None:
    """Run again in a fresh interpreter whose glibc returns big frees to the OS at once.

    RSS peaks are only repeatable with M_MMAP_THRESHOLD set before the allocator first
    runs (memfit.measure.process): setting it later leaves what was freed before in the
    heap, which inflated a measured step by 20% here.
    """
    from memfit.measure.process import env_is_stable

    measuring = args.command in MEASURING or getattr(args, "verify", False)
    if not measuring or env_is_stable() or not sys.platform.startswith("linux") or argv is not None:
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
    os.execve(sys.executable, [sys.executable, "-m", "memfit", *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _restart_with_stable_allocator(args, argv)
    if not os.environ.get("MEMFIT_DEBUG"):
        warnings.filterwarnings("ignore")
        _quiet_libraries()
    if getattr(args, "json", False):
        # stdout carries one JSON object; progress would only clutter a script's stderr.
        from memfit import progress

        progress.set_enabled(False)
    try:
        return int(args.run(args) or 0)
    except MemfitError as exc:
        if os.environ.get("MEMFIT_DEBUG"):
            traceback.print_exception(exc)
        print(f"memfit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memfit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen input: still one line, unless debugging
        if os.environ.get("MEMFIT_DEBUG"):
            raise
        print(
            f"memfit: error: {type(exc).__name__}: {exc} (set MEMFIT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
