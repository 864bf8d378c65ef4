"""`memfit shrink` (not yet available)."""

from __future__ import annotations

from memfit.errors import MemfitError


def add_parser(sub) -> None:
    parser = sub.add_parser("shrink", help="(shrink: not yet available)")
    parser.set_defaults(run=run)


def run(args) -> int:
    raise MemfitError("memfit shrink is not available in this version")
