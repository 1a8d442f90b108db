"""`sparrow bench --batch 1,2,4,8`: the kernel alone advancing B streams a frame per call
(models/kernel/batch.py), and the stream path a worker runs for a group of B streams
(models.batching.step_streams on the shipped speech mel: conditioning, LPC fit, kernel, the
post-kernel chain), in µs per sample per stream, each B's calls interleaved with the others'
(B = 1 always among them) so that the ratios compare figures from the same moments. A repeat
makes about --frames frames in all at every B. On a machine shared with busy neighbours, short
repeats (--frames 1 --repeats 300) find the quiet moments; long ones measure the contention too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from models.batching import step_streams
from models.bench import (
    REPORTED_FLAGS,
    Engine,
    cpu_model,
    kernel_engine,
    speech_mel,
    stats,
    stream_preroll,
    time_interleaved,
    torch_engine,
)
from models.dsp.features import US_PER_SAMPLE_BUDGET
from models.kernel.isa import cpu_flags
from models.runtime import VocoderRuntime
from models.stream import VocoderStream


def streams_engine(
    rt: VocoderRuntime, calls: int, batch: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(prepare, run): `batch` streams (seeds 0..B-1) on the speech mel, past their openings
    (untimed); a run makes `calls` frames of each through step_streams, as a worker's group step
    does (B = 1: the stream's own step())."""
    streams: list[VocoderStream] = []
    # past the preroll, `calls` steps need the look-ahead (conditioning, and the frames the
    # output runs behind the kernel, < preroll) beyond them
    mel = speech_mel(calls + 2 * stream_preroll(rt.config) + 8)

    def prepare() -> None:
        streams[:] = [rt.open_stream(seed=i) for i in range(batch)]
        for s in streams:
            s.push(mel)
            for _ in range(stream_preroll(rt.config)):
                s.step()

    def run() -> None:
        for _ in range(calls):
            if batch == 1:
                streams[0].step()
            else:
                step_streams(streams)

    return prepare, run


def run_batches(rt: VocoderRuntime, core: int, args: argparse.Namespace) -> int:
    """The kernel alone at each batch size, interleaved, in µs per sample per stream."""
    sizes = sorted({1, *args.batch})
    missing = [b for b in sizes if b not in rt.batch_sizes]
    if missing:
        raise SystemExit(
            f"the {rt.isa} module of {rt.name} has no batched function for B = "
            f"{', '.join(map(str, missing))} (it has: {', '.join(map(str, rt.batch_sizes))}; "
            "recompile it with `sparrow compile` for batching)"
        )
    total = len(sizes) * args.repeats
    done = 0

    def progress() -> None:
        nonlocal done
        done += 1
        print(f"\rbenchmarking on core {core}: {done}/{total}", end="", file=sys.stderr, flush=True)

    # A repeat makes about --frames frames in all whatever B (B = 8: a call per 8 frames), so
    # every B's repeats last as long and meet a noisy neighbour as often.
    calls = {b: max(1, round(args.frames / b)) for b in sizes}
    engines = [
        Engine(
            f"tvm {rt.isa} kernel B={b}",
            kernel_engine(rt, calls[b], b),
            args.repeats,
            calls[b] * b * rt.config.hop_length,
        )
        for b in sizes
    ]
    stream_calls = {b: max(1, round(args.frames / b)) for b in sizes}
    for b in sizes:
        prepare, run = streams_engine(rt, stream_calls[b], b)
        samples = stream_calls[b] * b * rt.config.hop_length
        engines.append(
            Engine(f"tvm {rt.isa} stream path B={b}", run, args.repeats, samples, prepare=prepare)
        )
    total = len(engines) * args.repeats
    # PyTorch eager on the same net, interleaved with the rest, for same-run ratios
    torch_run = None if args.no_torch else torch_engine(rt.weights, rt.config, args.torch_steps)
    if torch_run is not None:
        engines.append(
            Engine("pytorch eager (dense)", torch_run, args.torch_repeats, args.torch_steps)
        )
        total += args.torch_repeats
    time_interleaved(engines, progress)
    print(file=sys.stderr)
    kinds = [("kernel", b) for b in sizes] + [("stream", b) for b in sizes]
    results = [
        {**stats(e.name, e.times), "batch": b, "path": kind}
        for e, (kind, b) in zip(engines, kinds)  # the torch engine, if any, is reported apart
    ]
    torch_us = stats(engines[-1].name, engines[-1].times) if torch_run is not None else None
    for kind in ("kernel", "stream"):
        rows = [r for r in results if r["path"] == kind]
        for r in rows:
            r["speedup_vs_b1"] = rows[0]["min_us_per_sample"] / r["min_us_per_sample"]
    report = {
        "model": rt.name,
        "isa": rt.isa,
        "cpu": cpu_model(),
        "cpu_flags": sorted(f for f in REPORTED_FLAGS if f in cpu_flags()),
        "core": core,
        "calls_per_repeat": {str(b): n for b, n in calls.items()},
        "budget_us_per_sample": US_PER_SAMPLE_BUDGET,
        "results": results,
        "pytorch_eager_us_per_sample": torch_us["min_us_per_sample"] if torch_us else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {rt.name}, {rt.isa} module; cpu {report['cpu']}, pinned to core {core}")
    for kind, title in (("kernel", "kernel alone"), ("stream", "stream path (a worker's step)")):
        print(f"{title}, µs per sample per stream (min and median over repeats, interleaved)")
        print(f"{'batch':<8}{'min':>10}{'median':>10}{'vs B=1':>10}{'RT streams':>12}")
        for r in (r for r in results if r["path"] == kind):
            print(
                f"{r['batch']:<8}{r['min_us_per_sample']:>10.3f}"
                f"{r['median_us_per_sample']:>10.3f}{r['speedup_vs_b1']:>9.2f}x"
                f"{r['realtime_streams_per_core']:>12d}"
            )
    if torch_us is not None:
        t = torch_us["min_us_per_sample"]
        print(f"pytorch eager (dense), the same net, 1 thread: {t:.1f} µs/sample (same run)")
        for r in results:
            if r["path"] == "stream":
                print(f"  stream path B={r['batch']}: {t / r['min_us_per_sample']:.0f}x faster")
    return 0
