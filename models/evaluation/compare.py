"""Paired comparison of systems against a baseline for `sparrow eval --baseline NAME`.

A sampling vocoder's scores move with its seed: on 73 held-out utterances two seeds of one voice
differ by ~0.02 in mean DNSMOS OVRL and ~1 point of word error rate, as much as two voices that
are meant to be compared. Every system is scored on the same utterances under the same seeds, so
each (utterance, seed) is a pair: the difference of the means is the mean of the per-pair
differences, and its standard error comes from their spread, free of the variation between
utterances that both systems share. The word error rate pairs the word edits: its difference is
(edits - baseline edits) summed over pairs / reference words, the standard error
sqrt(n) * sd(edit differences) / reference words.

A difference is called `lower` / `higher` when it lies more than SE_CALL standard errors from 0
(for WER: `fewer` / `more` word errors), else `within noise`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.evaluation.perceptual import UtteranceScore

SE_CALL = 2.0  # standard errors a difference must clear to be called lower or higher


@dataclass(frozen=True)
class Difference:
    """A system minus the baseline over the pairs they share: the mean difference and its standard
    error (NaN with fewer than two pairs)."""

    mean: float
    se: float

    def call(self, up: str, down: str) -> str:
        """`up` / `down` when the difference clears SE_CALL standard errors, else "within noise"."""
        if math.isnan(self.se) or abs(self.mean) <= SE_CALL * self.se:
            return "within noise"
        return up if self.mean > 0 else down


@dataclass(frozen=True)
class Comparison:
    """One system against the baseline: DNSMOS OVRL, P.808 and WER differences, over `pairs`."""

    ovrl: Difference
    p808: Difference
    wer: Difference
    pairs: int


def _mean_and_se(d: np.ndarray) -> Difference:
    if d.size == 0:
        return Difference(math.nan, math.nan)
    se = float(np.std(d, ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
    return Difference(float(np.mean(d)), se)


def compare(scores: Mapping[str, Sequence[UtteranceScore]], baseline: str) -> dict[str, Comparison]:
    """Every system of `scores` but the baseline against it, paired by (utterance, seed)."""
    if baseline not in scores:
        raise KeyError(f"no scores for the baseline {baseline!r} (have: {', '.join(scores)})")
    base = {(s.utterance, s.seed): s for s in scores[baseline]}
    out: dict[str, Comparison] = {}
    for name, rows in scores.items():
        if name == baseline:
            continue
        pairs = [(s, base[(s.utterance, s.seed)]) for s in rows if (s.utterance, s.seed) in base]
        ovrl = np.array([s.ovrl - b.ovrl for s, b in pairs])
        p808 = np.array([s.p808 - b.p808 for s, b in pairs])
        texts = [(s, b) for s, b in pairs if b.words]
        total = sum(b.words for _, b in texts)
        edits = np.array([s.edits - b.edits for s, b in texts], dtype=float)
        if total and edits.size:
            sd = float(np.std(edits, ddof=1)) if edits.size > 1 else math.nan
            wer = Difference(float(edits.sum()) / total, math.sqrt(edits.size) * sd / total)
        else:
            wer = Difference(math.nan, math.nan)
        out[name] = Comparison(_mean_and_se(ovrl), _mean_and_se(p808), wer, len(pairs))
    return out


def format_comparison(comparisons: Mapping[str, Comparison], baseline: str, seeds: int) -> str:
    """Markdown: each system's differences from the baseline, ± one standard error, called."""
    lines = [
        (
            f"Difference from `{baseline}`, paired over utterances × {seeds} seed(s) "
            f"(± one standard error; called beyond {SE_CALL:g}):"
        ),
        "",
        "| system | Δ DNSMOS OVRL | Δ DNSMOS P.808 | Δ ASR WER | pairs |",
        "|---|---|---|---|---|",
    ]
    for name, c in comparisons.items():
        lines.append(
            f"| {name} | {c.ovrl.mean:+.3f} ± {c.ovrl.se:.3f} ({c.ovrl.call('higher', 'lower')}) "
            f"| {c.p808.mean:+.3f} ± {c.p808.se:.3f} ({c.p808.call('higher', 'lower')}) "
            f"| {c.wer.mean:+.1%} ± {c.wer.se:.1%} ({c.wer.call('more errors', 'fewer errors')}) "
            f"| {c.pairs} |"
        )
    return "\n".join(lines)
