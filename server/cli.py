"""`sparrow` command line: one subcommand per job, each living in the module that owns the job.

Every subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; they are imported
lazily so `sparrow serve` never imports torch and `sparrow --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("server.serve", "run the HTTP/websocket server"),
    "compile": ("models.compile", "compile weights into TVM modules under compiled/"),
    "bench": ("models.bench", "benchmark the vocoder kernel on one pinned core"),
    "data": ("models.frontend.corpus", "generate the offline training corpus with Festival"),
    "train": ("models.train.cli", "train the WaveRNN (needs the 'train' extra)"),
    "eval": ("models.evaluation.cli", "measure vocoding quality on held-out audio"),
    "loadtest": ("server.loadtest", "load-test a running server with concurrent streams"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparrow", description="Sparrow CPU speech synthesis")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Argument definitions live with the command; import only the chosen one when possible.
        chosen = next((a for a in argv if not a.startswith("-")), None)
        if chosen in SUBCOMMANDS and chosen != name:
            continue
        try:
            importlib.import_module(module_name).add_arguments(p)
        except ImportError as exc:  # e.g. the train extra is not installed
            p.set_defaults(_import_error=str(exc))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "_import_error", None):
        print(f"sparrow {args.command}: {args._import_error}", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
