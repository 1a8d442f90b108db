"""`sparrow train`: its options and entry point (the loop is models/train/train.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from models.argtypes import bounded
from models.train.checkpoint import CHECKPOINT, export, load_checkpoint, save_small
from models.train.corpus import CorpusError
from models.train.pruning import GrowthError
from models.train.train import train

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `sparrow train`: a flat list, one call per option, long by nature."""
    parser.add_argument(
        "--corpus", default="data/corpus", help="directory written by `sparrow data`"
    )
    parser.add_argument(
        "--name", default="wavernn-slt", help="run name: checkpoints go to RUN_DIR/NAME/"
    )
    parser.add_argument("--run-dir", default="runs")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from RUN_DIR/NAME/checkpoint.pt, or from the given checkpoint file",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="stop after this many steps (in total)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop after this many minutes of this run"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="models.vocoder.config.TINY-sized model (smoke tests)"
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="train on a tiny generated tone corpus (written to RUN_DIR/NAME/) instead of --corpus",
    )
    parser.add_argument("--hidden-size", type=int, default=None)
    parser.add_argument("--fc-size", type=int, default=None)
    parser.add_argument(
        "--preemphasis",
        type=float,
        default=None,
        help="pre-emphasis of the target (default: the model config's; on --resume, switches "
        "domain)",
    )
    parser.add_argument(
        "--lpc-order",
        type=int,
        default=None,
        help="predict the excitation of this many LPC poles fitted to each frame's mel, "
        "LPCNet-style "
        "(default: the model config's, 0 = off; on --resume, switches domain)",
    )
    parser.add_argument(
        "--lpc-noise-floor",
        type=float,
        default=None,
        help="white-noise correction of the LPC fit, which tempers its sharpest resonances "
        "(default: the "
        "model config's; on --resume, switches domain)",
    )
    parser.add_argument(
        "--input-noise",
        type=float,
        default=None,
        help="LPC models: inject mu-law slips into the past the net sees, Laplace-distributed with "
        "a per-utterance scale up to this many steps, so sampling does not run away (LPCNet; "
        "default: the resumed run's, else 0 = off)",
    )
    parser.add_argument(
        "--input-ring",
        type=bounded(
            float, 0.0, 1.0, high_open=True
        ),  # gamma 1: the fit's full resonances, up to ~50 dB sharp
        default=None,
        help="with --input-noise: pass the slips through each frame's LPC filter 1/A(z/gamma), "
        "gamma "
        "uniform per utterance up to this (< 1), so the past is bent as an uncorrected run rings "
        "it, "
        "not white (default: the resumed run's, else 0 = white slips)",
    )
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument(
        "--crop-frames", type=int, default=3, help="mel frames (x hop samples) per crop"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--lr-cycle",
        action="store_true",
        help="with --resume: a new learning-rate cycle over this run alone (warm-up, then cosine "
        "from --lr to the final rate over its --max-minutes / --steps), instead of going on with "
        "the whole run's schedule where it stopped (near its final rate late in a long run)",
    )
    parser.add_argument(
        "--prune-start", type=float, default=0.15, help="progress at which pruning starts"
    )
    parser.add_argument(
        "--prune-end", type=float, default=0.65, help="progress at which density hits target"
    )
    parser.add_argument("--prune-every", type=int, default=25, help="steps between mask updates")
    parser.add_argument(
        "--grow-density",
        type=bounded(float, 0.0, 1.0),
        default=None,
        metavar="D",
        help="with --resume: add the blocks the loss gradient wants most to W_hh, FC1 and FC2 "
        "until "
        "this share of blocks is kept, starting at zero (the net computes what it did), and train "
        "at that density from then on",
    )
    parser.add_argument(
        "--prune-density",
        type=bounded(float, 0.0, 1.0),
        default=None,
        metavar="D",
        help="with --resume: prune W_hh, FC1 and FC2 on from the run's density down to this "
        "share of blocks, along the cubic schedule over this run's own progress "
        "(--prune-start, --prune-end), smallest blocks first",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="autocast dtype; auto = bf16 where the CPU multiplies bf16 natively "
        "(avx512_bf16/AMX), "
        "else fp32",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-seconds", type=float, default=30.0)
    parser.add_argument(
        "--val-every", type=int, default=100, help="steps between held-out loss checks"
    )
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument(
        "--refresh-minutes", type=float, default=5.0, help="re-read metadata.csv this often"
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="write DIR/weights.npz + config.json (after training, or from --resume with --steps "
        "0)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature baked into the exported FC2 (< 1 sharpens; see "
        "docs/training.md)",
    )
    parser.add_argument(
        "--save-small", default=None, metavar="PATH", help="also write a compact fp16 checkpoint"
    )


def run(args: argparse.Namespace) -> int:
    # Export-only: `sparrow train --resume [CKPT] --export DIR --steps 0` skips the corpus entirely.
    if args.resume and args.steps == 0:
        state = load_checkpoint(
            Path(args.resume)
            if args.resume != "auto"
            else Path(args.run_dir) / args.name / CHECKPOINT
        )
        if args.export:
            export(state, Path(args.export), args.temperature)
        if args.save_small:
            save_small(state, Path(args.save_small))
        return 0
    try:
        return train(args)
    except (CorpusError, GrowthError, FileNotFoundError) as exc:
        print(f"sparrow train: {exc}", file=sys.stderr)
        return 1
