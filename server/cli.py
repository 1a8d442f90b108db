"""`sparrow` command line: one subcommand per job, each living in the module that owns the job.

Every subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. Only the chosen
subcommand's module is imported, and none for `sparrow --help` / `--version`: those modules pull
in TVM, numpy or torch, which take seconds to import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib import metadata

from server.workers.affinity import single_threaded_env

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("server.serve", "run the HTTP/websocket server"),
    "compile": ("models.compile", "compile weights into TVM modules under compiled/"),
    "bench": ("models.bench", "benchmark the vocoder kernel on one pinned core"),
    "data": ("models.frontend.corpus", "generate the offline training corpus with Festival"),
    "train": ("models.train.cli", "train the WaveRNN (needs the 'train' extra)"),
    "eval": ("models.evaluation.cli", "measure vocoding quality on held-out audio"),
    "loadtest": ("server.loadtest", "load-test a running server with concurrent streams"),
}

# Subcommands timed on one pinned core: numpy's BLAS (the LPC fit) and TVM must not start
# threads on other cores, which pinning the main thread leaves free to run anywhere. These get a
# worker's own thread settings (server/workers/affinity.py) before their module imports numpy.
SINGLE_THREADED = frozenset({"bench"})

# Third-party modules that only an optional extra installs: a subcommand missing one says which
# extra to install instead of printing a traceback.
EXTRA_OF_MODULE: dict[str, str] = {"torch": "train", "matplotlib": "train", "librosa": "train"}

# Help for options whose definitions in their own modules carry none, so that every option of
# every subcommand explains itself in `sparrow COMMAND --help`. Their modules' own help wins.
FALLBACK_HELP: dict[tuple[str, str], str] = {
    ("compile", "--description"): "one line for the manifest (default: none, or UNTRAINED)",
    ("bench", "--torch-repeats"): "timed repeats of the PyTorch eager baseline",
    ("train", "--run-dir"): "directory holding the runs' checkpoints and logs",
    ("train", "--hidden-size"): "GRU width of a new model (default: the shipped config's)",
    ("train", "--fc-size"): "FC1 width of a new model (default: the shipped config's)",
    ("train", "--batch"): "crops per training step",
    ("train", "--lr"): "peak learning rate (reached after --warmup steps)",
    ("train", "--warmup"): "steps of linear learning-rate warm-up",
    ("train", "--threads"): "torch CPU threads",
    ("train", "--seed"): "seed for initial weights, crops and noise",
    ("train", "--log-seconds"): "seconds between progress lines",
    ("train", "--checkpoint-minutes"): "minutes between checkpoints",
    ("eval", "--corpus"): "directory written by `sparrow data` (its held-out split is used)",
    ("eval", "--no-griffin-lim"): "skip the Griffin-Lim baseline",
    ("eval", "--seed"): "seed for the vocoders' sampling",
}


def version() -> str:
    try:
        return metadata.version("sparrow-tts")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (its options may follow), if any."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in SUBCOMMANDS else None


def missing_extra(exc: ImportError) -> str | None:
    """The extra to install when `exc` is a missing optional dependency, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return EXTRA_OF_MODULE.get(name)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser; only the subcommand named in `argv` gets its options (importing its
    module), which is all argparse needs to parse or to print that subcommand's help."""
    parser = argparse.ArgumentParser(prog="sparrow", description="Sparrow CPU speech synthesis")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"sparrow {version()}",
        help="print the version",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = chosen_command(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
            for action in p._actions:
                for flag in action.option_strings:
                    if not action.help and (name, flag) in FALLBACK_HELP:
                        action.help = FALLBACK_HELP[name, flag]
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if chosen_command(argv) in SINGLE_THREADED:
        single_threaded_env()
    try:
        parser = build_parser(argv)
    except ImportError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        print(
            f"sparrow {chosen_command(argv)}: {exc.name} is not installed; it comes with the "
            f"'{extra}' extra: pip install -e '.[{extra}]' (from the repository root)",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
