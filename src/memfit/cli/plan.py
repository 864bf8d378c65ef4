"""`memfit plan` (not yet available)."""

from __future__ import annotations

from memfit.errors import MemfitError


def add_parser(sub) -> None:
    parser = sub.add_parser("plan", help="(plan: not yet available)")
    parser.set_defaults(run=run)


def run(args) -> int:
    raise MemfitError("memfit plan is not available in this version")
