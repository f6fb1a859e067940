"""argparse types shared by the devstack's commands (bench, profile, chaos)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive(kind: type[float] | type[int], what: str) -> Callable[[str], float | int]:
    """An argparse ``type`` that takes only numbers above zero, naming ``what`` when it refuses."""
    def parse(raw: str) -> float | int:
        try:
            value = kind(raw)
        except ValueError:
            value = 0
        if not value > 0:  # NaN too
            whole = "whole " if kind is int else ""
            raise argparse.ArgumentTypeError(f"{what} must be a positive {whole}number, not {raw!r}")
        return value
    return parse


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """The options bench and profile share: the load generator's connections and the web processes."""
    parser.add_argument("--concurrency", type=positive(int, "--concurrency"), default=16,
                        help="connections of the load generator (default 16)")
    parser.add_argument("--web-concurrency", type=positive(int, "--web-concurrency"), default=2,
                        help="gunicorn workers of every api and baseline app (default 2, one per core here)")
    parser.add_argument("--web-threads", type=positive(int, "--web-threads"), default=4,
                        help="threads per gunicorn worker (default 4)")
