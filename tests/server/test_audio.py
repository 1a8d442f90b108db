"""Audio output: PCM conversion, streaming encoders for every format, streaming resampling.

Pure and fast: no server. Decoders are libsndfile (through soundfile's handle, reading to EOF as a
streaming client does) and FFmpeg (PyAV), a second, independent reader.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from server import audio
from server.resample import UnsupportedSampleRate

RATE = 24000
LOSSLESS = ("wav", "pcm", "flac")
LOSSY = ("mp3", "opus", "aac")


def _tone(n: int = 2400, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(np.arange(n) * 2 * np.pi * freq / rate)).astype(np.float32)


def _speech_like(n: int, rate: int = RATE) -> np.ndarray:
    """Voiced harmonics on a gliding pitch with a 4 Hz syllable envelope: what the vocoder makes."""
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(120 + 60 * np.sin(2 * np.pi * 1.3 * t)) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 16))
    return (0.25 * voiced * 0.5 * (1 - np.cos(2 * np.pi * 4 * t))).astype(np.float32)


def _chunks(pcm: bytes, seed: int, largest: int = 1500) -> list[bytes]:
    """Uneven chunks, odd byte counts included (half samples must wait for their other half)."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(pcm):
        k = int(rng.integers(1, largest))
        out.append(pcm[i : i + k])
        i += k
    return out


def _stream(out: audio.AudioOutput | audio.StreamEncoder, pcm: bytes, seed: int = 0) -> bytes:
    return b"".join(out.feed(c) for c in _chunks(pcm, seed)) + out.finish()


def _libsndfile_decode(data: bytes) -> tuple[np.ndarray, int]:
    """int16 samples read to EOF. soundfile's own read() seeks after each block, which libsndfile's
    FLAC reader refuses while the length is unknown (a streamed FLAC), so read its handle directly."""
    f = sf.SoundFile(io.BytesIO(data))
    parts, buf = [], np.empty(4096, np.int16)
    while n := sf._snd.sf_readf_short(f._file, sf._ffi.cast("short*", buf.ctypes.data), buf.size):
        parts.append(buf[:n].copy())
    f.close()
    return np.concatenate(parts) if parts else np.zeros(0, np.int16), f.samplerate


def _ffmpeg_decode(data: bytes) -> tuple[np.ndarray, int]:
    """float samples and rate as FFmpeg decodes them (Opus always at 48 kHz)."""
    with av.open(io.BytesIO(data)) as c:
        rate = c.streams.audio[0].rate
        frames = [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
    x = np.concatenate(frames)
    return (x.astype(np.float32) / 32768 if x.dtype == np.int16 else x.astype(np.float32)), rate


def _decode(fmt: str, data: bytes, rate: int) -> np.ndarray:
    """float samples of `data`, checking the rate the container declares."""
    if fmt == "pcm":
        return audio.pcm16_to_float(data)
    if fmt == "aac":  # libsndfile has no AAC reader
        x, got = _ffmpeg_decode(data)
    else:
        ints, got = _libsndfile_decode(data)
        x = ints.astype(np.float32) / 32767
    assert got == rate
    return x


def _aligned_snr(decoded: np.ndarray, ref: np.ndarray, max_delay: int = 3000) -> tuple[int, float]:
    """Codec delay (samples) found by cross-correlation, then SNR in dB of the aligned overlap."""
    head = ref[: len(ref) // 4]
    corr = np.correlate(decoded[: max_delay + len(head)], head, "valid")
    lag = int(np.argmax(corr))
    seg = decoded[lag : lag + len(ref)]
    m = min(len(seg), len(ref))
    return lag, float(10 * np.log10(np.sum(ref[:m] ** 2) / np.sum((seg[:m] - ref[:m]) ** 2)))


# --- PCM helpers and the whole-utterance encode() ------------------------------------------------


def test_pcm16_round_trip_and_clipping() -> None:
    x = np.array([0.0, 1.0, -1.0, 2.0, -3.0, 0.5], np.float32)
    pcm = audio.float_to_pcm16(x)
    assert len(pcm) == 2 * len(x)
    ints = np.frombuffer(pcm, "<i2")
    assert list(ints) == [0, 32767, -32767, 32767, -32767, 16384]
    np.testing.assert_allclose(audio.pcm16_to_float(pcm)[:3], [0.0, 1.0, -1.0])


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_containers_decode_to_the_same_samples(fmt: str) -> None:
    pcm = audio.float_to_pcm16(_tone())
    data, sr = sf.read(io.BytesIO(audio.encode(pcm, fmt, RATE)), dtype="int16")
    assert sr == RATE and data.ndim == 1
    assert data.tobytes() == pcm


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "MP3"), ("opus", "OGG")])
def test_lossy_containers_keep_length_rate_and_waveform(fmt: str, container: str) -> None:
    x = _tone(24000)
    encoded = audio.encode(audio.float_to_pcm16(x), fmt, RATE)
    data, sr = sf.read(io.BytesIO(encoded), dtype="float32")
    assert sr == RATE and data.shape == x.shape  # the encoder's delay and padding are trimmed
    assert sf.info(io.BytesIO(encoded)).format == container
    assert np.corrcoef(data, x)[0, 1] > 0.99  # lossy, but the same tone in the same place


def test_pcm_is_raw() -> None:
    pcm = audio.float_to_pcm16(_tone())
    assert audio.encode(pcm, "pcm", RATE) == pcm


def test_streaming_wav_header_reads_to_eof() -> None:
    pcm = audio.float_to_pcm16(_tone())
    header = audio.wav_header(RATE)
    assert len(header) == 44 and header[4:8] == b"\xff\xff\xff\xff"
    data, sr = sf.read(io.BytesIO(header + pcm), dtype="int16")
    assert sr == RATE and data.tobytes() == pcm


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus", "aac"])
def test_unknown_format_and_empty_compressed_audio_are_value_errors(fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        audio.encode(b"", "ogg", RATE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        audio.encode(b"", fmt, RATE)  # type: ignore[arg-type]


# --- streaming encoders ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_lossless_formats_streamed_in_uneven_chunks_decode_to_the_input(fmt: str) -> None:
    pcm = audio.float_to_pcm16(_speech_like(RATE))
    streamed = _stream(audio.open_encoder(fmt, RATE), pcm, seed=1)
    assert audio.float_to_pcm16(_decode(fmt, streamed, RATE)) == pcm
    if fmt != "pcm":
        ffmpeg, rate = _ffmpeg_decode(streamed)
        assert rate == RATE and audio.float_to_pcm16(ffmpeg * 32768 / 32767) == pcm
        whole, _ = sf.read(io.BytesIO(audio.encode(pcm, fmt, RATE)), dtype="int16")
        assert whole.tobytes() == pcm  # the whole file carries its length: plain sf.read works


@pytest.mark.parametrize(("fmt", "min_snr"), [("mp3", 20.0), ("opus", 12.0), ("aac", 10.0)])
def test_lossy_formats_streamed_in_uneven_chunks_keep_the_waveform(
    fmt: str, min_snr: float
) -> None:
    ref = audio.pcm16_to_float(audio.float_to_pcm16(_speech_like(RATE)))
    streamed = _stream(audio.open_encoder(fmt, RATE), audio.float_to_pcm16(ref), seed=2)
    decoded = _decode(fmt, streamed, RATE)
    lag, snr = _aligned_snr(decoded, ref)
    assert snr > min_snr, (lag, snr)
    # All the audio is there: the codec adds its delay and pads to a frame, never drops samples.
    assert len(ref) <= len(decoded) - lag < len(ref) + 2048
    ffmpeg, _ = _ffmpeg_decode(streamed)  # the second decoder agrees on the content
    assert len(ffmpeg) > 0.9 * len(decoded) * (48000 / RATE if fmt == "opus" else 1)
    whole_file = audio.encode(audio.float_to_pcm16(ref), fmt, RATE)
    if fmt == "mp3":  # the stream is the whole file less the tag frame LAME fills at close
        tag = whole_file[: len(whole_file) - len(streamed)]
        assert whole_file.endswith(streamed) and (b"Info" in tag or b"Xing" in tag)
    whole = _decode(fmt, whole_file, RATE)
    if fmt != "aac":  # mp3's gapless tag and Ogg's granules trim the whole file to the input
        assert len(whole) == len(ref)
    assert _aligned_snr(whole, ref)[1] > min_snr


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "aac", "wav"])
def test_first_bytes_come_out_before_the_utterance_ends(fmt: str) -> None:
    """Vocoder frames of 300 samples; after 0.1 s of them the client has bytes to start on."""
    pcm = audio.float_to_pcm16(_speech_like(RATE))
    enc = audio.open_encoder(fmt, RATE)
    frames = [pcm[i : i + 600] for i in range(0, len(pcm), 600)]
    early = b"".join(enc.feed(f) for f in frames[:8])  # 2400 samples = 100 ms
    assert len(early) > 0
    if fmt in ("mp3", "opus"):  # real audio, not just a header: the early bytes decode alone
        assert len(_ffmpeg_decode(early)[0]) > 0
    rest = b"".join(enc.feed(f) for f in frames[8:])
    full = early + rest + enc.finish()
    assert full.startswith(early) and len(_decode(fmt, full, RATE)) >= RATE


@pytest.mark.parametrize("rate", audio.SAMPLE_RATES)
def test_first_mp3_bytes_within_100_ms_at_every_rate(rate: int) -> None:
    out = audio.AudioOutput("mp3", rate)
    pcm = audio.float_to_pcm16(_speech_like(RATE // 10))
    early = b"".join(out.feed(pcm[i : i + 600]) for i in range(0, len(pcm), 600))
    # An MPEG audio frame (sync word) out already. FFmpeg's probe needs two
    # frames, which at 8 kHz (576 samples a frame, LAME's 1105-sample delay) take 140 ms of input.
    assert len(early) > 0 and early[0] == 0xFF and early[1] & 0xE0 == 0xE0
    assert _ffmpeg_decode(early + out.finish())[1] == rate


# --- resampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", audio.SAMPLE_RATES)
def test_streamed_resampling_equals_whole_and_keeps_duration(rate: int) -> None:
    pcm = audio.float_to_pcm16(_speech_like(RATE))
    r = audio.open_resampler(RATE, rate)
    streamed = np.frombuffer(_stream(r, pcm, seed=rate), "<i2").astype(np.int32)
    whole = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32), RATE, rate)
    assert len(streamed) == len(whole) == rate  # one second in, one second out
    assert np.abs(streamed - whole).max() <= 0.51  # at most int16 rounding apart
    if rate == RATE:
        assert streamed.astype("<i2").tobytes() == pcm  # pass-through


@pytest.mark.parametrize("rate", audio.SAMPLE_RATES)
def test_resampled_sine_in_vocoder_frames_has_a_clean_spectrum(rate: int) -> None:
    """A click at a chunk edge spreads energy over every bin; a clean stream has only the tone."""
    pcm = audio.float_to_pcm16(_tone(RATE, 1000.0))
    r = audio.open_resampler(RATE, rate)
    y = np.frombuffer(
        b"".join(r.feed(pcm[i : i + 600]) for i in range(0, len(pcm), 600)) + r.finish(), "<i2"
    )
    seg = y[rate // 10 : rate // 10 + rate // 2].astype(np.float64)  # away from the start and end
    spectrum = np.abs(np.fft.rfft(seg * np.blackman(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / rate)
    peak = int(np.argmax(spectrum))
    assert abs(freqs[peak] - 1000.0) < 5
    others = np.delete(spectrum, np.arange(max(peak - 8, 0), peak + 9))
    assert 20 * np.log10(spectrum[peak] / others.max()) > 60


@pytest.mark.parametrize("rate", audio.SAMPLE_RATES)
@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "opus"])
def test_audio_output_at_every_rate_decodes_at_that_rate_and_duration(fmt: str, rate: int) -> None:
    if fmt == "opus" and rate in (22050, 44100):
        with pytest.raises(UnsupportedSampleRate) as err:
            audio.AudioOutput(fmt, rate)
        assert err.value.param == "sample_rate" and "48000" in err.value.message
        return
    out = audio.AudioOutput(fmt, rate)
    assert out.content_type == audio.CONTENT_TYPES[fmt]
    pcm = audio.float_to_pcm16(_speech_like(RATE))
    decoded = _decode(fmt, _stream(out, pcm, seed=3), rate)
    ref = soxr.resample(audio.pcm16_to_float(pcm), RATE, rate)
    if fmt in LOSSLESS:
        assert len(decoded) == rate  # exactly one second
        assert np.abs(decoded - ref).max() < 2 / 32767
    else:
        lag, snr = _aligned_snr(decoded, ref, max_delay=2400)
        assert snr > 12.0  # the waveform is kept, after the codec's delay (mp3: 1105-2257 samples)
        assert abs(len(decoded) - lag - rate) < rate // 10  # duration within a codec frame or two


def test_unsupported_rates_name_the_field() -> None:
    for bad in (11025, 0, 96000):
        with pytest.raises(UnsupportedSampleRate) as err:
            audio.AudioOutput("wav", bad)
        assert err.value.param == "sample_rate" and str(bad) in err.value.message
