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
    "report",
]

EXAMPLES = """examples:
  memfit estimate zoo:llama-7b --batch-size 1 --budget colab   does it fit? (allocates nothing)
  memfit profile zoo:resnet18 --batch-size 64 --report r.html  measure a step, chart it
  memfit plan zoo:wrn-28-2 --budget 550MB --batch-size 128     what makes it fit

Every command takes --json (one JSON object on stdout). MEMFIT_DEBUG=1 shows tracebacks
and the warnings of the libraries memfit uses."""


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes get one line too, naming the help to read."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="memfit",
        description="Make deep-learning training fit in the memory you have.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=version_line(), help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"memfit.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


MEASURING = {"profile", "demo"}
"""Commands that read the process's own memory (and `plan --verify`)."""


def _restart_with_stable_allocator(args, argv: list[str] | None) -> None:
    """Run again in a fresh interpreter whose glibc returns big frees to the OS at once.

    RSS peaks are only repeatable with M_MMAP_THRESHOLD set before the allocator first
    runs (memfit.measure.process): setting it later leaves what was freed before in the
    heap, which inflated a measured step by 20% here.
    """
    from memfit.measure.allocator_env import STABLE_ENVIRONMENT, env_is_stable

    measuring = args.command in MEASURING or getattr(args, "verify", False)
    if not measuring or env_is_stable() or not sys.platform.startswith("linux") or argv is not None:
        return
    env = dict(os.environ, **STABLE_ENVIRONMENT)
    os.execve(sys.executable, [sys.executable, "-m", "memfit", *sys.argv[1:]], env)


def version_line() -> str:
    """`memfit 0.1.0 (torch 2.13.0)`, read from package metadata: no import of torch."""
    from importlib.metadata import PackageNotFoundError, version

    from memfit import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"memfit {__version__} (torch {torch_version}, Python {sys.version.split()[0]})"


def quiet_third_party() -> None:
    """Keep other libraries' warnings off the user's screen: one line on stderr, not six.

    torchao logs "Failed to load ..." for kernels this machine cannot use, torch's pytree
    logs deprecations, transformers logs advice; memfit itself logs nothing, so every
    log record below ERROR is dropped. MEMFIT_DEBUG=1 shows them all again.
    """
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _restart_with_stable_allocator(args, argv)
    if not os.environ.get("MEMFIT_DEBUG"):
        quiet_third_party()
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
