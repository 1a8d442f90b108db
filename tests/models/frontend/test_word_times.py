"""Word times from Festival's utterance structure line up with the speech they name."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from models.dsp.features import SPEC
from models.frontend.festival import WordTime
from models.frontend.festival_frontend import FestivalFrontend, Spoken

FRAME_S = SPEC.hop_length / SPEC.sample_rate
LOUD = -3.0  # a frame whose loudest log-mel bin is above this is speech, never silence
SLACK = 3  # frames (37.5 ms) of a word's release or onset may spill past its span

# Held out: not the sentences the extraction was developed on.
SENTENCES = [
    "Seven silver swans, gliding slowly, crossed the misty lake at dawn.",
    "Stop! Please wait here; the doctor will see you soon.",
    "On March 3rd, 2021, we paid $45.50 for twelve apples.",
]


@pytest.fixture(scope="module")
def fe() -> Iterator[FestivalFrontend]:
    frontend = FestivalFrontend()
    assert frontend.available(), "Festival and festvox-us-slt-hts must be installed for these tests"
    yield frontend
    frontend.close()


def misaligned(sp: Spoken, words: tuple[WordTime, ...]) -> list[str]:
    """What is wrong with `words` as the word spans of `sp`'s mel (empty if nothing)."""
    loud = sp.mel.max(axis=1)
    problems = []
    covered = np.zeros(loud.shape[0], dtype=bool)
    for w in words:
        lo = max(int(w.start / FRAME_S) - SLACK, 0)
        covered[lo : int(np.ceil(w.end / FRAME_S)) + SLACK] = True
        inside = loud[int(w.start / FRAME_S) : int(np.ceil(w.end / FRAME_S))]
        if inside.size == 0 or inside.max() < LOUD:
            problems.append(f"{w.word!r} has no speech in its span")
    stray = np.flatnonzero((loud >= LOUD) & ~covered)
    if stray.size > 0.02 * np.count_nonzero(loud >= LOUD):
        problems.append(f"speech outside every word at frames {stray[:10].tolist()}")
    # Silences between words (and before the first) fall in the gaps: their middle is quiet.
    gaps = [(0.0, words[0].start)] + [(a.end, b.start) for a, b in itertools.pairwise(words)]
    for start, end in gaps:
        lo, hi = int(np.ceil(start / FRAME_S)) + SLACK, int(end / FRAME_S) - 1
        if hi - lo >= 3 and np.median(loud[lo:hi]) > -4.5:
            problems.append(f"gap {start:.3f}-{end:.3f} s is not quiet")
    return problems


@pytest.mark.parametrize("speed", [1.0, 2.5, 0.6, 3.5])
@pytest.mark.parametrize("sentence", SENTENCES)
def test_word_spans_match_the_speech(fe: FestivalFrontend, sentence: str, speed: float) -> None:
    spoken = list(fe.spoken_for_text(sentence, speed=speed))
    n_gaps = 0
    for sp in spoken:
        words = sp.words
        assert words, "every sentence has words"
        starts = [w.start for w in words]
        assert starts == sorted(starts)
        assert all(
            a.end <= b.start + 1e-9 and b.start < b.end for a, b in itertools.pairwise(words)
        )
        assert words[-1].end <= sp.mel.shape[0] * FRAME_S + 1e-9
        assert misaligned(sp, words) == []
        n_gaps += sum(b.start - a.end > 0.05 for a, b in itertools.pairwise(words))
        # the check is not blind: the same words 0.25 s late are caught
        late = tuple(WordTime(w.word, w.start + 0.25, w.end + 0.25) for w in words)
        assert misaligned(sp, late) != []
    assert n_gaps >= 1 or speed > 2  # commas leave pauses between words (short when fast)


def test_words_are_festival_words(fe: FestivalFrontend) -> None:
    (sp,) = fe.spoken_for_text("It costs $3, Dr. Lee said.")
    assert [w.word for w in sp.words] == [
        "It",
        "costs",
        "three",
        "dollars",
        "Doctor",
        "Lee",
        "said",
    ]
