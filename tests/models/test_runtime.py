"""VocoderRuntime: loading checks, ISA choice, streaming equivalence, bad input."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import compile as comp
from models.artifact import ModelLoadError, sha256_file
from models.dsp.features import SPEC, log_mel
from models.dsp.pitch import mel_pitch
from models.kernel.isa import ISA_FLAGS, cpu_flags, host_isas
from models.kernel.packing import KERNEL_ABI
from models.runtime import MelInputError, VocoderRuntime
from models.vocoder.chain import REDRAW_SHARE
from models.vocoder.config import TINY
from models.vocoder.excitation import frame_source
from models.vocoder.params import random_weights
from models.vocoder.reference import vocode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir: Path) -> Path:
    """The session's tiny model (tests/conftest.py): TINY with random_weights(TINY, 0)."""
    return tiny_model_dir


@pytest.fixture(scope="module")
def runtime(tiny_dir: Path) -> VocoderRuntime:
    return VocoderRuntime.load(tiny_dir)


TINY_LPC = dataclasses.replace(TINY, lpc_order=8)


@pytest.fixture(scope="module")
def lpc_runtime(tmp_path_factory: pytest.TempPathFactory) -> VocoderRuntime:
    path = tmp_path_factory.mktemp("m") / "tiny-lpc"
    return VocoderRuntime.load(
        comp.build_artifact(random_weights(TINY_LPC, 0), TINY_LPC, path, isas=None)
    )


def mel(frames: int, seed: int = 0) -> np.ndarray:
    """The mel of a voiced tone gliding in pitch, plus noise: the sine source is on and moving."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * SPEC.hop_length) / SPEC.sample_rate
    phase = 2 * np.pi * np.cumsum(140 + 60 * rng.random() + 80 * t) / SPEC.sample_rate
    tone = sum(0.2 / k * np.sin(k * phase) for k in range(1, 16))
    m = log_mel(tone.astype(np.float32))[:frames]
    return (m + rng.normal(0, 0.3, m.shape)).astype(np.float32)


def test_the_sine_source_reaches_the_kernel(runtime: VocoderRuntime, tmp_path: Path) -> None:
    m = mel(12, seed=3)
    assert np.abs(frame_source(m, TINY)).max() > 0.9  # the test mel is voiced
    with_source = np.concatenate(list(runtime.generate(m, seed=1)))
    w = dict(runtime.weights)
    w["gru.w_sin"] = np.zeros_like(w["gru.w_sin"])
    w["gru.w_cos"] = np.zeros_like(w["gru.w_cos"])
    deaf = VocoderRuntime.load(comp.build_artifact(w, TINY, tmp_path / "deaf", isas=None))
    assert runtime.uses_source and not deaf.uses_source  # a zero source is not even made
    audio = np.concatenate(list(deaf.generate(m, seed=1)))
    assert not np.array_equal(audio, with_source)
    assert np.array_equal(audio, vocode(w, TINY, m, seed=1))  # and it is the reference's model


def test_loads_best_isa_for_this_cpu(runtime: VocoderRuntime) -> None:
    assert runtime.isa == host_isas()[0]
    assert ISA_FLAGS[runtime.isa] <= cpu_flags()
    assert runtime.measure_us_per_sample(frames=3) > 0


def test_synthetic_frame_runs_the_kernel_and_carries_state(runtime: VocoderRuntime) -> None:
    frame = runtime.synthetic_frame(seed=1)
    frame.run(runtime)
    out, pcm, h = frame.out.numpy(), frame.pcm.numpy(), frame.h.numpy()
    assert out.shape == (TINY.hop_length,) and ((out >= 0) & (out < TINY.n_classes)).all()
    assert np.isfinite(pcm).all() and np.abs(h).max() > 0  # the zero state moved
    frame.redraw_uniforms()
    frame.run(runtime)
    assert not np.array_equal(frame.h.numpy(), h)  # the state is carried into the next call


def streamed(rt: VocoderRuntime, chunks: tuple[np.ndarray, ...], seed: int) -> np.ndarray:
    """The audio of a stream fed `chunks` of mel, stepping as far as each allows, then finished."""
    stream = rt.open_stream(seed=seed)
    parts = []
    for chunk in chunks:
        stream.push(chunk)
        while stream.pending():
            parts.append(stream.step())
    stream.finish()
    while stream.pending():
        parts.append(stream.step())
    return np.concatenate(parts)


@pytest.mark.parametrize("frames", [1, 7, 40])
def test_generate_equals_numpy_reference(runtime: VocoderRuntime, frames: int) -> None:
    m = mel(frames)
    audio = np.concatenate(list(runtime.generate(m, seed=5)))
    assert audio.dtype == np.float32 and audio.shape == (frames * TINY.hop_length,)
    assert np.array_equal(audio, vocode(random_weights(TINY, 0), TINY, m, seed=5))


def test_lpc_model_equals_numpy_reference_whole_and_streamed(
    lpc_runtime: VocoderRuntime, tmp_path: Path
) -> None:
    # the reference for 12 frames (the kernel's h differs from numpy's by float rounding, ~1e-7, so
    # over long runs a draw on a CDF edge may differ: tests/models/kernel/test_kernel.py bounds
    # that)
    short = mel(12, seed=4)
    assert np.array_equal(
        np.concatenate(list(lpc_runtime.generate(short, seed=2))),
        vocode(random_weights(TINY_LPC, 0), TINY_LPC, short, seed=2),
    )
    m = mel(70, seed=4)
    whole = np.concatenate(list(lpc_runtime.generate(m, seed=2)))
    # LPC rows are fitted per pushed chunk
    assert np.array_equal(streamed(lpc_runtime, (m[:5], m[5:6], m[6:70]), seed=2), whole)
    # the prediction matters: the same weights without LPC make other audio
    plain_dir = comp.build_artifact(lpc_runtime.weights, TINY, tmp_path / "plain", isas=None)
    plain = VocoderRuntime.load(plain_dir)
    assert not np.array_equal(np.concatenate(list(plain.generate(m, seed=2))), whole)


# 70 frames: several conditioning batches and buffer growth past 64 rows
@pytest.mark.parametrize("chunks", [[1] * 9, [4, 5], [2, 0, 7], [30, 1, 20, 19]])
def test_chunked_streaming_equals_whole(runtime: VocoderRuntime, chunks: list[int]) -> None:
    m = mel(sum(chunks), seed=2)
    whole = np.concatenate(list(runtime.generate(m, seed=1)))
    stream = runtime.open_stream(seed=1)
    parts, at = [], 0
    for n in chunks:
        stream.push(m[at : at + n])
        at += n
        assert stream.pending() == max(0, at - 3 - stream.frames_done)
        while stream.pending():
            parts.append(stream.step())
    stream.finish()
    while stream.pending():
        parts.append(stream.step())
    assert stream.finished and stream.frames_done == sum(chunks)
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize(
    ("cutoff_hz", "advance"), [(0.0, 0), (4000.0, 0), (4000.0, 79), (0.0, 300)]
)
def test_pitch_postfilter_model_equals_numpy_reference_whole_and_streamed(
    lpc_runtime: VocoderRuntime, tmp_path: Path, cutoff_hz: float, advance: int
) -> None:
    """A model whose config asks for the pitch postfilter (whole band, or below a cutoff; the
    output moved earlier or not): the runtime filters every frame with the mel's pitch as
    reference.vocode does, in whatever chunks the mel arrives (LPC_BATCH is 64, so 90 frames
    take two pitch batches)."""
    config = dataclasses.replace(
        TINY_LPC,
        pitch_postfilter=0.35,
        pitch_postfilter_cutoff_hz=cutoff_hz,
        output_advance=advance,
    )
    rt = lpc_runtime.with_synthesis(config.synthesis)  # the same module
    short = mel(12, seed=4)
    filtered = np.concatenate(list(rt.generate(short, seed=2)))
    assert np.array_equal(filtered, vocode(lpc_runtime.weights, config, short, seed=2))
    unfiltered = np.concatenate(list(lpc_runtime.generate(short, seed=2)))
    assert not np.array_equal(filtered, unfiltered)  # the same draws, filtered
    m = mel(90, seed=4)
    whole = np.concatenate(list(rt.generate(m, seed=2)))
    assert np.array_equal(streamed(rt, (m[:5], m[5:6], m[6:90]), seed=2), whole)
    assert whole.shape == (90 * TINY_LPC.hop_length,)


def test_output_advance_moves_the_same_audio_earlier(
    lpc_runtime: VocoderRuntime, tmp_path: Path
) -> None:
    """The same draws, `output_advance` samples earlier: the stream computes one frame ahead,
    returns exactly one frame per mel frame, and after the last comes the postfilter's tail
    (here, without a delay line, silence)."""
    plain_cfg = dataclasses.replace(TINY_LPC, pitch_postfilter=0.35)
    ahead_cfg = dataclasses.replace(plain_cfg, output_advance=79)
    plain = lpc_runtime.with_synthesis(plain_cfg.synthesis)
    ahead = lpc_runtime.with_synthesis(ahead_cfg.synthesis)
    m = mel(20, seed=5)
    p = np.concatenate(list(plain.generate(m, seed=4)))
    a = np.concatenate(list(ahead.generate(m, seed=4)))
    assert a.shape == p.shape and np.array_equal(a[:-79], p[79:]) and not a[-79:].any()
    stream = ahead.open_stream(seed=4)
    stream.push(m[:6])
    plain_stream = plain.open_stream(seed=4)
    plain_stream.push(m[:6])
    assert stream.pending() == plain_stream.pending() - 1  # it waits for the frame after


@pytest.mark.parametrize(
    ("passes", "advance", "smoothing"), [(1, 0, 0.0), (2, 79, 0.0), (1, 300, 0.0), (2, 79, 1.0)]
)
def test_envelope_model_equals_numpy_reference_whole_and_streamed(
    lpc_runtime: VocoderRuntime, tmp_path: Path, passes: int, advance: int, smoothing: float
) -> None:
    """A model with envelope passes (models/dsp/envelope.py, with or without the smoothing) on top
    of
    the band-limited postfilter and an advance: the runtime makes reference.vocode's audio, whole
    and in any chunks, with the stream waiting 4 frames per pass more; the same draws, corrected
    towards the mel."""
    base = dataclasses.replace(
        TINY_LPC, pitch_postfilter=0.35, pitch_postfilter_cutoff_hz=4000.0, output_advance=advance
    )
    config = dataclasses.replace(
        base,
        envelope_passes=passes,
        envelope_clip=1.0,
        envelope_smoothing=smoothing,
        envelope_smoothing_hz=3000.0,
    )
    rt = lpc_runtime.with_synthesis(config.synthesis)
    plain = lpc_runtime.with_synthesis(base.synthesis)
    for frames in (1, 3, 30):
        m = mel(frames, seed=6)
        whole = np.concatenate(list(rt.generate(m, seed=2)))
        assert whole.shape == (frames * TINY.hop_length,)
        assert np.array_equal(whole, vocode(lpc_runtime.weights, config, m, seed=2))
    uncorrected = np.concatenate(list(plain.generate(m, seed=2)))
    assert not np.array_equal(whole, uncorrected)
    target_error = [np.abs(log_mel(y)[4:26] - m[4:26]).mean() for y in (uncorrected, whole)]
    assert target_error[1] < target_error[0]  # closer to the mel it was asked for
    for chunks in ((m[:5], m[5:6], m[6:]), tuple(m[i : i + 1] for i in range(30))):
        assert np.array_equal(streamed(rt, chunks, seed=2), whole)
    stream, plain_stream = rt.open_stream(seed=2), plain.open_stream(seed=2)
    stream.push(m[:20])
    plain_stream.push(m[:20])
    assert stream.pending() == plain_stream.pending() - 4 * passes


def voiced_after_noise(noise_frames: int, voiced_frames: int) -> np.ndarray:
    """Frames of noise (voicing 0), then a voiced tone: the two ends of the logit scaling."""
    rng = np.random.default_rng(7)
    noise = log_mel((0.05 * rng.standard_normal(noise_frames * SPEC.hop_length)).astype(np.float32))
    return np.concatenate([noise[:noise_frames], mel(voiced_frames, seed=2)]).astype(np.float32)


def test_voicing_temperature_model_equals_numpy_reference_whole_and_streamed(
    lpc_runtime: VocoderRuntime, tmp_path: Path
) -> None:
    """A model with voicing-dependent logit scales: unvoiced frames (scale 1 here) draw exactly
    what the plain model draws until the first voiced frame, from which the draws differ; the
    runtime makes reference.vocode's audio, in any chunking, and two streams interleaved on one
    runtime each make their own audio (the rescaled arguments are the stream's, not shared),
    also when one stream brings its own synthesis settings to a runtime that has others."""
    config = dataclasses.replace(TINY_LPC, voiced_logit_scale=2.5, unvoiced_logit_scale=1.0)
    rt = lpc_runtime.with_synthesis(config.synthesis)
    m = voiced_after_noise(6, 10)
    _, voicing = mel_pitch(m)
    assert voicing[:6].max() == 0 and voicing[8:].min() == 1  # noise, then a clear tone
    scaled = np.concatenate(list(rt.generate(m, seed=3)))
    plain = np.concatenate(list(lpc_runtime.generate(m, seed=3)))
    hop = TINY.hop_length
    assert np.array_equal(scaled[: 6 * hop], plain[: 6 * hop])
    assert not np.array_equal(scaled[8 * hop :], plain[8 * hop :])
    assert np.array_equal(scaled, vocode(lpc_runtime.weights, config, m, seed=3))
    assert np.array_equal(streamed(rt, (m[:3], m[3:9], m[9:]), seed=3), scaled)
    a, b = rt.open_stream(seed=3), lpc_runtime.open_stream(seed=3)
    c = lpc_runtime.open_stream(seed=4, synthesis=config.synthesis)  # per stream
    for stream in (a, b, c):
        stream.push(m)
        stream.finish()
    interleaved: list[list[np.ndarray]] = [[], [], []]
    while a.pending():
        for out, stream in zip(interleaved, (a, b, c)):
            out.append(stream.step())
    assert np.array_equal(np.concatenate(interleaved[0]), scaled)
    assert np.array_equal(np.concatenate(interleaved[1]), plain)
    assert np.array_equal(
        np.concatenate(interleaved[2]), vocode(lpc_runtime.weights, config, m, seed=4)
    )


def test_frames_reaching_full_scale_are_drawn_again(tmp_path: Path) -> None:
    """clip_retries: a frame whose output touches the clip is sampled again from the state before
    it, so fewer frames clip; the frames before the first clip are untouched, the counters say what
    happened, and reference.vocode makes the same audio."""
    w = random_weights(TINY, 0)
    # excitation classes favour the middle, so only some frames integrate up to full scale
    w["fc2.bias"] = (-(((np.arange(TINY.n_classes) - 127.5) / 64) ** 2)).astype(np.float32)
    guarded_config = dataclasses.replace(TINY, clip_retries=3)
    plain = VocoderRuntime.load(comp.build_artifact(w, TINY, tmp_path / "plain", isas=None))
    guarded = plain.with_synthesis(guarded_config.synthesis)
    m = mel(20, seed=1)

    def frames(rt: VocoderRuntime) -> tuple[list[np.ndarray], Any]:
        stream = rt.open_stream(seed=1)
        stream.push(m)
        stream.finish()
        return [stream.step() for _ in range(stream.pending())], stream

    before, plain_stream = frames(plain)
    after, stream = frames(guarded)
    clipped_before = [bool(np.abs(f).max() >= 1) for f in before]
    clipped_after = [bool(np.abs(f).max() >= 1) for f in after]
    assert sum(clipped_before) >= 2 and plain_stream.frames_clipped == sum(clipped_before)
    assert plain_stream.frames_redrawn == 0  # off by default
    first = clipped_before.index(True)
    assert all(np.array_equal(a, b) for a, b in zip(before[:first], after[:first]))
    assert sum(clipped_after) < sum(clipped_before)
    assert stream.frames_redrawn >= sum(
        clipped_before[: first + 1]
    ) and stream.frames_clipped == sum(clipped_after)
    assert np.array_equal(np.concatenate(after), vocode(w, guarded_config, m, seed=1))


def test_redraws_are_capped_per_stream(runtime: VocoderRuntime, tmp_path: Path) -> None:
    """The tiny random model clips every frame: the first frame gets its clip_retries redraws, then
    the stream's budget (REDRAW_SHARE of its frames) stops them, and the reference agrees."""
    config = dataclasses.replace(TINY, clip_retries=3)
    guarded = runtime.with_synthesis(config.synthesis)
    m = mel(20, seed=5)
    stream = guarded.open_stream(seed=3)
    stream.push(m)
    stream.finish()
    audio = np.concatenate([stream.step() for _ in range(stream.pending())])
    assert stream.frames_clipped == 20  # noise clips whatever is drawn
    assert 3 <= stream.frames_redrawn <= 3 + REDRAW_SHARE * 20  # not 3 x 20
    assert np.array_equal(audio, vocode(runtime.weights, config, m, seed=3))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 79), np.float32), "80"),
        (np.zeros(80, np.float32), "2-D"),
        (np.full((3, 80), np.nan, np.float32), "finite|NaN"),
        ([["a"] * 80], "numeric"),
    ],
)
def test_bad_mel_is_a_clear_error(runtime: VocoderRuntime, bad: object, message: str) -> None:
    stream = runtime.open_stream()
    with pytest.raises(MelInputError, match=message):
        stream.push(bad)  # type: ignore[arg-type]
    stream.push(mel(2))  # the stream is still usable
    stream.finish()
    frames = 0
    while stream.pending():
        stream.step()
        frames += 1
    assert frames == 2


def test_step_without_input_raises(runtime: VocoderRuntime) -> None:
    with pytest.raises(RuntimeError, match="no frame ready"):
        runtime.open_stream().step()


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite an artefact's JSON file after `edit` changed its parsed content in place."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_corrupt_file_is_detected(tiny_dir: Path, tmp_path: Path) -> None:
    d = copy_model(tiny_dir, tmp_path / "m")
    so = next(d.glob("*.so"))
    so.write_bytes(so.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelLoadError, match="corrupt"):
        VocoderRuntime.load(d)


def test_missing_manifest_and_mismatched_config(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="manifest"):
        VocoderRuntime.load(tmp_path)
    d = copy_model(tiny_dir, tmp_path / "m")
    edit_json(d / "manifest.json", lambda m: m["config"].update(hidden_size=1024))
    with pytest.raises(ModelLoadError, match="does not match"):
        VocoderRuntime.load(d)


def test_module_from_another_kernel_abi_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    """An artefact compiled before the weight layout changed must not be fed the new layout."""
    d = copy_model(tiny_dir, tmp_path / "m")
    assert json.loads((d / "manifest.json").read_text())["kernel_abi"] == KERNEL_ABI
    edit_json(
        d / "manifest.json", lambda m: m.pop("kernel_abi")
    )  # as written before the field existed
    with pytest.raises(ModelLoadError, match="kernel ABI 1.*sparrow compile"):
        VocoderRuntime.load(d)


@pytest.mark.parametrize(("field", "then"), [("preemphasis", 0.0), ("lpc_noise_floor", 1e-4)])
def test_old_artefacts_load_with_what_they_were_trained_with(
    tiny_dir: Path, tmp_path: Path, field: str, then: float
) -> None:
    # Written before the field existed: the plain signal, or the LPC fit's first noise floor.
    d = copy_model(tiny_dir, tmp_path / "m")
    assert getattr(VocoderRuntime.load(d).config, field) != then
    edit_json(d / "config.json", lambda c: c.pop(field))

    def drop_field(manifest: dict[str, Any]) -> None:
        manifest["config"].pop(field)
        manifest["files"]["config.json"] = sha256_file(d / "config.json")

    edit_json(d / "manifest.json", drop_field)
    assert getattr(VocoderRuntime.load(d).config, field) == then


def test_module_for_missing_cpu_features_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    d = copy_model(tiny_dir, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    # Pretend the only shipped module needs a feature no CPU has.
    isa = next(iter(manifest["isas"]))
    original = ISA_FLAGS[isa]
    ISA_FLAGS[isa] = original | {"imaginary_feature"}
    try:
        with pytest.raises(ModelLoadError, match="imaginary_feature"):
            VocoderRuntime.load(d, isa=isa)
    finally:
        ISA_FLAGS[isa] = original
    with pytest.raises(ModelLoadError, match="has no"):
        VocoderRuntime.load(d, isa="nonexistent")


def test_no_fitting_module_compiles_for_host(
    tiny_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = copy_model(tiny_dir, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    for info in manifest["isas"].values():
        (d / info["file"]).unlink()
        manifest["files"].pop(info["file"])
    manifest["isas"] = {}
    (d / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        rt = VocoderRuntime.load(d, cache_dir=tmp_path / "cache")
    assert rt.isa == "host"
    assert "compiling for the host" in caplog.text
    assert list((tmp_path / "cache" / "m").glob("host-*.so"))
    m = mel(4)
    assert np.array_equal(
        np.concatenate(list(rt.generate(m, seed=3))),
        vocode(random_weights(TINY, 0), TINY, m, seed=3),
    )


def test_every_isa_level_gives_identical_audio(tmp_path: Path) -> None:
    """int8 blocks are exact integer sums on every ISA, so the samples are the same everywhere."""
    isas = host_isas()
    d = comp.build_artifact(random_weights(TINY, 1), TINY, tmp_path / "all", isas=isas)
    m = mel(5, seed=4)
    outputs = {
        isa: np.concatenate(list(VocoderRuntime.load(d, isa=isa).generate(m, seed=2)))
        for isa in isas
    }
    first = outputs[isas[0]]
    for isa, audio in outputs.items():
        assert np.array_equal(audio, first), isa
