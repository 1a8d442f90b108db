"""Streaming sample-rate conversion of s16le PCM: the vocoder's 24 kHz to the rate a client asks.

soxr's `ResampleStream` keeps the filter's state between chunks, so audio converted frame by frame
equals audio converted whole (up to int16 rounding) with no clicks at chunk edges. Its group delay
is compensated inside soxr: output sample n lines up with input time n / out_rate.
"""

from __future__ import annotations

import numpy as np
import soxr

from server.errors import InvalidInput

SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)
"""Output rates a client may ask for (telephony, wideband speech, CD-family and video rates)."""


class UnsupportedSampleRate(InvalidInput, ValueError):
    """A sample rate outside SAMPLE_RATES, or one the chosen format cannot carry (Opus at 44.1 kHz)."""

    code = "unsupported_sample_rate"

    def __init__(self, message: str, param: str = "sample_rate") -> None:
        super().__init__(message, param)


def check_rate(rate: int) -> int:
    """`rate` if it is one of SAMPLE_RATES, else UnsupportedSampleRate naming `sample_rate`."""
    if rate not in SAMPLE_RATES:
        allowed = ", ".join(str(r) for r in SAMPLE_RATES)
        raise UnsupportedSampleRate(f"sample_rate {rate} is not supported; use one of {allowed}")
    return rate


_SCALE = 32768.0


def _to_pcm(x: np.ndarray) -> bytes:
    """float32 at int16 scale / 32768 -> s16le, rounded and clipped (the filter can overshoot)."""
    return np.clip(np.rint(x * _SCALE), -32768, 32767).astype("<i2").tobytes()


class Resampler:
    """s16le PCM at `in_rate` -> s16le PCM at `out_rate`, chunk by chunk, state carried across.

    `feed(pcm)` returns what is ready now (soxr holds back a few ms for its filter), `finish()`
    the rest. Equal rates pass bytes through untouched. Odd trailing bytes (half a sample) are held
    until the next chunk completes them.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._pending = b""
        # float32, rounded here: soxr dithers int16 output, which would make a streamed and a
        # whole conversion differ by more than rounding. HQ: 20-bit quality, plenty for 16-bit output and cheaper than VHQ on a shared core.
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    def feed(self, pcm: bytes) -> bytes:
        data = self._pending + pcm
        usable = len(data) - len(data) % 2
        self._pending = data[usable:]
        if self._stream is None:
            return data[:usable]
        if usable == 0:
            return b""
        x = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / _SCALE
        return _to_pcm(self._stream.resample_chunk(x, last=False))

    def finish(self) -> bytes:
        # A dangling half sample cannot be played; it is dropped, as any s16le reader would.
        self._pending = b""
        if self._stream is None:
            return b""
        return _to_pcm(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


def open_resampler(in_rate: int, out_rate: int) -> Resampler:
    """A Resampler to `out_rate` (checked against SAMPLE_RATES) from `in_rate`."""
    return Resampler(in_rate, check_rate(out_rate))
