"""(maintenance) Regenerate the shipped sample mel (server/static/sample-mel.json) with Festival,
so the demo's "sample mel" button and `--mel-frames` work without Festival on the client side."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from models.dsp.features import SPEC

SAMPLE_TEXT = "Hello! This is Sparrow, speaking to you in real time."


def make_sample_mel(text: str = SAMPLE_TEXT) -> np.ndarray:
    """Speak `text` with Festival (text2wave) and return its log-mel float32 [n, n_mels]."""
    import soundfile as sf

    from models.dsp.features import log_mel, resample

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "sample.wav"
        subprocess.run(["text2wave", "-o", str(wav)], input=text.encode(), check=True)
        audio, sr = sf.read(wav, dtype="float32")
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return log_mel(resample(audio, sr, SPEC.sample_rate))


def write_sample_mel(path: Path, text: str = SAMPLE_TEXT) -> np.ndarray:
    mel = make_sample_mel(text)
    payload = {
        "text": text,
        "sample_rate": SPEC.sample_rate,
        "hop_length": SPEC.hop_length,
        "n_mels": SPEC.n_mels,
        "shape": list(mel.shape),
        # Two decimals of natural-log mel = 0.04 dB: far below audible, halves the file.
        "mel": [[round(float(v), 2) for v in row] for row in mel],
    }
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    return mel
