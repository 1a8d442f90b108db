"""`sparrow bench --stages`: where a worker's time per frame goes, stage by stage.

A server worker runs `float_to_pcm16(stream.step())` per frame (server/workers/worker.py). Here
that whole call is timed on one prepared stream ("whole step"), and on a second stream with the
same mel and seed the same frames are made by calling the step's stages one by one, each timed:
the conditioning network and the LPC fit + pitch + source (both made in batches ahead of need, so
their cost per frame is amortised as in a stream), the kernel's inputs, the RNG, the kernel call,
the redraw check, the pitch postfilter, each envelope pass and the PCM16 conversion. What the
whole step costs beyond the stages' sum is the Python glue between them (queues of held output,
counters, slicing). The stages run in the same order and on the same objects as a stream's own
step (models/stream.py, models/vocoder/chain.py), from inside a stream's state; output_advance
only trims the first frame, so in steady state it is part of the glue.

Each envelope pass running numpy is also broken down (all passes together) into its two FFTs,
the onset check, the band gathers/spreads and the rest (elementwise steps, buffer moves), the
first three timed on their own on data of the pass's shape. The report says which of the
envelope passes and the pitch postfilter run compiled (the runtime's compiled_chain).

The LPC fit + pitch + source runs once per LPC_BATCH frames (models/stream.py); the timed frames
all lie within the first fit's batch, and both the whole step and its stage are charged their
share of one such fit, timed on its own in every round.

Machines are shared and noisy: every figure is the minimum over repeats of the µs/sample summed
over one repeat's frames, and the repeats of the whole step and of the stages are interleaved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from models.dsp import envelope as env
from models.dsp.features import US_PER_SAMPLE_BUDGET
from models.runtime import VocoderRuntime
from models.sample_mel import load_sample_mel, tile_mel
from models.stream import LOOKAHEAD, LPC_BATCH, VocoderStream
from models.vocoder.chain import frames_ahead, reaches_full_scale

log = logging.getLogger(__name__)

FIT = "LPC fit + pitch + source (batched)"
BREAKDOWN = ("envelope FFTs", "envelope onset check", "envelope gather/spread")


def _pcm16() -> Callable[[np.ndarray], bytes]:
    # The worker's own conversion (imported here: models/ does not import server/ otherwise).
    from server.audio import float_to_pcm16

    return float_to_pcm16


class _Clock:
    """Accumulates perf_counter seconds per stage name."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._t = time.perf_counter()

    def start(self) -> None:
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.spent[name] = self.spent.get(name, 0.0) + now - self._t
        self._t = now


def _prepared_stream(rt: VocoderRuntime, mel: np.ndarray, preroll: int) -> VocoderStream:
    s = rt.open_stream(seed=0)
    s.push(mel)
    for _ in range(preroll):
        s.step()
    return s


def _whole_steps(s: VocoderStream, frames: int, to_pcm16: Callable[[np.ndarray], bytes]) -> float:
    t0 = time.perf_counter()
    for _ in range(frames):
        to_pcm16(s.step())
    return time.perf_counter() - t0


def _batch_fit(rt: VocoderRuntime, mel: np.ndarray) -> float:
    """Seconds of one stream fit of LPC_BATCH frames (LPC, pitch, source, logit scales): a stream
    makes one such fit per LPC_BATCH frames, so a repeat of fewer frames may hold none."""
    s = rt.open_stream(seed=0)
    s.push(mel[:LPC_BATCH])
    t0 = time.perf_counter()
    s._fit_through(0)
    return time.perf_counter() - t0


def _staged_frame(s: VocoderStream, clock: _Clock, to_pcm16: Callable[[np.ndarray], bytes]) -> None:
    """One kernel frame through the stages of VocoderStream._more / SynthesisChain.frame, each
    timed (steady state: the frame is not the first, and the mel is long enough)."""
    rt, chain = s.runtime, s._chain
    f = s._kernel_done
    clock.start()
    s._condition_through(f)
    clock.lap("conditioning network (batched)")
    s._fit_through(f)
    clock.lap(FIT)
    s._prepare_kernel(f)
    cond, lpc, src = s._lone_call()  # a lone stream's call: its views and logit-scaled weights
    clock.lap("kernel inputs (logit scales, source)")
    s._rng.random(dtype=np.float32, out=s._uniforms_np)
    clock.lap("RNG uniforms")
    rt.run_frame(
        cond, lpc, src, s._uniforms, s._h, s._x, s._out, s._pcm, s._weight_args
    )  # fmt: skip
    clock.lap("kernel call")
    if s.config.clip_retries:
        s._save_state()
    reaches_full_scale(s._pcm_np)
    clock.lap("redraw check (+ state copy)")
    pcm = s._pcm_np
    s._kernel_done += 1
    at = f - s._fit_first
    f0, voicing = s._pitch_batch[:, at : at + 1]
    if chain.postfilter is not None:
        y = chain._filter(pcm, f0, voicing)  # the compiled frame's, or numpy's
    else:
        y = np.array(pcm, dtype=np.float32)
    clock.lap("pitch postfilter")
    for i, corrector in enumerate(chain.envelope):
        y = corrector.push(y)
        clock.lap(f"envelope pass {i + 1}")
    to_pcm16(y)
    clock.lap("PCM16 conversion")


def _envelope_breakdown(s: VocoderStream, shadow: env.OnsetCheck | None, clock: _Clock) -> None:
    """The envelope passes' FFTs and gathers/spreads, each timed on its own for every pass (on
    data of its shape; their costs do not depend on the values), and the onset check, which the
    passes share, once for the frame the first pass just made (on a copy with its own cache)."""
    t = env._tables()
    for corrector in s._chain.envelope:
        pad = np.zeros(env.N_FFT)
        clock.start()
        spec = np.fft.rfft(pad)
        np.fft.irfft(spec, env.N_FFT)
        clock.lap("envelope FFTs")
        mag = np.abs(spec)
        clock.start()
        mel = t.mel(mag)
        t.bins(mel)
        if corrector.smoothing:
            t.bins(mel, corrector._smooth_from)
        clock.lap("envelope gather/spread")
    if shadow is not None:
        j = s._chain.envelope[0]._next - 1
        clock.start()
        shadow.steadiness(j)
        clock.lap("envelope onset check")


def _onset_shadow(s: VocoderStream) -> env.OnsetCheck | None:
    """A copy of the passes' shared onset check, with its own cache, brought to where the first
    pass is (timed apart from it)."""
    c = s.config
    first = s._chain.envelope[0] if s._chain.envelope else None
    if first is None or not first.smoothing:
        return None
    shadow = env.OnsetCheck(s._target_mel, c.envelope_smoothing_hz)
    if first._next:
        shadow.steadiness(first._next - 1)
    return shadow


def stage_report(rt: VocoderRuntime, frames: int, repeats: int) -> dict[str, Any]:
    """Per-stage µs/sample (min over repeats) of `frames` steady-state frames, with shares of the
    whole step and same-run ratios."""
    config = rt.config
    to_pcm16 = _pcm16()
    preroll = frames_ahead(config) + 1
    # The mel fits in one LPC batch, so no fit falls inside the timed frames and each path is
    # charged exactly its share of one (more frames would charge some repeats a fit twice).
    extra = LOOKAHEAD + frames_ahead(config) + preroll + 1
    if frames + extra > LPC_BATCH:
        log.warning("--stages times at most %d frames per repeat", LPC_BATCH - extra)
        frames = max(1, LPC_BATCH - extra)
    mel = tile_mel(load_sample_mel(), LPC_BATCH)
    samples = frames * config.hop_length
    whole: list[float] = []
    staged: list[dict[str, float]] = []
    for r in range(repeats + 1):  # the first round warms up
        s = _prepared_stream(rt, mel, preroll)
        took = _whole_steps(s, frames, to_pcm16)
        # each path pays its share of a batch fit (timed in this round), as a long stream does
        fit = _batch_fit(rt, mel) * frames / LPC_BATCH
        took += fit
        s = _prepared_stream(rt, mel, preroll)
        # the compiled frame has no numpy steps to break down
        compiled = any(c.kernel is not None for c in s._chain.envelope)
        shadow = _onset_shadow(s)
        clock = _Clock()
        for _ in range(frames):
            _staged_frame(s, clock, to_pcm16)
            if not compiled:
                _envelope_breakdown(s, shadow, clock)
        clock.spent[FIT] += fit
        if r:
            whole.append(took)
            staged.append(clock.spent)
    us = 1e6 / samples
    stage_names = [n for n in staged[0] if n not in BREAKDOWN]
    stages = {n: min(run[n] for run in staged) * us for n in stage_names}
    total = min(whole) * us
    stages["Python glue (whole step - stages)"] = total - sum(stages.values())
    envelope = sum(v for n, v in stages.items() if n.startswith("envelope pass"))
    breakdown = {}
    if envelope and not compiled:
        breakdown = {n: min(run.get(n, 0.0) for run in staged) * us for n in BREAKDOWN}
        breakdown["envelope rest (elementwise, buffers)"] = envelope - sum(breakdown.values())
    kernel = stages["kernel call"]
    return {
        "model": rt.name,
        "isa": rt.isa,
        "frames": frames,
        "repeats": repeats,
        "budget_us_per_sample": US_PER_SAMPLE_BUDGET,
        "stages": [
            {"stage": n, "min_us_per_sample": v, "share": v / total} for n, v in stages.items()
        ],
        "envelope_compiled": compiled,
        "postfilter_compiled": bool(s._chain.postfilter and s._chain.postfilter.reuses_output),
        "envelope_breakdown": [
            {"stage": n, "min_us_per_sample": v, "share": v / total} for n, v in breakdown.items()
        ],
        "whole_step_us_per_sample": total,
        "whole_step_median_us_per_sample": float(np.median(whole)) * us,
        "budget_share": total / US_PER_SAMPLE_BUDGET,
        "realtime_streams_per_core": int(US_PER_SAMPLE_BUDGET // total),
        "ratios": {
            "whole step / kernel call": total / kernel,
            "post-kernel chain / kernel call": (
                sum(v for n, v in stages.items() if n.startswith(("envelope", "pitch", "redraw")))
                / kernel
            ),
            "envelope passes / kernel call": envelope / kernel,
        },
    }


def format_stages(report: dict[str, Any]) -> str:
    lines = [
        (
            f"model {report['model']} ({report['isa']}), {report['frames']} frames x "
            f"{report['repeats']} repeats, min over repeats"
        ),
        "",
        f"{'stage':<42}{'us/sample':>10}{'share':>9}",
    ]
    for row in report["stages"]:
        lines.append(f"{row['stage']:<42}{row['min_us_per_sample']:>10.3f}{row['share']:>9.1%}")
    lines.append(f"{'whole step (worker: float_to_pcm16(step()))':<42}"
                 f"{report['whole_step_us_per_sample']:>10.3f}{1:>9.1%}")  # fmt: skip
    if report["postfilter_compiled"]:
        lines += ["", "pitch postfilter: the compiled frame (models/kernel/postfilter.py)"]
    if report["envelope_compiled"]:
        lines += ["", "envelope passes: the compiled frame (models/kernel/envelope.py)"]
    elif report["envelope_breakdown"]:
        lines += ["", "envelope passes, all together:"]
    for row in report["envelope_breakdown"]:
        lines.append(f"  {row['stage']:<40}{row['min_us_per_sample']:>10.3f}{row['share']:>9.1%}")
    lines += [
        "",
        (
            f"whole step {report['whole_step_us_per_sample']:.2f} us/sample (median "
            f"{report['whole_step_median_us_per_sample']:.2f}) = {report['budget_share']:.1%} of the "
            f"{report['budget_us_per_sample']:.0f} us budget: {report['realtime_streams_per_core']} "
            "real-time streams per core"
        ),
    ]
    for name, value in report["ratios"].items():
        lines.append(f"{name}: {value:.2f}x")
    return "\n".join(lines)
