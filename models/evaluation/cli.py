"""`sparrow eval`: its options and entry point."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf

from models.dsp.features import SPEC
from models.evaluation import perceptual
from models.evaluation.compare import compare, format_comparison
from models.evaluation.evaluate import EvalError, evaluate, load_test_set
from models.evaluation.report import (
    format_band_lsd_table,
    format_bias_table,
    format_table,
    format_voicing_table,
    save_spectrograms,
    write_quality_doc,
)
from models.vocoder.config import SynthesisConfig

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=DIR",
        help="compiled model to score (repeatable); default trained=compiled/wavernn-slt and "
        "untrained=compiled/wavernn-untrained",
    )
    parser.add_argument(
        "--synthesis",
        action="append",
        metavar="NAME=JSON",
        help="synthesis settings over model NAME's own, a JSON object (repeatable): "
        "e.g. --model a=DIR --model b=DIR --synthesis 'b={\"voiced_logit_scale\": 1.3}' compares "
        "two settings of one voice, nothing recompiled",
    )
    parser.add_argument("--limit", type=int, default=8, help="held-out utterances to use (0 = all)")
    parser.add_argument(
        "--max-seconds", type=float, default=4.0, help="crop each utterance (0 = whole)"
    )
    parser.add_argument(
        "--split",
        default="test",
        help="corpus split to score: `test` for reporting, `train` for tuning export knobs",
    )
    parser.add_argument("--no-griffin-lim", action="store_true")
    parser.add_argument("--no-perceptual", action="store_true", help="skip DNSMOS and ASR WER")
    parser.add_argument(
        "--no-lpc-noise", action="store_true", help="skip the LPC + white noise baseline"
    )
    parser.add_argument(
        "--no-noise-oracle",
        action="store_true",
        help="skip the yardstick of the original with its noise redrawn",
    )
    parser.add_argument(
        "--seed",
        type=int,
        action="append",
        help="seed for the vocoders' sampling (repeatable: every system is scored under each "
        "seed, the perceptual scores averaged over all; diagnostics, plots and samples are the "
        "first seed's; default 0)",
    )
    parser.add_argument(
        "--baseline",
        metavar="NAME",
        default=None,
        help="also print each system's DNSMOS and WER differences from this one (a --model name, "
        "`original` or a baseline's), paired by utterance and seed, with standard errors",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the summary (and per-model info) here"
    )
    parser.add_argument(
        "--img-dir", type=Path, default=None, help="spectrogram PNGs (e.g. docs/img)"
    )
    parser.add_argument("--plots", type=int, default=2, help="utterances to plot")
    parser.add_argument(
        "--samples-dir",
        type=Path,
        default=None,
        help="WAVs of a few utterances (e.g. docs/samples)",
    )
    parser.add_argument("--samples", type=int, default=2, help="utterances to save as WAV")
    parser.add_argument(
        "--doc", type=Path, default=None, help="write the Markdown report here (docs/quality.md)"
    )


def _parse_models(specs: list[str] | None) -> dict[str, Path]:
    if not specs:
        return {
            "trained": Path("compiled/wavernn-slt"),
            "untrained": Path("compiled/wavernn-untrained"),
        }
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise EvalError(f"--model takes NAME=DIR, got {spec!r}")
        out[name] = Path(path)
    return out


def _parse_synthesis(specs: list[str] | None) -> dict[str, dict]:
    """--synthesis NAME=JSON options -> {name: settings}."""
    out: dict[str, dict] = {}
    for spec in specs or []:
        name, sep, text = spec.partition("=")
        try:
            value = json.loads(text) if sep and name else None
        except json.JSONDecodeError as exc:
            raise EvalError(f"--synthesis {spec!r}: not a JSON object ({exc})") from exc
        if not isinstance(value, dict):
            raise EvalError(f"--synthesis takes NAME=JSON object, got {spec!r}")
        out[name] = value
    return out


def _synthesis_over(own: SynthesisConfig, over: dict, name: str) -> SynthesisConfig:
    """A voice's synthesis settings with `over` over them; EvalError naming a bad setting."""
    try:
        return own.updated(over)
    except (ValueError, TypeError, AssertionError) as exc:
        raise EvalError(f"--synthesis for {name}: {exc}") from exc


def _check_baseline(args: argparse.Namespace, models: list[str]) -> None:
    """--baseline names a system this run scores, and the perceptual scores are on."""
    if args.baseline is None:
        return
    names = ["original", *models]
    names += [] if args.no_griffin_lim else ["griffin-lim"]
    names += [] if args.no_lpc_noise else ["lpc-noise"]
    names += [] if args.no_noise_oracle else ["noise-oracle"]
    if args.baseline not in names:
        raise EvalError(
            f"--baseline {args.baseline!r} is not scored here (systems: {', '.join(names)})"
        )
    if args.no_perceptual:
        raise EvalError("--baseline compares perceptual scores: drop --no-perceptual")


def run(args: argparse.Namespace) -> int:
    from models.runtime import ModelLoadError, VocoderRuntime

    try:
        utterances = load_test_set(
            args.corpus, args.limit or None, args.max_seconds or None, args.split
        )
        systems: dict[str, object] = {}
        manifests: dict[str, dict] = {}
        overrides = _parse_synthesis(args.synthesis)
        models = _parse_models(args.model)
        unknown = set(overrides) - set(models)
        if unknown:
            raise EvalError(f"--synthesis for {sorted(unknown)}, which no --model names")
        for name, path in models.items():
            rt = VocoderRuntime.load(path)
            extra = {"_isa": rt.isa}
            if name in overrides:
                rt = rt.with_synthesis(_synthesis_over(rt.config.synthesis, overrides[name], name))
                extra["_synthesis"] = overrides[name]
            systems[name] = rt
            manifests[f"{name}: {path}"] = {**rt.manifest, **extra}
        _check_baseline(args, list(systems))
    except (EvalError, ModelLoadError, OSError) as exc:
        print(f"sparrow eval: {exc}", file=sys.stderr)
        return 1
    seeds = args.seed or [0]
    scorer = perceptual.Scorer({u.id: u.text for u in utterances}, not args.no_perceptual)
    first: tuple[dict, dict] | None = None
    for seed in seeds:
        result = evaluate(
            utterances,
            systems,
            griffin_lim_iters=None if args.no_griffin_lim else 32,
            lpc_noise=not args.no_lpc_noise,
            oracle=not args.no_noise_oracle,
            seed=seed,
        )
        first = first or result
        scorer.add(seed, result[1])
    assert first is not None
    summary, audio = first
    head = scorer.headline()
    comparisons = compare(head.rows, args.baseline) if args.baseline and head.rows else {}
    if comparisons:
        head.comparison = format_comparison(comparisons, args.baseline, len(seeds))
    print(*filter(None, [head.table, head.comparison, format_table(summary)]), sep="\n")
    print(format_voicing_table(summary))
    print(format_bias_table(summary))
    print(format_band_lsd_table(summary))
    plots, samples = [], []
    for i, utt in enumerate(utterances):
        if args.img_dir and i < args.plots:
            p = args.img_dir / f"spectrogram-{utt.id}.png"
            save_spectrograms(p, audio[utt.id], f"{utt.id}: {utt.text}")
            plots.append(str(p))
        if args.samples_dir and i < args.samples:
            args.samples_dir.mkdir(parents=True, exist_ok=True)
            for name, y in audio[utt.id].items():
                p = args.samples_dir / f"{utt.id}-{name}.wav"
                sf.write(p, np.clip(y, -1, 1), SPEC.sample_rate, subtype="PCM_16")
                samples.append(str(p))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "summary": summary,
                    "perceptual": head.scores,
                    "seeds": seeds,
                    "baseline": args.baseline if comparisons else None,
                    "comparison": {name: asdict(c) for name, c in comparisons.items()},
                    "utterances": [u.id for u in utterances],
                },
                indent=2,
            )
            + "\n"
        )
    if args.doc:
        write_quality_doc(args.doc, summary, args, plots, samples, manifests, head)
    return 0
