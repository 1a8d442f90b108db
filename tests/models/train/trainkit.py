"""Helpers of the training tests: the CLI's parser, and the options of a tiny, quick run."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.train import cli as cli_mod


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_mod.add_arguments(parser)
    return parser.parse_args(list(argv))


def tiny_run_args(corpus: Path, run_dir: Path) -> tuple[str, ...]:
    """`sparrow train` options for a TINY net on `corpus`, a few crops a step, one thread."""
    return (
        "--tiny",
        "--corpus",
        str(corpus),
        "--run-dir",
        str(run_dir),
        "--batch",
        "4",
        "--crop-frames",
        "1",
        "--threads",
        "1",
        "--log-seconds",
        "1000",
        "--lr",
        "3e-3",
    )
