"""Perceptual scores of speech for `sparrow eval`: DNSMOS P.835 / P.808 and ASR word error rate.

Per-bin distances (LSD, MCD) reward a smooth expected spectrum over a fresh draw of the right noise:
a perfect sampling vocoder scores worse on them than a smoothed one. These scores judge what a
listener would, without the original to compare against:

- DNSMOS P.835 (Microsoft's non-intrusive predictor of ITU-T P.835 listening tests: SIG the speech
  signal, BAK the background, OVRL overall, 1-5, higher is better) and DNSMOS P.808 (overall
  quality as in a P.808 test), with the ONNX models the `speechmos` wheel ships. speechmos tiles a
  clip shorter than 9.01 s until it is that long, and averages over 9.01 s windows a second apart.
- ASR word error rate: CMU pocketsphinx with the US English model its wheel ships, against the text
  the utterance was synthesised from; (substitutions + deletions + insertions) / reference words,
  summed over utterances. The Festival original's own WER is the recogniser's floor on this text.

Both models run at 16 kHz, so audio is resampled with soxr first. Nothing is fetched at run time:
both packages read their models from their own directory in site-packages. They come with the
`eval` extra (`pip install -e '.[eval]'`) and are imported only when a score is computed, so the
server never loads onnxruntime or pocketsphinx.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import soxr

from models.dsp.features import SPEC

logger = logging.getLogger(__name__)

MODEL_RATE = 16_000  # DNSMOS and pocketsphinx's en-us model both take 16 kHz audio
EXTRA = "eval"
REQUIRED = ("onnxruntime", "speechmos", "librosa", "requests", "pocketsphinx")
"""Modules the scores import: speechmos imports librosa (features) and requests (unused) itself."""
DNSMOS_KEYS = ("sig", "bak", "ovrl", "p808")


class PerceptualUnavailable(RuntimeError):
    """The `eval` extra (or part of it) is not installed."""


# --- word error rate (pure) ------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-case words of `text` for scoring: letters, digits and apostrophes; everything else
    (punctuation, hyphens, quotes) separates words, as pocketsphinx's dictionary spells them."""
    return [w.strip("'") for w in re.findall(r"[a-z0-9']+", text.lower()) if w.strip("'")]


def word_edits(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences: the fewest substitutions, deletions and
    insertions that turn `reference` into `hypothesis` (each costs 1)."""
    previous = list(range(len(hypothesis) + 1))  # distances from the empty reference prefix
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete ref_word
                    current[j - 1] + 1,  # insert hyp_word
                    previous[j - 1] + (ref_word != hyp_word),  # match or substitute
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER of texts paired in order: total word edits / total reference words (may exceed 1
    with insertions); NaN when the references have no words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(words(r), words(h)) for r, h in zip(references, hypotheses)]
    total = sum(len(r) for r, _ in pairs)
    if total == 0:
        return math.nan
    return sum(word_edits(r, h) for r, h in pairs) / total


# --- models (lazy) ---------------------------------------------------------------------------------


def missing() -> list[str]:
    """The modules of REQUIRED that cannot be imported here (empty when the extra is installed)."""
    out = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def _require() -> None:
    gone = missing()
    if gone:
        raise PerceptualUnavailable(
            f"DNSMOS / P.808 / WER need the `{EXTRA}` extra: pip install -e '.[{EXTRA}]' "
            f"(missing: {', '.join(gone)})"
        )


def to_model_rate(audio: np.ndarray, rate: int = SPEC.sample_rate) -> np.ndarray:
    """float audio [L] at `rate` -> float32 [~L * 16000 / rate] at MODEL_RATE, clipped to [-1, 1]."""
    x = np.asarray(audio, dtype=np.float32)
    if rate != MODEL_RATE:
        x = soxr.resample(x, rate, MODEL_RATE, quality="HQ").astype(np.float32)
    return np.clip(x, -1.0, 1.0)


def dnsmos(audio: np.ndarray, rate: int = SPEC.sample_rate) -> dict[str, float]:
    """DNSMOS of float audio [L] at `rate`: {"sig", "bak", "ovrl"} (P.835) and "p808", each 1-5."""
    _require()
    from speechmos import dnsmos as speechmos_dnsmos

    scores = speechmos_dnsmos.run(to_model_rate(audio, rate), MODEL_RATE)
    return {
        "sig": float(scores["sig_mos"]),
        "bak": float(scores["bak_mos"]),
        "ovrl": float(scores["ovrl_mos"]),
        "p808": float(scores["p808_mos"]),
    }


def _decoder() -> object:
    """A fresh recogniser: pocketsphinx adapts its cepstral mean normalisation (and noise
    estimate) from utterance to utterance, so a reused one makes a transcript depend on what was
    decoded before it (a quiet clip before moved one of 8 held-out transcripts, resetting the
    mean alone did not undo it). A new one per utterance (~0.2 s) makes each system's word error
    rate depend on its own audio alone, whatever the order."""
    from pocketsphinx import Decoder

    # The default model is the en-us one inside the pocketsphinx package.
    return Decoder(samprate=MODEL_RATE, loglevel="FATAL")


def transcribe(audio: np.ndarray, rate: int = SPEC.sample_rate) -> str:
    """What pocketsphinx hears in float audio [L] at `rate`: lower-case words ("" for none)."""
    _require()
    pcm = np.round(to_model_rate(audio, rate) * 32767.0).astype(np.int16)
    decoder = _decoder()
    decoder.start_utt()  # type: ignore[attr-defined]
    decoder.process_raw(pcm.tobytes(), full_utt=True)  # type: ignore[attr-defined]
    decoder.end_utt()  # type: ignore[attr-defined]
    hyp = decoder.hyp()  # type: ignore[attr-defined]
    return hyp.hypstr if hyp is not None else ""


# --- the report's headline -------------------------------------------------------------------------


@dataclass(frozen=True)
class UtteranceScore:
    """One system's scores of one utterance under one sampling seed: DNSMOS (1-5) and the word
    edits of its transcript against the `words` words of the utterance's text (both 0 without a
    text). Corpus WER sums both over utterances; models/evaluation/compare.py pairs them."""

    utterance: str
    seed: int
    sig: float
    bak: float
    ovrl: float
    p808: float
    edits: int
    words: int


def score_utterances(
    audio: Mapping[str, Mapping[str, np.ndarray]], texts: Mapping[str, str], seed: int = 0
) -> dict[str, list[UtteranceScore]]:
    """DNSMOS and word edits of every system's audio of every utterance.

    audio: utterance id -> system name -> float audio [L] at SPEC.sample_rate (evaluate's second
    result: "original" first, then each system); texts: utterance id -> the text spoken; seed: the
    sampling seed the audio was made with (kept in the rows for pairing). Returns system -> rows,
    in the systems' first-seen order.
    """
    _require()
    out: dict[str, list[UtteranceScore]] = {}
    for uid, systems in audio.items():
        for name, y in systems.items():
            m = dnsmos(y)
            text = texts.get(uid)
            reference = words(text) if text else []
            edits = word_edits(reference, words(transcribe(y))) if text else 0
            out.setdefault(name, []).append(
                UtteranceScore(
                    uid, seed, m["sig"], m["bak"], m["ovrl"], m["p808"], edits, len(reference)
                )
            )
            logger.info("%s %-20s OVRL %.2f  P.808 %.2f", uid, name, m["ovrl"], m["p808"])
    return out


def summarize(scores: Mapping[str, Sequence[UtteranceScore]]) -> dict[str, dict[str, float]]:
    """system -> {sig, bak, ovrl, p808, wer}: DNSMOS means over the rows, and the corpus WER, word
    edits over reference words of the rows with a text (NaN when none has any)."""
    out = {}
    for name, rows in scores.items():
        total = sum(r.words for r in rows)
        out[name] = {
            **{key: float(np.mean([getattr(r, key) for r in rows])) for key in DNSMOS_KEYS},
            "wer": sum(r.edits for r in rows) / total if total else math.nan,
        }
    return out


def format_table(scores: Mapping[str, Mapping[str, float]]) -> str:
    lines = [
        "| system | DNSMOS SIG ↑ | DNSMOS BAK ↑ | DNSMOS OVRL ↑ | DNSMOS P.808 ↑ | ASR WER ↓ |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in scores.items():
        lines.append(
            f"| {name} | {m['sig']:.2f} | {m['bak']:.2f} | {m['ovrl']:.2f} | {m['p808']:.2f} "
            f"| {m['wer']:.1%} |"
        )
    return "\n".join(lines)


NOTES = (
    "- **DNSMOS** (P.835 SIG / BAK / OVRL and P.808, 1-5, higher is better): Microsoft's "
    "non-intrusive predictors of listening-test scores (the ONNX models of the `speechmos` "
    "package), mean over utterances at 16 kHz; they judge each output alone, not against the "
    "original. **ASR WER**: pocketsphinx (US English model) against the text each utterance was "
    "synthesised from, word edits / reference words over all utterances; the original's row is the "
    "recogniser's own floor on this text. LSD and MCD below are diagnostics: per-bin distances "
    "reward a smoothed spectrum over a fresh draw of the right noise (see `noise-oracle`)."
)


@dataclass
class Headline:
    """The perceptual table for `sparrow eval`: scores (empty when not computed) and its text."""

    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    table: str = ""  # Markdown table, or which extra to install
    notes: str = ""  # what the columns mean, for the Markdown report
    rows: dict[str, list[UtteranceScore]] = field(default_factory=dict)  # per utterance and seed
    comparison: str = ""  # differences from a baseline (models/evaluation/compare.py)


class Scorer:
    """The perceptual scores of a `sparrow eval` run, one sampling seed's audio at a time (only
    one seed's audio need exist at once), then its Headline. Disabled, or once the `eval` extra
    turns out missing, add() does nothing and the headline says so. The original's audio does not
    depend on the seed: it is scored once and its rows repeated for the other seeds (for
    pairing)."""

    def __init__(self, texts: Mapping[str, str], enabled: bool = True) -> None:
        self.texts = texts
        self.enabled = enabled
        self.rows: dict[str, list[UtteranceScore]] = {}
        self.unavailable: PerceptualUnavailable | None = None
        self._original: list[UtteranceScore] = []

    def add(self, seed: int, audio: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Score one seed's audio (utterance id -> system -> float audio, evaluate's second
        result)."""
        if not self.enabled or self.unavailable is not None:
            return
        if self._original:
            audio = {u: {k: y for k, y in s.items() if k != "original"} for u, s in audio.items()}
        try:
            scored = score_utterances(audio, self.texts, seed)
        except PerceptualUnavailable as exc:
            self.unavailable = exc
            return
        if "original" in scored:
            self._original = scored["original"]
        elif self._original:
            scored = {"original": [replace(r, seed=seed) for r in self._original], **scored}
        for name, rows in scored.items():
            self.rows.setdefault(name, []).extend(rows)

    def headline(self) -> Headline:
        """summarize over every seed added and format_table, or the install hint."""
        if self.unavailable is not None:
            return Headline(table=f"{self.unavailable}; the diagnostics follow.")
        if not self.enabled or not self.rows:
            return Headline()
        scores = summarize(self.rows)
        return Headline(scores, format_table(scores), NOTES, self.rows)
