"""`sparrow bench`: µs per audio sample on one pinned core, TVM vs numpy vs PyTorch, same weights.

Machines are shared and noisy, so every engine reports the minimum and the median over repeats,
the engines' repeats are interleaved, and speedups are ratios of minima measured in the same run.
The real-time budget is US_PER_SAMPLE_BUDGET (models/dsp/features.py: 40 µs per sample).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.argtypes import positive_ints
from models.artifact import default_model_dir
from models.dsp.features import US_PER_SAMPLE_BUDGET
from models.dsp.pitch import source
from models.kernel.isa import ISA_FLAGS, ISA_PREFERENCE, cpu_flags
from models.runtime import VocoderRuntime
from models.sample_mel import load_sample_mel, tile_mel
from models.stream import LOOKAHEAD, VocoderStream
from models.vocoder import excitation, mulaw, quantize
from models.vocoder import reference as ref
from models.vocoder.chain import frames_ahead
from models.vocoder.config import VocoderConfig

log = logging.getLogger(__name__)

REPORTED_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pin_to_core(core: int | None) -> int:
    """Pin this process to one core (default: the last one we may use) and return it."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if core is None else core
    if chosen not in allowed:
        raise SystemExit(f"core {chosen} is not available to this process (allowed: {allowed})")
    os.sched_setaffinity(0, {chosen})
    return chosen


@dataclass
class Engine:
    name: str
    run: Callable[[], None]
    repeats: int
    samples_per_call: int
    times: list[float] = field(default_factory=list)  # µs/sample of each timed call
    prepare: Callable[[], None] | None = None  # untimed, before each call


def time_interleaved(engines: list[Engine], progress: Callable[[], None]) -> None:
    """Time every engine's calls round-robin (one warm-up call each first), filling `times`.

    Interleaved rather than one engine after another, so a burst of load from a neighbour on a
    shared machine lands on all engines alike and the same-run ratios of minima stay fair.
    """
    for e in engines:
        if e.prepare is not None:
            e.prepare()
        e.run()
    for r in range(max(e.repeats for e in engines)):
        for e in engines:
            if r < e.repeats:
                if e.prepare is not None:
                    e.prepare()
                t0 = time.perf_counter()
                e.run()
                e.times.append((time.perf_counter() - t0) / e.samples_per_call * 1e6)
                progress()


def speech_mel(frames: int) -> np.ndarray:
    """`frames` frames of the shipped speech sample's log-mel (Festival speech, repeated), the
    input the demo and `sparrow loadtest` send: a voice's own speech never reaches full scale, so
    the stream path is timed without redraws (random mels would clip and be drawn again)."""
    return tile_mel(load_sample_mel(), frames)


def tvm_engine(
    rt: VocoderRuntime, mel: np.ndarray, frames: int, redrawn: list[int]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(prepare, run): `frames` frames through the path the server uses (VocoderStream.step), in
    steady state. `prepare` (untimed) opens a stream on `mel` (LOOKAHEAD + stream_preroll frames
    longer than `frames`) and steps through the frames a model computes ahead of its output
    (output_advance, envelope passes), so each timed step makes one kernel frame, as a long
    stream does; each call appends the draws the stream redid (VocoderConfig.clip_retries) to
    `redrawn`."""
    stream: list[VocoderStream] = []
    preroll = stream_preroll(rt.config)

    def prepare() -> None:
        s = rt.open_stream(seed=0)
        s.push(mel)
        for _ in range(preroll):
            s.step()
        stream[:] = [s]

    def run() -> None:
        s = stream[0]
        for _ in range(frames):
            s.step()
        redrawn.append(s.frames_redrawn)

    return prepare, run


def stream_preroll(config: VocoderConfig) -> int:
    """Frames a bench stream steps untimed first: the first step makes the frames_ahead frames
    the output runs behind the kernel by; a few more settle the envelope passes' rhythm."""
    return frames_ahead(config) + 1


def kernel_engine(rt: VocoderRuntime, frames: int, batch: int = 1) -> Callable[[], None]:
    """One call = `frames` bare kernel calls on prepared tensors: the compiled function alone,
    without the stream's per-frame work (conditioning network call, RNG, tensor copies); with
    `batch` above 1, the batched function advancing that many streams a frame per call."""
    frame = rt.synthetic_frame(batch=batch)

    def run() -> None:
        for _ in range(frames):
            frame.run(rt)

    return run


def numpy_engine(weights: dict[str, np.ndarray], config: VocoderConfig) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    cond = rng.uniform(-1, 1, (2, config.cond_size)).astype(np.float32)
    u = rng.random(config.hop_length, dtype=np.float32)
    quantized = quantize.QuantizedWeights.from_weights(weights)
    lpc = np.zeros(config.lpc_order, np.float32)  # the prediction's cost, not its value
    src = source(np.array([200.0]), np.ones(1), config.hop_length, config.sample_rate)[0]

    def run() -> None:
        ref.run_frame(
            weights,
            config,
            cond,
            u,
            ref.FrameState.zeros(config),
            quantized=quantized,
            lpc=lpc,
            source=src,
        )

    return run


def torch_engine(
    weights: dict[str, np.ndarray], config: VocoderConfig, steps: int
) -> Callable[[], None] | None:
    """The same network, dense, in PyTorch eager mode, one sample per step (as a trainer would
    sample). None when torch is not installed (it is only in the `train` extra)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    H = config.hidden_size
    gru = torch.nn.GRUCell(len(excitation.STEP_INPUTS) + config.cond_size, H)
    fc1 = torch.nn.Linear(H, config.fc_size)
    fc2 = torch.nn.Linear(config.fc_size, config.n_classes)
    with torch.no_grad():
        w_in = [weights[k][:, None] for k in excitation.STEP_INPUTS]
        gru.weight_ih.copy_(torch.from_numpy(np.concatenate([*w_in, weights["gru.w_cond"]], 1)))
        gru.weight_hh.copy_(torch.from_numpy(weights["gru.w_hh"]))
        gru.bias_ih.copy_(torch.from_numpy(weights["gru.b_ih"]))
        gru.bias_hh.copy_(torch.from_numpy(weights["gru.b_hh"]))
        fc1.weight.copy_(torch.from_numpy(weights["fc1.weight"]))
        fc1.bias.copy_(torch.from_numpy(weights["fc1.bias"]))
        fc2.weight.copy_(torch.from_numpy(weights["fc2.weight"]))
        fc2.bias.copy_(torch.from_numpy(weights["fc2.bias"]))
    table = torch.from_numpy(mulaw.mulaw_table())
    cond = torch.rand(2, config.cond_size) * 2 - 1
    src = torch.from_numpy(
        source(np.array([200.0]), np.ones(1), config.hop_length, config.sample_rate)[0]
    )
    gen = torch.Generator().manual_seed(0)

    @torch.inference_mode()
    def run() -> None:
        h = torch.zeros(1, H)
        x = torch.zeros(1, 1)
        p = torch.zeros(1, 1)  # the prediction's cost is left out: it flatters torch, not us
        for t in range(steps):
            a = t / config.hop_length
            c = (1 - a) * cond[0:1] + a * cond[1:2]
            s = src[t % config.hop_length : t % config.hop_length + 1]
            h = gru(torch.cat([x, p, x, s, c], dim=1), h)
            logits = fc2(torch.relu(fc1(h)))
            k = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=gen)
            x = table[k].reshape(1, 1)

    return run


def stats(name: str, values: list[float]) -> dict[str, Any]:
    best = min(values)
    return {
        "engine": name,
        "min_us_per_sample": best,
        "median_us_per_sample": statistics.median(values),
        "budget_share": best / US_PER_SAMPLE_BUDGET,
        "realtime_streams_per_core": int(US_PER_SAMPLE_BUDGET // best),
        "repeats": len(values),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, help="compiled model dir (default: compiled/manifest.json's default)"
    )
    parser.add_argument("--core", type=int, help="core to pin to (default: the last available)")
    parser.add_argument(
        "--frames",
        type=int,
        default=20,
        help="kernel calls (one frame of samples each) per TVM repeat",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per engine")
    parser.add_argument(
        "--numpy-repeats", type=int, default=2, help="repeats of one numpy frame (slow)"
    )
    parser.add_argument("--torch-steps", type=int, default=300, help="samples per PyTorch repeat")
    parser.add_argument("--torch-repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    parser.add_argument(
        "--isa",
        choices=list(ISA_PREFERENCE),
        help="the model's module to time (default: the best this CPU runs)",
    )
    parser.add_argument(
        "--batch",
        type=positive_ints,
        metavar="B,B,...",
        help="time the kernel alone at these batch sizes instead (streams advanced per call, e.g. "
        "1,2,4,8; B = 1 is always timed too), in µs per sample per stream",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="time each stage of a worker's step per frame instead (--frames, --repeats)",
    )


def run(args: argparse.Namespace) -> int:
    core = pin_to_core(args.core)
    model_dir = args.model or default_model_dir()
    base = VocoderRuntime.load(model_dir, isa=args.isa)
    if args.stages:
        return run_stages(base, core, args)
    if args.batch:
        from models.bench_batch import run_batches

        return run_batches(base, core, args)
    config = base.config
    runnable = [isa for isa in base.manifest["isas"] if _runs_here(isa)]
    total = (
        (len(runnable) + 1) * args.repeats
        + args.numpy_repeats
        + (0 if args.no_torch else args.torch_repeats)
    )
    done = 0

    def progress() -> None:
        nonlocal done
        done += 1
        print(f"\rbenchmarking on core {core}: {done}/{total}", end="", file=sys.stderr, flush=True)

    samples = args.frames * config.hop_length
    engines = [
        Engine(
            f"tvm {base.isa} kernel only", kernel_engine(base, args.frames), args.repeats, samples
        )
    ]
    mel = speech_mel(args.frames + LOOKAHEAD + frames_ahead(config) + stream_preroll(config))
    redrawn: list[int] = []
    for isa in runnable:
        rt = base if isa == base.isa else VocoderRuntime.load(model_dir, isa=isa)
        prepare, run = tvm_engine(rt, mel, args.frames, redrawn)
        engines.append(Engine(f"tvm {isa} stream", run, args.repeats, samples, prepare=prepare))
    engines.append(
        Engine(
            "numpy reference",
            numpy_engine(base.weights, config),
            args.numpy_repeats,
            config.hop_length,
        )
    )
    torch_run = None if args.no_torch else torch_engine(base.weights, config, args.torch_steps)
    if torch_run is not None:
        engines.append(
            Engine("pytorch eager (dense)", torch_run, args.torch_repeats, args.torch_steps)
        )
    time_interleaved(engines, progress)
    results = [stats(e.name, e.times) for e in engines]
    print(file=sys.stderr)
    fastest = min(r["min_us_per_sample"] for r in results)
    for r in results:
        r["slowdown_vs_fastest"] = r["min_us_per_sample"] / fastest
    by_name = {r["engine"]: r["min_us_per_sample"] for r in results}
    speedups = {}
    for baseline in ("pytorch eager (dense)", "numpy reference"):
        if baseline in by_name:
            for tvm_row in (f"tvm {base.isa} kernel only", f"tvm {base.isa} stream"):
                speedups[f"{tvm_row} vs {baseline}"] = by_name[baseline] / by_name[tvm_row]
    report = {
        "model": base.name,
        "trained": bool(base.manifest.get("trained")),
        "config": config.to_dict(),
        "cpu": cpu_model(),
        "cpu_flags": sorted(f for f in REPORTED_FLAGS if f in cpu_flags()),
        "core": core,
        "budget_us_per_sample": US_PER_SAMPLE_BUDGET,
        "results": results,
        "speedups": speedups,
        "stream_frames_redrawn": sum(redrawn),  # draws redone in all stream calls (0: none timed)
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def run_stages(rt: VocoderRuntime, core: int, args: argparse.Namespace) -> int:
    from models.bench_stages import format_stages, stage_report

    print(f"timing stages on core {core}", file=sys.stderr)
    report = stage_report(rt, args.frames, args.repeats)
    report.update(cpu=cpu_model(), core=core)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"cpu {report['cpu']}, pinned to core {core}")
        print(format_stages(report))
    return 0


def _runs_here(isa: str) -> bool:
    return ISA_FLAGS.get(isa, frozenset({"?"})) <= cpu_flags()


def format_table(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        (
            f"model {report['model']} ({'trained' if report['trained'] else 'UNTRAINED'}): "
            f"H={c['hidden_size']}, FC={c['fc_size']}, {c['block_rows']}x{c['block_cols']} blocks "
            f"at {c['density']:.0%} density, {c['weight_dtype']} weights"
        ),
        f"cpu {report['cpu']} [{' '.join(report['cpu_flags'])}], pinned to core {report['core']}",
        f"budget {report['budget_us_per_sample']:.0f} us/sample (real time)",
        "",
        (
            f"{'engine':<30}{'min us/sample':>14}{'median':>10}{'of budget':>11}"
            f"{'RT streams':>12}{'x slower':>10}"
        ),
    ]
    for r in report["results"]:
        lines.append(
            f"{r['engine']:<30}{r['min_us_per_sample']:>14.2f}{r['median_us_per_sample']:>10.2f}"
            f"{r['budget_share']:>10.1%}{r['realtime_streams_per_core']:>12d}{r['slowdown_vs_fastest']:>10.1f}"
        )
    lines.append("")
    for name, value in report["speedups"].items():
        lines.append(f"speedup {name}: {value:.0f}x")
    if report.get("stream_frames_redrawn"):
        lines.append(
            f"note: the stream rows include {report['stream_frames_redrawn']} redrawn frames "
            f"(clip_retries)"
        )
    return "\n".join(lines)
