"""`sparrow eval`'s output: summary tables, spectrogram plots and the generated docs/quality.md."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

import numpy as np

from models.dsp.features import SPEC, magnitude_spectrogram
from models.evaluation import perceptual
from models.evaluation.metrics import (
    BANDS_HZ,
    PITCH_HZ,
    VOICED_THRESHOLD,
    band_index,
)
from models.evaluation.systems import NOISE_ORACLE_SMOOTH_BINS, NOISE_ORACLE_SPLIT_HZ

logger = logging.getLogger(__name__)


def format_table(summary: dict[str, dict]) -> str:
    lines = [
        (
            "| system | LSD (dB) ↓ | worst utterance LSD | MCD (dB) ↓ | real-time factor | "
            "utterances "
            "| frames redrawn / clipped |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        counts = (
            "–"
            if m.get("frames_redrawn") is None
            else f"{m['frames_redrawn']} / {m['frames_clipped']}"
        )
        lines.append(
            f"| {name} | {m['lsd_db']:.2f} | {m['lsd_max_db']:.2f} | {m['mcd_db']:.2f} "
            f"| {m['rtf']:.3f} | {m['n']} | {counts} |"
        )
    return "\n".join(lines)


def format_voicing_table(summary: dict[str, dict]) -> str:
    """LSD over voiced and unvoiced frames apart, and how well the harmonics come out."""
    lines = [
        (
            "| system | LSD voiced frames | LSD unvoiced frames | periodicity (voiced frames) "
            "| F0 error (median cents) | V/UV disagreement |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        lines.append(
            f"| {name} | {m['lsd_voiced_db']:.2f} | {m['lsd_unvoiced_db']:.2f} "
            f"| {m['periodicity']:.2f} | {m['f0_error_cents']:.0f} | {m['vuv_error']:.1%} |"
        )
    return "\n".join(lines)


def _format_band_table(summary: dict[str, dict], key: str, fmt: str) -> str:
    edges = [f"{a / 1000:g}–{b / 1000:g} kHz" for a, b in itertools.pairwise(BANDS_HZ)]
    lines = ["| system | " + " | ".join(edges) + " |", "|---" * (len(edges) + 1) + "|"]
    for name, m in summary.items():
        lines.append(f"| {name} | " + " | ".join(format(b, fmt) for b in m[key]) + " |")
    return "\n".join(lines)


def format_bias_table(summary: dict[str, dict]) -> str:
    """Band energy of each system minus the original's (dB), mean over utterances."""
    return _format_band_table(summary, "band_bias_db", "+.1f")


def format_band_lsd_table(summary: dict[str, dict]) -> str:
    """RMS dB difference per band of each system (dB), mean over utterances."""
    return _format_band_table(summary, "band_lsd_db", ".1f")


def format_band_periodicity_table(summary: dict[str, dict]) -> str:
    """Periodicity per band over the original's voiced frames: the original's row, then each
    system's."""
    first = next(iter(summary.values()))
    rows = {"original": {"band_periodicity": first["band_periodicity_original"]}, **summary}
    return _format_band_table(rows, "band_periodicity", ".2f")


def save_spectrograms(path: Path, outs: dict[str, np.ndarray], title: str) -> None:
    """Side-by-side log spectrograms (original first) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(outs))
    nrows = -(-len(outs) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols, 2.4 * nrows), sharex=True, sharey=True, squeeze=False
    )
    for ax in axes.ravel()[len(outs) :]:
        ax.axis("off")
    top = None  # one colour scale for all panels, set by the first (the original)
    for ax, (name, y) in zip(axes.ravel(), outs.items()):
        db = 20 * np.log10(magnitude_spectrogram(y).T + 1e-5)
        top = float(db.max()) if top is None else top
        extent = (0, y.shape[0] / SPEC.sample_rate, 0, SPEC.sample_rate / 2000)
        ax.imshow(
            db, origin="lower", aspect="auto", extent=extent, vmin=top - 90, vmax=top, cmap="magma"
        )
        ax.set_title(name, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("s")
    for ax in axes[:, 0]:
        ax.set_ylabel("kHz")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write_quality_doc(
    path: Path,
    summary: dict[str, dict[str, float]],
    args: argparse.Namespace,
    plots: list[str],
    samples: list[str],
    manifests: dict[str, dict],
    headline: perceptual.Headline | None = None,
) -> None:
    """Write docs/quality.md from a run, wholly generated. Long because it is the page's text
    (one f-string block per section, in page order); splitting it would scatter one document."""
    models = "\n".join(
        f"- `{name}`: {m.get('description') or ''} (trained: {m.get('trained')}, ISA module used: "
        f"{m.get('_isa', '?')}"
        + (
            f"; synthesis settings over its own: `{json.dumps(m['_synthesis'])}`"
            if m.get("_synthesis")
            else ""
        )
        + ")"
        for name, m in manifests.items()
    )
    intro = (
        f"Measured with `sparrow eval --limit {args.limit} --max-seconds {args.max_seconds:g}"
        f"{''.join(f' --seed {seed}' for seed in args.seed or [])}` on "
        f"the "
        "held-out (`split == test`) utterances of the Festival corpus: each original log-mel is "
        "vocoded "
        "through the TVM runtime (a `VocoderStream`, the server's own path, redraws included), by "
        "Griffin-Lim "
        "(32 iterations, NNLS mel inversion) and by `lpc-noise` (white noise through each frame's "
        "24-pole LPC envelope fitted to the mel, pre-emphasis 0.85: no learned part, "
        "models/dsp/lpc.py) "
        "from the same mel, and compared with the original audio. "
        "Lower is better for both metrics; the real-time factor is wall time / audio time on this "
        "shared "
        "machine (Griffin-Lim includes librosa); frames redrawn / clipped: draws the stream redid "
        "because "
        "the output reached full scale, and frames that still did after every redraw (the model's "
        "`clip_retries`)."
    )
    lsd = (
        "- **LSD** (log-spectral distance): RMS over STFT bins of the dB difference, averaged over "
        "active "
        "frames (within 40 dB of the loudest), 2048-point FFT, 50 ms window, 12.5 ms hop."
    )
    mcd = (
        "- **MCD** (mel-cepstral distortion): `10/ln10 * sqrt(2 * sum (c_d - c'_d)^2)` over "
        "cepstra 1..24 "
        "(true-cepstrum scaling) of the 80-band natural-log magnitude mel spectrum, active frames "
        "only; a "
        "filterbank cepstrum rather than SPTK's all-pass mel-cepstrum, so compare rows with each "
        "other first."
    )
    first = next(iter(summary.values()))
    voicing = (
        "Voicing (active frames; a frame is voiced when its 50 ms window has a normalised "
        f"autocorrelation peak above {VOICED_THRESHOLD:g} at a lag of "
        f"{PITCH_HZ[0]:g}-{PITCH_HZ[1]:g} Hz):"
    )
    split = (
        "- **LSD voiced / unvoiced frames**: the LSD above over the original's voiced frames and "
        "over "
        "the rest. The two have different floors: in an unvoiced frame the original is noise, and "
        "a "
        "vocoder that samples noise of exactly the right spectrum still scores ~7.9 dB (two "
        "independent "
        "noise spectra), while the smooth expected spectrum (roughly what Griffin-Lim makes from a "
        "mel) "
        "scores ~6.1 dB. In a voiced frame both can approach 0."
    )
    periodic = (
        "- **Periodicity**: that autocorrelation peak, averaged over the original's voiced frames: "
        "how "
        "clearly the voice's harmonics come out (noise through the right envelope scores near 0). "
        "The "
        f"original scores {first['periodicity_original']:.2f} over the same frames."
    )
    f0 = (
        "- **F0 error**: median |pitch difference| in cents (100 = a semitone) over the frames "
        "voiced "
        "in both, the pitch being the peak's lag; **V/UV disagreement**: the share of active "
        "frames "
        "voiced in one signal and not the other. A pitch a few per cent off puts the higher "
        "harmonics "
        "between the original's, which the LSD of the 0.15-2 kHz bands sees."
    )
    sampling = (
        "- The vocoder samples its output, so its waveform never matches the original sample for "
        "sample; "
        "the metrics only look at magnitude spectra, where a good vocoder does match."
    )
    oracle = (
        "- **noise-oracle** is a yardstick, not a vocoder: the original audio itself, kept as it "
        "is "
        f"below {NOISE_ORACLE_SPLIT_HZ / 1000:g} kHz in its voiced frames, and everywhere else "
        f"(unvoiced "
        "frames, and every frame above that, where the original is noise even when voiced: see the "
        "periodicity per band below) replaced by fresh noise of the original's own spectrum, "
        "smoothed "
        f"over ±{NOISE_ORACLE_SMOOTH_BINS * SPEC.sample_rate / SPEC.n_fft:.0f} Hz. It is what a "
        f"vocoder "
        "would score that got every harmonic exactly right and sampled perfectly shaped noise: "
        "per-bin "
        "LSD gives a fresh draw of the right noise no credit for being the right noise."
    )
    bias = (
        "Band energy, output minus original (dB, active frames, mean over utterances): the sign "
        "of the distance, e.g. a vocoder too quiet where the voice is loud, or booming below it."
    )
    band = band_index(SPEC.n_fft // 2 + 1)
    shares = ", ".join(f"{np.mean(band == b):.0%}" for b in range(len(BANDS_HZ) - 1))
    band_lsd = (
        "LSD per band (RMS dB difference over the band's bins, active frames, mean over "
        "utterances): "
        "where the distance comes from. A band can have the right energy above and still score "
        "badly "
        "here, e.g. when the original's harmonics come out as noise. The bands hold "
        f"{shares} of the bins."
    )
    band_periodic = (
        "Periodicity per band (voiced frames of the original: the normalised correlation of each "
        "band with itself one pitch period earlier, mean over utterances): what each band of the "
        "original is, harmonics (near 1) or noise (near 0), and how much of that each system "
        "keeps. "
        "Where the original is noise, even in voiced frames, a sampling vocoder can only answer "
        "with "
        "other noise, and the per-bin LSD there has the noise-against-noise floor of the voicing "
        "notes above (~7.9 dB), while a smooth spectrum scores ~6.1 dB."
    )
    lines = [
        "## Vocoding quality",
        "",
        intro,
        "",
        *([headline.table, "", headline.notes, ""] if headline and headline.table else []),
        *([headline.comparison, ""] if headline and headline.comparison else []),
        format_table(summary),
        "",
        lsd,
        mcd,
        sampling,
        oracle,
        "",
        voicing,
        "",
        format_voicing_table(summary),
        "",
        split,
        periodic,
        f0,
        "",
        bias,
        "",
        format_bias_table(summary),
        "",
        band_lsd,
        "",
        format_band_lsd_table(summary),
        "",
        band_periodic,
        "",
        format_band_periodicity_table(summary),
        "",
        "Models:",
        models,
        "",
    ]
    if plots:
        lines += ["Spectrograms (original, then each system):", ""]
        lines += [
            f"![{Path(p).stem}]({Path(p).relative_to(path.parent).as_posix()})" for p in plots
        ]
        lines.append("")
    if samples:
        lines += [
            "Listen: "
            + ", ".join(
                f"[{Path(s).stem}]({Path(s).relative_to(path.parent).as_posix()})" for s in samples
            ),
            "",
        ]
    path.write_text("\n".join(lines))
