"""The compiled envelope frame (models/kernel/envelope.py) against EnvelopeCorrector._frame."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tvm

from models.dsp.envelope import (
    DELAY_SAMPLES,
    HOP,
    WIN,
    EnvelopeCorrector,
    OnsetCheck,
    _tables,
    correct,
)
from models.dsp.features import SPEC, log_mel
from models.kernel.buffers import aligned
from models.kernel.envelope import EnvelopeModule, build_envelope_kernel
from models.kernel.isa import ISA_TARGETS, host_isas, host_target
from models.runtime import VocoderRuntime
from models.sample_mel import load_sample_mel
from models.vocoder.chain import SynthesisChain
from models.vocoder.config import VocoderConfig

pytestmark = pytest.mark.slow

SHIPPED = Path(__file__).resolve().parents[3] / "compiled" / "wavernn-slt"

# Output error over the signal's RMS: float64 is the same math to rounding, float32 to its own.
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
CLIP = 1.0
# The same over three whole passes, on float32 output samples (a float32 rounding is ~6e-8 of a
# sample, so float64 is bounded by the output's own precision there).
PASSES_TOLERANCE = {"float64": 1e-6, "float32": 1e-5}


def speech_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a gliding pitch under a syllable-rate envelope, plus a little noise."""
    t = np.arange(n) / SPEC.sample_rate
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SPEC.sample_rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 40))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return 0.3 * env * voiced + 0.01 * rng.normal(size=n)


def signals(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "noise": 0.1 * rng.normal(size=n),
        "speech": speech_like(n, rng),
        "quiet": 1e-6 * rng.normal(size=n),  # mels under the log floor
    }


def goals_for(x: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Targets near each frame's own log-mel (some gains inside the clip, some beyond it)."""
    t = _tables()
    out = np.empty((frames, t.n_mels))
    pad = np.zeros(2 * (SPEC.n_fft // 2))
    for k in range(frames):
        pad[:WIN] = x[k * HOP : k * HOP + WIN] * t.window
        mel = t.mel(np.abs(np.fft.rfft(pad)))
        out[k] = np.log(np.maximum(mel, SPEC.log_floor)) + rng.normal(0.0, 0.8, t.n_mels)
    return out


# The two lowest ISA levels this CPU runs (both vector widths on an AVX-512 machine), or the
# generic x86-64 / aarch64 target where it runs none of them.
TARGETS = {isa: ISA_TARGETS[isa] for isa in host_isas()[-2:]} or {"host": host_target()}


@pytest.fixture(scope="module", params=[(isa, dt) for isa in TARGETS for dt in TOLERANCE])
def kernel(request):
    isa, dtype = request.param
    mod, lay = build_envelope_kernel(TARGETS[isa], dtype)
    ftab, itab = lay.tables(dtype)
    return dtype, mod["main"], tvm.runtime.tensor(ftab), tvm.runtime.tensor(itab)


@pytest.mark.parametrize("kind", ["noise", "speech", "quiet"])
@pytest.mark.parametrize("smoothing", [0.0, 0.7])
def test_frames_match_numpy(kernel, kind: str, smoothing: float) -> None:
    dtype, fn, ftab, itab = kernel
    rng = np.random.default_rng(7)
    frames = 12
    x = signals(rng, frames * HOP + WIN)[kind]
    goals = goals_for(x, frames, rng)

    def target(k: int) -> np.ndarray | None:
        return goals[k] if k < frames else None

    ref = EnvelopeCorrector(target, CLIP, smoothing)
    onset = OnsetCheck(target, 4000.0) if smoothing else None  # the kernel's own, same target
    xb = aligned((x.size + 64,), np.float64)
    xb[: x.size] = x
    acc = aligned((x.size + 64,), np.float64)
    goal = aligned((goals.shape[1],), np.float64)
    worst, shares = 0.0, []
    for k in range(frames):
        lo = k * HOP  # frame k reads x[k HOP : k HOP + WIN] (buffer offsets, as frame_at's lo)
        ref._x[lo : lo + WIN] = x[lo : lo + WIN]
        ref._acc[:] = 0.0
        ref.frame_at(k, lo)
        share = smoothing * onset.steadiness(k) if smoothing else 0.0
        shares.append(share)
        acc[:] = 0.0
        goal[:] = goals[k]
        fn(
            tvm.runtime.from_dlpack(xb),
            tvm.runtime.from_dlpack(acc),
            lo,
            tvm.runtime.from_dlpack(goal),
            share,
            CLIP,
            ftab,
            itab,
        )
        want = ref._acc[lo : lo + WIN]
        got = acc[lo : lo + WIN]
        assert not acc[:lo].any() and not acc[lo + WIN :].any(), "wrote outside its frame"
        rms = np.sqrt(np.mean(x[lo : lo + WIN] ** 2))
        worst = max(worst, float(np.max(np.abs(got - want)) / rms))
    assert (max(shares) > 0) == (smoothing > 0), "the smoothing's branch was not exercised"
    assert worst < TOLERANCE[dtype], f"{kind}: max error / RMS {worst:.3g}"


@pytest.fixture(scope="module", params=list(TOLERANCE))
def compiled(request) -> EnvelopeModule:
    return EnvelopeModule.build(next(iter(TARGETS.values())), request.param)


def test_passes_with_the_kernel_match_numpy(compiled: EnvelopeModule) -> None:
    """Three passes with the shipped settings over an utterance whose target is another voice's
    mel (gains up to the clip, the smoothing and its onset fade at work), pushed in uneven
    chunks so the buffers grow and compact under the kernel's views."""
    rng = np.random.default_rng(3)
    n = 90 * HOP
    audio = speech_like(n, rng).astype(np.float32)
    other = speech_like(n, np.random.default_rng(4))
    other[n // 3 : n // 2] *= 0.05  # a quiet stretch: onsets and offsets
    mel = log_mel(other).astype(np.float64)
    passes, clip, smoothing = 3, 1.5, 1.0
    want = correct(audio, mel, passes, clip, smoothing)
    whole = correct(audio, mel, passes, clip, smoothing, kernel=compiled.frame())  # one shared

    def target(k: int) -> np.ndarray | None:
        return mel[k] if k < len(mel) else None

    onset = OnsetCheck(target, 4000.0, passes)
    y = audio
    for _ in range(passes):
        c = EnvelopeCorrector(target, clip, smoothing, onset=onset, kernel=compiled.frame())
        cuts = np.cumsum(rng.integers(1, 3 * HOP, size=n))
        cuts = cuts[cuts < y.size]
        y = np.concatenate([c.push(part) for part in np.split(y, cuts)] + [c.finish()])
    rms = float(np.sqrt(np.mean(want.astype(np.float64) ** 2)))
    assert whole.shape == want.shape == y.shape
    assert np.max(np.abs(want - audio)) > 0.1 * rms, "the passes changed nothing"
    for got in (whole, y):
        err = float(np.max(np.abs(got.astype(np.float64) - want)) / rms)
    assert err < PASSES_TOLERANCE[compiled.dtype], f"max error / RMS {err:.3g}"


def test_kernel_built_for_another_band_is_refused(compiled: EnvelopeModule) -> None:
    with pytest.raises(ValueError, match="smoothing_hz"):
        EnvelopeCorrector(lambda k: None, 1.0, 1.0, smoothing_hz=3000.0, kernel=compiled.frame())


def test_frame_outside_the_buffers_is_refused(compiled: EnvelopeModule) -> None:
    frame = compiled.frame()
    x, acc = frame.zeros(2 * WIN), frame.zeros(2 * WIN)
    goal = np.zeros(_tables().n_mels)
    frame(x, acc, WIN, goal, 0.0, 1.0)  # the last frame that fits
    with pytest.raises(ValueError, match="outside"):
        frame(x, acc, WIN + 1, goal, 0.0, 1.0)
    with pytest.raises(ValueError, match="outside"):
        frame(x, frame.zeros(WIN), 0, goal, 0.0, 1.0)


@pytest.mark.parametrize("smoothing", [None, 1.0])
def test_chain_with_the_kernel_matches_numpy(
    compiled: EnvelopeModule, smoothing: float | None
) -> None:
    """The shipped voice's post-kernel chain (postfilter, advance, the envelope passes), driven
    frame by frame as a stream drives it, with the compiled envelope against numpy; as shipped,
    and with the smoothing above 4 kHz (and its onset check) on."""
    config = VocoderConfig.load(SHIPPED / "config.json")
    if smoothing is not None:
        config = dataclasses.replace(config, envelope_smoothing=smoothing)
    assert config.envelope_passes
    hop, frames = config.hop_length, 80
    rng = np.random.default_rng(5)
    pcm = speech_like(frames * hop, rng).astype(np.float32)
    mel = log_mel(speech_like(frames * hop, np.random.default_rng(6))).astype(np.float64)
    f0 = np.full(frames, 130.0)
    voicing = (np.arange(frames) % 20 < 14).astype(np.float64)  # voiced and unvoiced stretches

    def run(kernel: EnvelopeModule | None) -> np.ndarray:
        chain = SynthesisChain(
            config,
            lambda k: mel[k] if k < len(mel) else None,
            None if kernel is None else kernel.frame,
        )
        out = [
            chain.frame(pcm[f * hop : (f + 1) * hop], f0[f : f + 1], voicing[f : f + 1])
            for f in range(frames)
        ]
        return np.concatenate([*out, chain.finish()])

    want, got = run(None), run(compiled)
    assert want.shape == got.shape == (frames * hop,)
    rms = float(np.sqrt(np.mean(want.astype(np.float64) ** 2)))
    err = float(np.max(np.abs(got.astype(np.float64) - want)) / rms)
    assert err < PASSES_TOLERANCE[compiled.dtype], f"max error / RMS {err:.3g}"


def test_stream_audio_with_the_kernel_matches_numpy(compiled: EnvelopeModule) -> None:
    """The shipped voice's stream (kernel frames, postfilter, three passes) on the sample mel,
    with its chain rebuilt around the compiled envelope: the runtime has no switch for it yet,
    so the test swaps the stream's chain before the first push."""
    rt = VocoderRuntime.load(SHIPPED)
    mel = load_sample_mel()[:60]

    def audio(kernel: EnvelopeModule | None) -> np.ndarray:
        s = rt.open_stream(seed=3)
        if kernel is not None:
            s._chain = SynthesisChain(rt.config, s._target_mel, kernel.frame)
        s.push(mel)
        s.finish()
        out = []
        while not s.finished:
            out.append(s.step())
        return np.concatenate(out)

    want, got = audio(None), audio(compiled)
    assert want.shape == got.shape and want.size >= 50 * rt.config.hop_length
    rms = float(np.sqrt(np.mean(want.astype(np.float64) ** 2)))
    err = float(np.max(np.abs(got.astype(np.float64) - want)) / rms)
    assert err < PASSES_TOLERANCE[compiled.dtype], f"max error / RMS {err:.3g}"


@pytest.mark.parametrize(
    "chunks", [[1, 7, 299, 301, 0], [300], [13, 1200, 2, 5000], [40 * WIN, 1, 300]]
)
def test_kernel_passes_stream_in_any_chunks_as_whole(
    compiled: EnvelopeModule, chunks: list[int]
) -> None:
    """Three passes on the compiled frame, with a float32 target (as a stream's mel), fed in
    odd pieces (single samples, empty pushes, pushes that complete several frames or grow the
    buffers under the frame's views) give the samples of the whole utterance fed at once, bit
    for bit: each push returns what is final, within DELAY_SAMPLES, and finish() the rest."""
    rng = np.random.default_rng(8)
    n = 70 * HOP + 41
    audio = speech_like(n, rng).astype(np.float32)
    other = speech_like(n, np.random.default_rng(9))
    other[n // 3 : n // 2] *= 0.05  # onsets and offsets: the smoothing's share moves
    mel = log_mel(other).astype(np.float32)[:-3]  # the last frames pass unchanged
    passes, clip, smoothing = 3, 1.5, 1.0
    whole = correct(audio, mel, passes, clip, smoothing, kernel=compiled.frame())

    def target(k: int) -> np.ndarray | None:
        return mel[k] if k < len(mel) else None

    onset = OnsetCheck(target, 4000.0, passes)
    correctors = [
        EnvelopeCorrector(target, clip, smoothing, onset=onset, kernel=compiled.frame())
        for _ in range(passes)
    ]
    parts, at, i = [], 0, 0
    while at < n:
        y = audio[at : at + chunks[i % len(chunks)]]
        at, i = at + y.size, i + 1
        for c in correctors:
            y = c.push(y)
        parts.append(y)
        assert at - passes * DELAY_SAMPLES <= sum(p.size for p in parts) <= at
    y = np.zeros(0, np.float32)
    for c in correctors:
        y = np.concatenate([c.push(y), c.finish()])
    got = np.concatenate([*parts, y])
    assert got.dtype == np.float32 and got.shape == (n,)
    assert got.tobytes() == whole.tobytes()
    assert np.max(np.abs(got - audio)) > 0.01, "the passes changed nothing"
    with pytest.raises(RuntimeError):
        correctors[0].push(audio[:10])
