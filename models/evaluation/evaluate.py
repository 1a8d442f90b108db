"""`sparrow eval`: vocoding quality on held-out utterances, through the server's own runtime path.

For each `split == test` utterance of the corpus, the original log-mel is vocoded by every compiled
model given (TVM runtime, `VocoderRuntime.generate`, exactly what the server runs) and by
Griffin-Lim from the same mel. The headline scores are perceptual (models.evaluation.perceptual:
DNSMOS P.835 / P.808 and ASR word error rate, printed first); below them, as diagnostics, each
output is compared with the original audio:

- LSD, log-spectral distance (dB): per frame sqrt(mean_k (10 log10 P_ref - 10 log10 P_out)^2) over
  the STFT bins of models.dsp.features (2048-point FFT, 50 ms window, 12.5 ms hop), averaged over
  frames.
- MCD, mel-cepstral distortion (dB): (10 / ln 10) sqrt(2 sum_{d=1..24} (c_d - c'_d)^2) per frame,
  where c is the cepstrum (DCT-II, true-cepstrum scaling) of the natural-log magnitude mel spectrum
  (80 bands); c_0 (loudness) is left out as usual. A filterbank cepstrum, not SPTK's all-pass
  mel-cepstrum: the scale is the usual one, but compare rows with each other first.

Both are computed over active frames only (reference frame energy within 40 dB of the utterance's
loudest frame): leading/trailing silence would otherwise dominate with arbitrary values.
The outputs are sample-aligned with the original (same mel, same hop), so no time warping is used.

No torch here: the TVM runtime, numpy/scipy, and (optionally) librosa for Griffin-Lim and
matplotlib for the plots.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from models.dsp.features import SPEC
from models.dsp.lpc import lpc_noise_vocoder
from models.evaluation.metrics import (
    VOICING_KEYS,
    band_bias_db,
    band_lsd_db,
    band_periodicity,
    log_spectral_distance,
    lsd_voiced_unvoiced,
    mel_cepstral_distortion,
    nanmean,
    voicing_scores,
)
from models.evaluation.systems import griffin_lim, noise_oracle, vocode_counted

logger = logging.getLogger(__name__)


class EvalError(ValueError):
    """Bad evaluation input (missing corpus, no test utterances, no models)."""


# --- corpus ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestUtterance:
    id: str
    audio: np.ndarray  # float32 [L]
    mel: np.ndarray  # float32 [L // hop + 1, 80]
    text: str


def load_test_set(
    corpus: Path, limit: int | None, max_seconds: float | None, split: str = "test"
) -> list[TestUtterance]:
    meta = corpus / "metadata.csv"
    if not meta.exists():
        raise EvalError(f"no corpus at {corpus} (expected {meta}); run `sparrow data` first")
    with meta.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == split]
    rows.sort(key=lambda r: r["id"])
    out = []
    for row in rows[:limit] if limit else rows:
        audio, sr = sf.read(corpus / "wav" / f"{row['id']}.wav", dtype="float32")
        mel = np.load(corpus / "mel" / f"{row['id']}.npy").astype(np.float32)
        if sr != SPEC.sample_rate:
            raise EvalError(f"{row['id']}: sample rate {sr}, expected {SPEC.sample_rate}")
        if max_seconds:
            frames = max(1, int(max_seconds * SPEC.sample_rate / SPEC.hop_length))
            mel, audio = mel[:frames], audio[: frames * SPEC.hop_length]
        out.append(TestUtterance(row["id"], audio, mel, row.get("text", "")))
    if not out:
        raise EvalError(f"no {split!r} utterances in {meta}")
    return out


# --- report ---------------------------------------------------------------------------------------


def evaluate(
    utterances: list[TestUtterance],
    systems: dict[str, object],
    *,
    griffin_lim_iters: int | None = 32,
    lpc_noise: bool = True,
    oracle: bool = True,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """Score every system on every utterance. Returns (summary, audio by utterance and system).

    systems: name -> a VocoderRuntime (anything with generate(mel, seed)). Baselines from the same
    mel: Griffin-Lim ("griffin-lim", unless griffin_lim_iters is None) and white noise through the
    mel's LPC envelope ("lpc-noise", models.dsp.lpc, unless lpc_noise is False); and, as a yardstick
    rather than a baseline, the original with its noise redrawn ("noise-oracle", noise_oracle,
    unless oracle is False).
    summary[name] = {lsd_db, mcd_db, rtf, n, lsd_max_db (the worst utterance: a runaway shows
    here), lsd_voiced_db and lsd_unvoiced_db (lsd_voiced_unvoiced, mean over the utterances that
    have such frames), the VOICING_KEYS of voicing_scores (likewise), band_bias_db and band_lsd_db
    (means over utterances of those functions), per_utterance (LSD, MCD lists)}.

    Long because each utterance runs every system and every metric in one pass over shared
    intermediates (the reference, its spectra, the runtime's counts); the metrics themselves are
    models/evaluation/metrics.py.
    """
    names = list(systems) + ([] if griffin_lim_iters is None else ["griffin-lim"])
    names += ["lpc-noise"] if lpc_noise else []
    names += ["noise-oracle"] if oracle else []
    per: dict[str, dict[str, list[float]]] = {
        n: {
            "lsd_db": [],
            "mcd_db": [],
            "seconds": [],
            "bias": [],
            "band_lsd": [],
            "band_periodicity": [],
            "voiced": [],
            "unvoiced": [],
            "redrawn": [],
            "clipped": [],
            **{key: [] for key in VOICING_KEYS},
        }
        for n in names
    }
    audio_out: dict[str, dict[str, np.ndarray]] = {}
    total_audio = 0.0
    original_periodicity = []
    for utt in utterances:
        outs: dict[str, np.ndarray] = {"original": utt.audio}
        original_periodicity.append(band_periodicity(utt.audio, utt.audio))
        total_audio += utt.audio.shape[0] / SPEC.sample_rate
        for name in names:
            t0 = time.perf_counter()
            if name == "griffin-lim":
                y = griffin_lim(utt.mel, n_iter=griffin_lim_iters or 32, seed=seed)
            elif name == "lpc-noise":
                y = lpc_noise_vocoder(utt.mel, seed=seed)
            elif name == "noise-oracle":
                y = noise_oracle(utt.audio, seed=seed)
            else:
                y, redrawn, clipped = vocode_counted(systems[name], utt.mel, seed=seed)
                per[name]["redrawn"].append(redrawn)
                per[name]["clipped"].append(clipped)
            per[name]["seconds"].append(time.perf_counter() - t0)
            per[name]["lsd_db"].append(log_spectral_distance(utt.audio, y))
            per[name]["mcd_db"].append(mel_cepstral_distortion(utt.audio, y))
            per[name]["bias"].append(band_bias_db(utt.audio, y))
            per[name]["band_lsd"].append(band_lsd_db(utt.audio, y))
            per[name]["band_periodicity"].append(band_periodicity(utt.audio, y))
            voiced, unvoiced = lsd_voiced_unvoiced(utt.audio, y)
            per[name]["voiced"].append(voiced)
            per[name]["unvoiced"].append(unvoiced)
            for key, value in voicing_scores(utt.audio, y).items():
                per[name][key].append(value)
            outs[name] = y[: utt.audio.shape[0]]
            logger.info(
                "%s %-20s LSD %.2f dB  MCD %.2f dB",
                utt.id,
                name,
                per[name]["lsd_db"][-1],
                per[name]["mcd_db"][-1],
            )
        audio_out[utt.id] = outs
    summary = {
        n: {
            "lsd_db": float(np.mean(v["lsd_db"])),
            "mcd_db": float(np.mean(v["mcd_db"])),
            "rtf": float(np.sum(v["seconds"]) / total_audio),
            "n": len(v["lsd_db"]),
            "lsd_max_db": float(np.max(v["lsd_db"])),
            "lsd_voiced_db": nanmean(v["voiced"]),
            "lsd_unvoiced_db": nanmean(v["unvoiced"]),
            **{key: nanmean(v[key]) for key in VOICING_KEYS},
            "band_bias_db": [float(b) for b in np.mean(v["bias"], axis=0)],
            "band_lsd_db": [float(b) for b in np.mean(v["band_lsd"], axis=0)],
            "band_periodicity": [nanmean(list(b)) for b in np.array(v["band_periodicity"]).T],
            "band_periodicity_original": [
                nanmean(list(b)) for b in np.array(original_periodicity).T
            ],
            # vocoders only (None for the baselines): draws redone, frames sent at full scale
            "frames_redrawn": int(np.sum(v["redrawn"])) if v["redrawn"] else None,
            "frames_clipped": int(np.sum(v["clipped"])) if v["clipped"] else None,
            "per_utterance": {"lsd_db": v["lsd_db"], "mcd_db": v["mcd_db"]},
        }
        for n, v in per.items()
    }
    return summary, audio_out
