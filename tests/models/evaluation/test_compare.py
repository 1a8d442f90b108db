"""Paired comparison of `sparrow eval --baseline`: differences, standard errors and their calls
on scores built here, where the true difference is known."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from models.evaluation.compare import SE_CALL, Difference, compare, format_comparison
from models.evaluation.perceptual import UtteranceScore, summarize


def _rows(ovrl: np.ndarray, p808: np.ndarray, edits: np.ndarray, seeds: int) -> list:
    """Rows of utterances u0.. under seeds 0..seeds-1, values in utterance-major order."""
    n = ovrl.size // seeds
    return [
        UtteranceScore(
            f"u{i % n}", i // n, 3.0, 4.0, float(ovrl[i]), float(p808[i]), int(edits[i]), 10
        )
        for i in range(ovrl.size)
    ]


def test_a_system_identical_to_the_baseline_differs_by_nothing() -> None:
    rng = np.random.default_rng(0)
    o, p, e = rng.normal(3, 0.3, 40), rng.normal(3.6, 0.2, 40), rng.integers(0, 5, 40)
    result = compare({"base": _rows(o, p, e, 2), "same": _rows(o, p, e, 2)}, "base")
    assert list(result) == ["same"]
    c = result["same"]
    assert c.pairs == 40
    assert (c.ovrl.mean, c.ovrl.se, c.p808.mean, c.wer.mean, c.wer.se) == (0, 0, 0, 0, 0)
    assert c.ovrl.call("higher", "lower") == "within noise"


def test_pairing_sees_a_small_shift_that_utterance_spread_hides() -> None:
    # Utterances differ by far more (sd 0.5) than the systems (0.03): unpaired, the shift is lost
    # in the spread; paired by (utterance, seed), it stands out.
    rng = np.random.default_rng(1)
    utterance = rng.normal(3.0, 0.5, 60)
    base = utterance + rng.normal(0, 0.01, 60)
    better = utterance + 0.03 + rng.normal(0, 0.01, 60)
    worse_p808 = utterance - 0.03 + rng.normal(0, 0.01, 60)
    edits = np.full(60, 2)
    c = compare(
        {"base": _rows(base, base, edits, 3), "new": _rows(better, worse_p808, edits, 3)}, "base"
    )["new"]
    assert c.ovrl.mean == pytest.approx(0.03, abs=0.01)
    assert c.ovrl.se < 0.005 and c.ovrl.call("higher", "lower") == "higher"
    assert c.p808.call("higher", "lower") == "lower"
    unpaired_se = math.sqrt(np.var(better, ddof=1) / 60 + np.var(base, ddof=1) / 60)
    assert abs(c.ovrl.mean) < SE_CALL * unpaired_se  # what an unpaired comparison would call noise


def test_word_error_difference_is_edits_over_reference_words() -> None:
    base = [
        UtteranceScore(f"u{i}", 0, 0, 0, 3, 3, e, w)
        for i, (e, w) in enumerate([(1, 10), (2, 5), (0, 5)])
    ]
    new = [
        UtteranceScore(f"u{i}", 0, 0, 0, 3, 3, e, w)
        for i, (e, w) in enumerate([(3, 10), (2, 5), (1, 5)])
    ]
    c = compare({"base": base, "new": new}, "base")["new"]
    d = np.array([2, 0, 1])
    assert c.wer.mean == pytest.approx(3 / 20)
    assert c.wer.se == pytest.approx(math.sqrt(3) * np.std(d, ddof=1) / 20)
    # the same as the difference of the corpus WERs summarize reports
    wers = summarize({"base": base, "new": new})
    assert c.wer.mean == pytest.approx(wers["new"]["wer"] - wers["base"]["wer"])


def test_pairs_match_by_utterance_and_seed_whatever_the_order() -> None:
    rng = np.random.default_rng(2)
    o = rng.normal(3, 0.3, 20)
    base = _rows(o, o, np.zeros(20, int), 2)
    new = _rows(o + 0.1, o, np.zeros(20, int), 2)
    shuffled = new[:]
    random.Random(0).shuffle(shuffled)
    extra = UtteranceScore("only-here", 0, 0, 0, 1.0, 1.0, 0, 0)  # no partner: left out
    a = compare({"base": base, "new": new}, "base")["new"]
    b = compare({"base": base, "new": [*shuffled, extra]}, "base")["new"]
    assert a == b and b.pairs == 20 and b.ovrl.mean == pytest.approx(0.1)


def test_missing_baseline_and_lone_pairs() -> None:
    with pytest.raises(KeyError, match="baseline 'x'"):
        compare({"a": []}, "x")
    one = [UtteranceScore("u", 0, 0, 0, 3.0, 3.0, 1, 4)]
    c = compare({"b": one, "a": [UtteranceScore("u", 0, 0, 0, 2.0, 3.0, 1, 4)]}, "b")["a"]
    assert c.ovrl.mean == -1.0 and math.isnan(c.ovrl.se)
    assert c.ovrl.call("higher", "lower") == "within noise"  # one pair: no error to judge by
    assert Difference(-1.0, 0.1).call("higher", "lower") == "lower"


def test_the_table_shows_each_difference_with_its_call() -> None:
    rng = np.random.default_rng(3)
    o = rng.normal(3, 0.3, 30)
    edits = rng.integers(0, 3, 30)
    table = format_comparison(
        compare({"base": _rows(o, o, edits, 1), "loud": _rows(o - 0.5, o, edits + 3, 1)}, "base"),
        "base",
        1,
    )
    assert "Difference from `base`, paired over utterances × 1 seed(s)" in table
    row = next(line for line in table.splitlines() if line.startswith("| loud |"))
    assert "-0.500 ± 0.000 (lower)" in row and "(within noise)" in row
    assert "+30.0% ± 0.0% (more errors)" in row and row.endswith("| 30 |")
