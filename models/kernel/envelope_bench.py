"""Time the envelope correction's frame: numpy against the compiled kernel (kernel/envelope.py).

    taskset -c 1 python -m models.kernel.envelope_bench --repeats 60

Prints, per variant (ISA level x dtype): microseconds per frame of one pass with the Python call
(what EnvelopeCorrector pays), the kernel alone (TVM's time_evaluator), and microseconds per
output sample of three passes fed 300-sample pushes with the shipped settings (clip 1.5,
smoothing 1.0), as a stream runs them. The variants run interleaved and each figure is a minimum
over repeats: the machine may be shared.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import tvm

from models.dsp.envelope import HOP, WIN, EnvelopeCorrector, OnsetCheck
from models.dsp.features import SPEC, log_mel
from models.kernel.envelope import EnvelopeModule
from models.kernel.isa import ISA_TARGETS, host_isas

PASSES, CLIP, SMOOTHING = 3, 1.5, 1.0


def _voice(n: int, seed: int) -> np.ndarray:
    """Harmonics of a gliding pitch under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SPEC.sample_rate
    phase = 2 * np.pi * np.cumsum(120.0 + 30.0 * np.sin(2 * np.pi * 3.0 * t)) / SPEC.sample_rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 40))
    return 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2) * voiced + 0.01 * rng.normal(size=n)


def _minimum(timers: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    best = {k: float("inf") for k in timers}
    for _ in range(repeats):
        for k, timer in timers.items():
            best[k] = min(best[k], timer())
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    frames = args.frames
    n = frames * HOP
    audio = _voice(n + WIN, 0)
    mel = log_mel(_voice(n + WIN, 1)).astype(np.float64)  # another voice's: the gains work

    def target(k: int) -> np.ndarray | None:
        return mel[k] if k < len(mel) else None

    modules = {
        f"{isa}-{dt}": EnvelopeModule.build(ISA_TARGETS[isa], dt)
        for isa in host_isas()
        if isa != "avx512vnni"  # the same code as avx512 here
        for dt in ("float64", "float32")
    }

    def frame_timer(name: str) -> Callable[[], float]:
        # one corrector, its onset check cached for every frame: frames of one pass
        onset = OnsetCheck(target, 4000.0, users=10**9)
        kernel = None if name == "numpy" else modules[name].frame()
        c = EnvelopeCorrector(target, CLIP, SMOOTHING, onset=onset, kernel=kernel)
        c.push(audio.astype(np.float32))  # fills the buffers and runs every frame once

        def timer() -> float:
            t0 = time.perf_counter_ns()
            for k in range(frames):
                c.frame_at(k, k * HOP)  # frame k reads from k HOP - WIN / 2 = base + k HOP
            return (time.perf_counter_ns() - t0) / frames / 1e3

        return timer

    def stream_timer(name: str) -> Callable[[], float]:
        def timer() -> float:
            onset = OnsetCheck(target, 4000.0, PASSES)
            cs = [
                EnvelopeCorrector(
                    target,
                    CLIP,
                    SMOOTHING,
                    onset=onset,
                    kernel=None if name == "numpy" else modules[name].frame(),
                )
                for _ in range(PASSES)
            ]
            pcm = audio[:n].astype(np.float32)
            t0 = time.perf_counter_ns()
            for f in range(frames):
                y = pcm[f * HOP : (f + 1) * HOP]
                for c in cs:
                    y = c.push(y)
            return (time.perf_counter_ns() - t0) / n / 1e3

        return timer

    names = ["numpy", *modules]
    per_frame = _minimum({k: frame_timer(k) for k in names}, args.repeats)
    per_sample = _minimum({k: stream_timer(k) for k in names}, max(args.repeats // 2, 1))
    alone: dict[str, float] = {}
    x = np.zeros(4 * WIN)
    x[: 4 * WIN] = audio[: 4 * WIN]
    for name, m in modules.items():
        frame = m.frame()
        xb, acc = frame.zeros(x.size), frame.zeros(x.size)
        xb[:] = x
        goal = tvm.runtime.tensor(np.ascontiguousarray(mel[2]))
        ev = m.module.mod.time_evaluator("main", tvm.cpu(), number=200, repeat=args.repeats)
        views = (tvm.runtime.from_dlpack(xb), tvm.runtime.from_dlpack(acc))
        res = ev(views[0], views[1], HOP, goal, SMOOTHING, CLIP, m.ftab, m.itab)
        alone[name] = min(res.results) * 1e6
    print(f"{'variant':16s} {'us/frame-pass':>14s} {'kernel alone':>13s} {'us/sample x3':>13s}")
    for name in names:
        k = f"{alone[name]:13.2f}" if name in alone else f"{'-':>13s}"
        print(f"{name:16s} {per_frame[name]:14.2f} {k} {per_sample[name]:13.3f}")


if __name__ == "__main__":
    main()
