"""`sparrow compile`: weights -> a self-describing artefact directory under compiled/ (its layout:
models/artifact.py).

One function per stage, as in TVM's export tutorials: check -> pack -> build -> export -> describe.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from models.argtypes import bounded
from models.artifact import FORMAT_VERSION, load_weights, update_index, write_manifest
from models.dsp.features import SPEC
from models.kernel.batch import BATCH_SIZES
from models.kernel.build import build
from models.kernel.isa import ISA_PREFERENCE, ISA_TARGETS, host_isas
from models.kernel.packing import KERNEL_ABI, pack_weights
from models.vocoder.config import MAX_CLIP_RETRIES, VocoderConfig
from models.vocoder.params import SPARSE_WEIGHTS, check_weights, random_weights

log = logging.getLogger(__name__)


def measured_density(weights: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        name: float(np.count_nonzero(weights[name]) / weights[name].size) for name in SPARSE_WEIGHTS
    }


def build_module(
    weights: dict[str, np.ndarray], config: VocoderConfig, isa: str, out: Path
) -> None:
    shape, _ = pack_weights(weights, config)
    executable = build(shape, isa)
    executable.export_library(str(out))


def build_artifact(
    weights: dict[str, np.ndarray],
    config: VocoderConfig,
    out_dir: Path | str,
    *,
    isas: list[str] | None = None,
    trained: bool = False,
    description: str = "",
    training: dict[str, Any] | None = None,
) -> Path:
    """Compile `weights` for each ISA level into `out_dir` and describe it in manifest.json.

    isas=None builds only for the host's best ISA (what tests want); `sparrow compile` builds all.
    """
    out_dir = Path(out_dir)
    check_weights(weights, config)
    if isas is None:
        isas = host_isas()[:1]
        if not isas:
            raise RuntimeError(
                "this CPU supports none of the ISA levels: " + ", ".join(ISA_PREFERENCE)
            )
    unknown = set(isas) - set(ISA_TARGETS)
    if unknown:
        raise ValueError(f"unknown ISA levels {sorted(unknown)}; known: {list(ISA_PREFERENCE)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.so"):
        stale.unlink()
    config.save(out_dir / "config.json")
    np.savez_compressed(
        out_dir / "weights.npz", **{k: np.asarray(v, np.float32) for k, v in weights.items()}
    )
    for isa in isas:
        log.info("building %s module for %s", isa, out_dir.name)
        build_module(weights, config, isa, out_dir / f"{isa}.so")
    manifest = {
        "format": FORMAT_VERSION,
        "name": out_dir.name,
        "trained": trained,
        "description": description
        or ("UNTRAINED: deterministic random weights" if not trained else ""),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tvm_version": tvm.__version__,
        "built_on": {"machine": platform.machine(), "python": platform.python_version()},
        "config": config.to_dict(),
        "sparsity": {
            "block": [config.block_rows, config.block_cols],
            "target_density": config.density,
            "density": measured_density(weights),
        },
        "kernel_dtype": config.weight_dtype,
        "kernel_abi": KERNEL_ABI,
        "batch_sizes": list(BATCH_SIZES),  # the module's batched frame functions (frame_b<B>)
        "isas": {isa: {"file": f"{isa}.so", "target": ISA_TARGETS[isa]} for isa in isas},
        "training": training or {},
    }
    write_manifest(out_dir, manifest)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `sparrow compile`: a flat list, one call per option, long by nature."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--weights", type=Path, help="weights.npz exported by `sparrow train --export`"
    )
    src.add_argument(
        "--random", action="store_true", help="deterministic random (untrained) weights"
    )
    parser.add_argument(
        "--config", type=Path, help="config.json (default: beside --weights, or defaults)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --random")
    parser.add_argument(
        "--out", type=Path, required=True, help="artefact directory, e.g. compiled/wavernn-slt"
    )
    parser.add_argument(
        "--isa",
        action="append",
        choices=list(ISA_PREFERENCE),
        help="ISA level (repeatable; default all)",
    )
    parser.add_argument(
        "--pitch-postfilter",
        type=bounded(float, 0.0, 1.0),
        metavar="G",
        help="strength in [0, 1] of the pitch postfilter on the output (models/dsp/postfilter.py; "
        "default: the config's)",
    )
    parser.add_argument(
        "--pitch-postfilter-cutoff",
        dest="pitch_postfilter_cutoff_hz",
        type=bounded(float, 0.0, SPEC.sample_rate / 2 - 1),
        metavar="HZ",
        help="upper edge of the band the pitch postfilter combs (0: the whole band; default: the "
        "config's)",
    )
    parser.add_argument(
        "--output-advance",
        type=bounded(int, 0, SPEC.hop_length),
        metavar="N",
        help="samples, in [0, hop], the output is moved earlier by (default: the config's)",
    )
    parser.add_argument(
        "--envelope-passes",
        type=bounded(int, 0, 4),
        metavar="N",
        help="passes, in [0, 4], of the envelope correction towards the mel "
        "(models/dsp/envelope.py; each "
        "adds 4 frames of look-ahead to a stream; default: the config's)",
    )
    parser.add_argument(
        "--envelope-clip",
        type=bounded(float, 0.01, 5.0),
        metavar="NATS",
        help="largest envelope correction per pass, natural-log units (default: the config's)",
    )
    parser.add_argument(
        "--envelope-smoothing",
        type=bounded(float, 0.0, 1.0),
        metavar="S",
        help="share, in [0, 1], of the way each envelope pass smooths the bins above "
        "--envelope-smoothing-hz to their mel band's level (0: off; default: the config's)",
    )
    parser.add_argument(
        "--envelope-smoothing-hz",
        type=bounded(float, 0.0, SPEC.sample_rate / 2 - 1),
        metavar="HZ",
        help="lowest frequency the envelope smoothing applies to (default: the config's)",
    )
    parser.add_argument(
        "--clip-retries",
        type=bounded(int, 0, MAX_CLIP_RETRIES),
        metavar="N",
        help=f"redraws, in [0, {MAX_CLIP_RETRIES}], of a frame whose output reaches full scale "
        f"(default: the config's)",
    )
    for which in ("voiced", "unvoiced"):
        parser.add_argument(
            f"--{which}-logit-scale",
            type=bounded(float, 0.25, 4.0),
            metavar="S",
            help=f"factor on the logits of fully {which} frames, in [0.25, 4]: the temperature "
            f"baked at export "
            "divided by S (VocoderConfig.voiced_logit_scale; default: the config's)",
        )
    parser.add_argument(
        "--trained", action="store_true", help="mark the artefact as a trained model"
    )
    parser.add_argument("--description", default="")
    parser.add_argument("--default", action="store_true", help="make it the server's default model")


def run(args: argparse.Namespace) -> int:
    config_path = args.config or (args.weights.parent / "config.json" if args.weights else None)
    config = (
        VocoderConfig.load(config_path) if config_path and config_path.exists() else VocoderConfig()
    )
    overrides = {
        k: getattr(args, k)
        for k in (
            "pitch_postfilter",
            "pitch_postfilter_cutoff_hz",
            "output_advance",
            "envelope_passes",
            "envelope_clip",
            "envelope_smoothing",
            "envelope_smoothing_hz",
            "clip_retries",
            "voiced_logit_scale",
            "unvoiced_logit_scale",
        )
        if getattr(args, k) is not None
    }
    if overrides:
        config = VocoderConfig.from_dict({**config.to_dict(), **overrides})
    weights = random_weights(config, args.seed) if args.random else load_weights(args.weights)
    out = build_artifact(
        weights,
        config,
        args.out,
        isas=args.isa or list(ISA_PREFERENCE),
        trained=args.trained,
        description=args.description,
    )
    update_index(out.parent, out.name, make_default=args.default)
    print(f"wrote {out} ({', '.join(args.isa or ISA_PREFERENCE)})")
    return 0
