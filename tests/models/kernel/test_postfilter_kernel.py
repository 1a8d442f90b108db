"""The compiled pitch postfilter frame (models/kernel/postfilter.py) against PitchPostfilter's
numpy, bit for bit: frame by frame, through the chain, and in a runtime's streams."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bench import speech_mel
from models.dsp.pitch import PITCH_RANGE_HZ
from models.dsp.postfilter import PitchPostfilter
from models.kernel.buffers import aligned
from models.kernel.chain_load import prebuild
from models.kernel.isa import ISA_TARGETS, host_isas, host_target
from models.kernel.postfilter import PostfilterModule, build_postfilter_kernel
from models.runtime import VocoderRuntime
from models.vocoder.chain import SynthesisChain
from models.vocoder.config import TINY, VocoderConfig
from models.vocoder.reference import vocode

SHIPPED = Path(__file__).resolve().parents[3] / "compiled" / "wavernn-slt"
RATE, HOP = 24000, 300
LO, HI = PITCH_RANGE_HZ

# The two lowest ISA levels this CPU runs (both vector widths on an AVX-512 machine), or the
# generic x86-64 / aarch64 target where it runs none of them.
TARGETS = {isa: ISA_TARGETS[isa] for isa in host_isas()[-2:]} or {"host": host_target()}


@pytest.fixture(scope="module", params=list(TARGETS))
def compiled(request) -> PostfilterModule:
    return PostfilterModule.build(TARGETS[request.param])


def bits(a: np.ndarray) -> np.ndarray:
    """The float32 samples' bit patterns: -0.0 and 0.0 differ, NaN equals itself."""
    assert a.dtype == np.float32
    return a.view(np.uint32)


def speech_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a gliding pitch plus a little noise, float32 in [-1, 1]."""
    f0 = 150.0 + 40.0 * np.sin(2 * np.pi * 2.0 * np.arange(n) / RATE)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(h * phase) / h for h in range(1, 20)) * 0.3 + 0.02 * rng.normal(size=n)
    return np.clip(x, -1, 1).astype(np.float32)


def f0_cases(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random F0s in PITCH_RANGE_HZ, with its edges (whole-sample periods: the interpolation's
    grid-point case) and whole periods in between among them."""
    f0 = rng.uniform(LO, HI, n)
    f0[::7] = LO
    f0[3::7] = HI
    f0[5::11] = RATE / rng.integers(round(RATE / HI), round(RATE / LO) + 1, f0[5::11].size)
    return f0


def test_a_stream_of_random_frames_matches_numpy(compiled: PostfilterModule) -> None:
    """Consecutive frames (the history carried between calls) of speech-like and uniform noise
    input, random F0 and voicing (0, 1 and in between) and strengths, each frame bit for bit."""
    rng = np.random.default_rng(0)
    for strength in (0.7, 1.0, 0.05):
        ref = PitchPostfilter(strength, RATE, HOP)
        kernel = compiled.frame(RATE, HOP, ref._history.size)
        frames = 300
        f0 = f0_cases(rng, frames)
        voicing = rng.choice([0.0, 1.0, 0.5], frames) * (rng.uniform(size=frames) > 0.3)
        voicing[rng.uniform(size=frames) < 0.3] = rng.uniform()
        pcm = speech_like(frames * HOP, rng)
        pcm[frames // 2 * HOP :] = rng.uniform(-1, 1, (frames - frames // 2) * HOP)
        changed = 0
        for f in range(frames):
            x = pcm[f * HOP : (f + 1) * HOP]
            want = ref(x, f0[f : f + 1], voicing[f : f + 1])
            got = kernel(x, float(f0[f]), float(voicing[f]), strength)
            assert np.array_equal(bits(got), bits(want)), f"strength {strength}, frame {f}"
            changed += not np.array_equal(want, x)
        assert np.array_equal(kernel.history, ref._history)
        assert changed > frames // 2, "the comb changed hardly any frame"


def test_strength_zero_passes_the_frame_and_keeps_the_history(
    compiled: PostfilterModule,
) -> None:
    rng = np.random.default_rng(1)
    ref = PitchPostfilter(0.7, RATE, HOP)
    kernel = compiled.frame(RATE, HOP, ref._history.size)
    for f in range(5):
        x = rng.uniform(-1, 1, HOP).astype(np.float32)
        x[::17] = -0.0
        got = kernel(x, 150.0, 1.0, 0.0)
        assert np.array_equal(bits(got), bits(x))
        ref(x, np.array([150.0]), np.array([1.0]))  # the same history, filtering on
    assert np.array_equal(kernel.history, ref._history)
    x = rng.uniform(-1, 1, HOP).astype(np.float32)  # the next frame combs that history
    want = ref(x, np.array([LO]), np.array([1.0]))
    assert np.array_equal(bits(kernel(x, LO, 1.0, 0.7)), bits(want))


def test_silence_and_signed_zeros_match_numpy(compiled: PostfilterModule) -> None:
    """chain.finish()'s frame: silence after speech, unvoiced at the last F0; then frames of
    zeros of both signs, where the comb's sum decides a zero's sign (-0.0 comes out where the
    period is whole, so the delayed sample is a -0.0 itself)."""
    rng = np.random.default_rng(2)
    ref = PitchPostfilter(0.7, RATE, HOP)
    kernel = compiled.frame(RATE, HOP, ref._history.size)
    speech = speech_like(4 * HOP, rng)
    frames = [speech[k * HOP : (k + 1) * HOP] for k in range(4)]
    frames.append(np.zeros(HOP, np.float32))
    signed = np.zeros(HOP, np.float32)
    signed[rng.uniform(size=HOP) < 0.5] = -0.0
    frames += [signed, -signed, signed, np.zeros(HOP, np.float32)]
    f0 = [171.0] * 5 + [200.0, 171.0, 200.0, 200.0]
    zeros = []
    for k, x in enumerate(frames):
        voicing = 0.0 if k == 4 else 1.0
        want = ref(x, np.array([f0[k]]), np.array([voicing]))
        got = kernel(x, f0[k], voicing, 0.7)
        assert np.array_equal(bits(got), bits(want)), f"frame {k}"
        zeros.append(got[got == 0])
    signs = np.signbit(np.concatenate(zeros))
    assert signs.any() and not signs.all(), "no zeros of both signs came out"


def test_f0_outside_the_range_matches_numpys_ends(compiled: PostfilterModule) -> None:
    """np.interp's end values where the period reaches past the history (low F0) or is under a
    sample (high F0): the kernel never reads outside its buffer and gives the same."""
    rng = np.random.default_rng(3)
    ref = PitchPostfilter(0.7, RATE, HOP)
    kernel = compiled.frame(RATE, HOP, ref._history.size)
    past = ref._history.size
    for f0 in (50.0, RATE / past, RATE / (past - 0.5), 5000.0, RATE, 1e6, 0.0, -100.0):
        x = rng.uniform(-1, 1, HOP).astype(np.float32)
        with np.errstate(divide="ignore"):
            want = ref(x, np.array([f0]), np.array([1.0]))
        got = kernel(x, f0, 1.0, 0.7)
        assert np.array_equal(bits(got), bits(want)), f"F0 {f0}"


def test_inputs_viewed_in_place_or_copied(compiled: PostfilterModule) -> None:
    """The stream's pattern (one aligned buffer, refilled every frame, viewed once) and
    unaligned slices (copied) give the same frames; a wrong dtype or length is refused."""
    rng = np.random.default_rng(4)
    ref = PitchPostfilter(0.7, RATE, HOP)
    kernel = compiled.frame(RATE, HOP, ref._history.size)
    buf = aligned((HOP,), np.float32)
    raw = np.zeros(HOP + 1, np.float32)
    for f in range(12):
        x = rng.uniform(-1, 1, HOP).astype(np.float32)
        if f % 3:
            buf[:] = x
            arg = buf
        else:
            raw[1:] = x
            arg = raw[1:]  # 4 bytes past an allocation: never 64-byte aligned
        want = ref(x, np.array([200.0 + f]), np.array([1.0]))
        assert np.array_equal(bits(kernel(arg, 200.0 + f, 1.0, 0.7)), bits(want))
    with pytest.raises(ValueError, match="float32"):
        kernel(np.zeros(HOP), 150.0, 1.0, 0.7)
    with pytest.raises(ValueError, match="float32"):
        kernel(np.zeros(HOP - 1, np.float32), 150.0, 1.0, 0.7)


def test_postfilter_with_the_kernel_matches_numpy_over_several_frames(
    compiled: PostfilterModule,
) -> None:
    rng = np.random.default_rng(5)
    ref = PitchPostfilter(0.7, RATE, HOP)
    fast = PitchPostfilter(0.7, RATE, HOP, kernel=compiled.frame)
    assert fast.reuses_output and not ref.reuses_output
    for k in (3, 1, 5):
        x = speech_like(k * HOP, rng)
        f0, voicing = f0_cases(rng, k), rng.uniform(size=k)
        assert np.array_equal(bits(fast(x, f0, voicing)), bits(ref(x, f0, voicing)))
    # the lowpass path and strength 0 ignore the kernel: numpy
    assert not PitchPostfilter(0.7, RATE, HOP, 2000.0, compiled.frame).reuses_output
    assert not PitchPostfilter(0.0, RATE, HOP, kernel=compiled.frame).reuses_output


@pytest.mark.parametrize("passes", [0, 1])
def test_chain_with_the_kernel_matches_numpy(compiled: PostfilterModule, passes: int) -> None:
    """The shipped voice's chain driven as a stream drives it, with and without envelope passes
    (without them the chain copies the kernel's output, which the next frame overwrites),
    through finish()'s silence frame; all output kept until the end."""
    shipped = VocoderConfig.load(SHIPPED / "config.json")
    config = dataclasses.replace(shipped, envelope_passes=passes)
    assert config.pitch_postfilter and not config.pitch_postfilter_cutoff_hz
    assert config.output_advance, "finish() would run no silence frame"
    frames = 40
    rng = np.random.default_rng(6)
    pcm = speech_like(frames * HOP, rng)
    f0 = f0_cases(rng, frames)
    voicing = (np.arange(frames) % 10 < 7).astype(np.float64)
    mel = speech_mel(frames).astype(np.float64)

    def run(kernel: PostfilterModule | None) -> list[np.ndarray]:
        chain = SynthesisChain(
            config,
            lambda k: mel[k] if k < frames else None,
            postfilter_kernel=None if kernel is None else kernel.frame,
        )
        assert (chain.postfilter.reuses_output) == (kernel is not None)
        buf = aligned((HOP,), np.float32)  # one buffer, refilled: as the stream's kernel PCM
        out = []
        for f in range(frames):
            buf[:] = pcm[f * HOP : (f + 1) * HOP]
            out.append(chain.frame(buf, f0[f : f + 1], voicing[f : f + 1]))
        return [*out, chain.finish()]

    want, got = run(None), run(compiled)
    assert [a.size for a in got] == [a.size for a in want]
    assert np.array_equal(bits(np.concatenate(got)), bits(np.concatenate(want)))


def test_no_fused_multiply_add_in_the_compiled_frame() -> None:
    """numpy rounds a product and the sum it feeds apart; an FMA rounds once. float32 output
    shows the difference only in rare samples (the frame tests may miss it), the code always."""
    for target in TARGETS.values():
        asm = build_postfilter_kernel(target).mod.inspect_source("asm")
        assert "div" in asm  # the comb's division: this is the frame's code
        assert not re.search(r"\bv?f(n)?m(add|sub)\w*", asm)


def test_shipped_voice_streams_run_the_compiled_postfilter(tmp_path: Path) -> None:
    """What the golden test's audio goes through: the shipped voice's streams use the kernel
    (built into the cache directory); with compiled_chain off they use numpy."""
    rt = VocoderRuntime.load(SHIPPED, cache_dir=tmp_path)
    assert rt.open_stream()._chain.postfilter.reuses_output
    assert list((tmp_path / "postfilter").glob(f"{rt.isa}-*.so"))
    rt.compiled_chain = False
    chain = rt.open_stream()._chain
    assert not chain.postfilter.reuses_output and all(p.kernel is None for p in chain.envelope)


def test_tiny_streams_with_the_postfilter_match_the_reference(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = dataclasses.replace(TINY, pitch_postfilter=0.7, output_advance=72).synthesis
    rt = VocoderRuntime.load(tiny_model_dir, cache_dir=tmp_path).with_synthesis(settings)
    assert rt.postfilter_kernel(rt.config) is not None
    mel = speech_mel(24)
    compiled = np.concatenate(list(rt.generate(mel, seed=1)))
    assert np.array_equal(bits(compiled), bits(vocode(rt.weights, rt.config, mel, seed=1)))
    rt.compiled_chain = False
    assert rt.postfilter_kernel(rt.config) is None
    assert np.array_equal(bits(compiled), bits(np.concatenate(list(rt.generate(mel, seed=1)))))
    lowpass = dataclasses.replace(settings, pitch_postfilter_cutoff_hz=2000.0)
    rt.compiled_chain = True
    assert rt.with_synthesis(lowpass).postfilter_kernel(rt.with_synthesis(lowpass).config) is None


def test_prebuild_builds_the_postfilter_for_voices_that_run_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    voice = tmp_path / "compiled" / "voice"
    shutil.copytree(tiny_model_dir, voice)
    config = json.loads((voice / "config.json").read_text())
    isas = json.loads((voice / "manifest.json").read_text())["isas"]
    (voice / "config.json").write_text(
        json.dumps({**config, "pitch_postfilter": 0.7, "pitch_postfilter_cutoff_hz": 3000.0})
    )
    assert prebuild(tmp_path / "compiled", tmp_path / "cache") == []  # the lowpass: numpy
    (voice / "config.json").write_text(json.dumps({**config, "pitch_postfilter": 0.7}))
    built = prebuild(tmp_path / "compiled", tmp_path / "cache")
    assert sorted(p.parent.name for p in built) == ["postfilter"] * len(isas)
    assert sorted(p.name.split("-")[0] for p in built) == sorted(isas)
