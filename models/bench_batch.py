"""`sparrow bench --batch 1,2,4,8`: the kernel alone advancing B streams a frame per call
(models/kernel/batch.py), in µs per sample per stream, each B's calls interleaved with the others'
(B = 1 always among them) so that the ratios compare figures from the same moments. A repeat
makes about --frames frames in all at every B. On a machine shared with busy neighbours, short
repeats (--frames 1 --repeats 300) find the quiet moments; long ones measure the contention too.
"""

from __future__ import annotations

import argparse
import json
import sys

from models.bench import (
    REPORTED_FLAGS,
    Engine,
    cpu_model,
    kernel_engine,
    stats,
    time_interleaved,
)
from models.dsp.features import US_PER_SAMPLE_BUDGET
from models.kernel.isa import cpu_flags
from models.runtime import VocoderRuntime


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
    time_interleaved(engines, progress)
    print(file=sys.stderr)
    results = [{**stats(e.name, e.times), "batch": b} for e, b in zip(engines, sizes, strict=True)]
    alone = results[0]["min_us_per_sample"]
    for r in results:
        r["speedup_vs_b1"] = alone / r["min_us_per_sample"]
    report = {
        "model": rt.name,
        "isa": rt.isa,
        "cpu": cpu_model(),
        "cpu_flags": sorted(f for f in REPORTED_FLAGS if f in cpu_flags()),
        "core": core,
        "calls_per_repeat": {str(b): n for b, n in calls.items()},
        "budget_us_per_sample": US_PER_SAMPLE_BUDGET,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {rt.name}, {rt.isa} module; cpu {report['cpu']}, pinned to core {core}")
    print("kernel alone, µs per sample per stream (min and median over repeats, interleaved)")
    print(f"{'batch':<8}{'min':>10}{'median':>10}{'vs B=1':>10}{'RT streams':>12}")
    for r in results:
        print(
            f"{r['batch']:<8}{r['min_us_per_sample']:>10.3f}{r['median_us_per_sample']:>10.3f}"
            f"{r['speedup_vs_b1']:>9.2f}x{r['realtime_streams_per_core']:>12d}"
        )
    return 0
