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
