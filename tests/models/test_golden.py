"""The shipped voice's audio, bit for bit: a fixed mel through compiled/wavernn-slt.

tests/models/data/golden_mel.npy is a 24-frame log-mel (a voiced tone gliding in pitch, plus
noise); GOLDEN_SHA256 is the sha256 of the float32 samples the shipped model (with its config's
synthesis settings: envelope smoothing off) made from it with seed 1. Any change of the kernel, the
post-kernel chain (redraw, postfilter, advance, envelope), the conditioning or the config loading
that alters the shipped voice's output fails here, on every ISA this CPU runs, through the whole
mel, through small pushes interleaved with steps (as the server's workers feed streams), and
through the numpy reference.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from models.kernel.isa import ISA_FLAGS, ISA_PREFERENCE, cpu_flags
from models.runtime import VocoderRuntime
from models.vocoder.reference import vocode

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "compiled" / "wavernn-slt"
MEL = Path(__file__).with_name("data") / "golden_mel.npy"
MEL_SHA256 = "1e3dc3d02976317d934cc8176e9cbe44ad2416d7593ef284ee039599b80afdfe"
GOLDEN_SHA256 = "d54b7d403b8ae5cf35f9347a258d77ac6fce9a4f091688f917e2dc88d6eb36f9"
SEED = 1

RUNNABLE = [isa for isa in ISA_PREFERENCE if ISA_FLAGS[isa] <= cpu_flags()]


def sha256(audio: np.ndarray) -> str:
    assert audio.dtype == np.float32
    return hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def mel() -> np.ndarray:
    m = np.load(MEL)
    assert hashlib.sha256(m.tobytes()).hexdigest() == MEL_SHA256  # the input itself is fixed
    return m


@pytest.mark.parametrize("isa", RUNNABLE)
def test_shipped_voice_is_bit_identical(isa: str, mel: np.ndarray) -> None:
    rt = VocoderRuntime.load(MODEL, isa=isa)
    audio = np.concatenate(list(rt.generate(mel, seed=SEED)))
    assert audio.shape == (len(mel) * rt.config.hop_length,)
    assert sha256(audio) == GOLDEN_SHA256


def test_shipped_voice_is_bit_identical_when_pushed_in_pieces(mel: np.ndarray) -> None:
    rt = VocoderRuntime.load(MODEL)
    stream = rt.open_stream(seed=SEED)
    out: list[np.ndarray] = []
    for start in range(0, len(mel), 5):
        stream.push(mel[start : start + 5])
        while stream.pending():
            out.append(stream.step())
    stream.finish()
    while stream.pending():
        out.append(stream.step())
    assert sha256(np.concatenate(out)) == GOLDEN_SHA256


def test_reference_makes_the_same_audio(mel: np.ndarray) -> None:
    rt = VocoderRuntime.load(MODEL)
    audio = np.asarray(vocode(rt.weights, rt.config, mel, seed=SEED), dtype=np.float32)
    assert sha256(audio) == GOLDEN_SHA256


@pytest.mark.parametrize("isa", RUNNABLE)
def test_shipped_voice_is_bit_identical_when_streams_step_together(
    isa: str, mel: np.ndarray
) -> None:
    """Streams stepped together (batched kernel calls, models.batching.step_streams): each one's
    audio is still the golden one, beside a stream of other audio."""
    from models.batching import step_streams

    rt = VocoderRuntime.load(MODEL, isa=isa)
    assert rt.batch_sizes == (1, 2, 4, 8)
    streams = [rt.open_stream(seed=SEED if i != 2 else 7) for i in range(5)]  # 4 + 1 per step
    for s in streams:
        s.push(mel)
        s.finish()
    out: list[list[np.ndarray]] = [[] for _ in streams]
    while any(s.pending() for s in streams):
        for pieces, pcm in zip(out, step_streams(streams), strict=True):
            pieces.append(pcm.copy())
    audio = [np.concatenate(pieces) for pieces in out]
    assert [sha256(a) == GOLDEN_SHA256 for a in audio] == [True, True, False, True, True]
