"""Range-checked argparse types: values in range parse, the rest are usage errors naming the
range."""

from __future__ import annotations

import argparse

import pytest

from models.argtypes import bounded


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    p.add_argument("--g", type=bounded(float, 0.0, 1.0, high_open=True))
    p.add_argument("--n", type=bounded(int, 0, 8))
    return p


def test_in_range_values_parse_to_their_kind() -> None:
    args = parser().parse_args(["--g", "0.95", "--n", "8"])
    assert args.g == 0.95 and args.n == 8 and isinstance(args.n, int)
    assert parser().parse_args(["--g", "0"]).g == 0.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--g", "1.0"], "must be in [0.0, 1.0), got 1.0"),  # the open end is out
        (["--g", "-0.1"], "must be in [0.0, 1.0)"),
        (["--n", "9"], "must be in [0, 8], got 9"),
        (["--n", "2.5"], "invalid int value"),
        (["--g", "abc"], "invalid float value"),
    ],
)
def test_out_of_range_or_not_a_number_is_a_usage_error(argv: list[str], message: str) -> None:
    with pytest.raises(
        argparse.ArgumentError, match=message.replace("[", r"\[").replace(")", r"\)")
    ):
        parser().parse_args(argv)
