"""Audio encoding: PCM conversion, WAV/FLAC/MP3/Opus containers, the streaming WAV header."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from server import audio


def _tone(n: int = 2400) -> np.ndarray:
    return (0.5 * np.sin(np.arange(n) * 2 * np.pi * 440 / 24000)).astype(np.float32)


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
    data, sr = sf.read(io.BytesIO(audio.encode(pcm, fmt, 24000)), dtype="int16")
    assert sr == 24000 and data.ndim == 1
    assert data.tobytes() == pcm


@pytest.mark.parametrize(("fmt", "container"), [("mp3", "MP3"), ("opus", "OGG")])
def test_lossy_containers_keep_length_rate_and_waveform(fmt: str, container: str) -> None:
    x = _tone(24000)
    data, sr = sf.read(io.BytesIO(audio.encode(audio.float_to_pcm16(x), fmt, 24000)), dtype="float32")
    assert sr == 24000 and data.shape == x.shape  # the encoder's delay and padding are trimmed
    assert sf.info(io.BytesIO(audio.encode(audio.float_to_pcm16(x), fmt, 24000))).format == container
    assert np.corrcoef(data, x)[0, 1] > 0.99  # lossy, but the same tone in the same place


def test_pcm_is_raw() -> None:
    pcm = audio.float_to_pcm16(_tone())
    assert audio.encode(pcm, "pcm", 24000) == pcm


def test_streaming_wav_header_reads_to_eof() -> None:
    pcm = audio.float_to_pcm16(_tone())
    header = audio.wav_header(24000)
    assert len(header) == 44 and header[4:8] == b"\xff\xff\xff\xff"
    data, sr = sf.read(io.BytesIO(header + pcm), dtype="int16")
    assert sr == 24000 and data.tobytes() == pcm


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_unknown_format_and_empty_compressed_audio_are_value_errors(fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        audio.encode(b"", "aac", 24000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        audio.encode(b"", fmt, 24000)
