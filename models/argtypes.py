"""argparse types for numeric options that have a range or form: a usage error that names it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def bounded(
    kind: Callable[[str], N], low: N, high: N, *, high_open: bool = False
) -> Callable[[str], N]:
    """A `type=` for argparse: `kind(text)` within [low, high] (or [low, high) when high_open)."""

    def parse(text: str) -> N:
        value = kind(text)  # a ValueError becomes argparse's "invalid <kind> value" usage error
        if not (low <= value < high if high_open else low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"must be in [{low}, {high}{')' if high_open else ']'}, got {value}"
            )
        return value

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def positive_ints(text: str) -> list[int]:
    """A `type=` for argparse: comma-separated positive integers, e.g. "1,2,4,8" (sorted, each
    once)."""
    try:
        values = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if values[0] < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text!r}")
    return values
