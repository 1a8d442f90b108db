"""Word times from Festival's utterance structure line up with the speech they name."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from models.dsp.features import SPEC
from models.frontend.festival import WordTime
from models.frontend.festival_frontend import QUIET_LOG_MEL, VOICES, FestivalFrontend, Spoken

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


LONG_FIRST = (
    "When the morning train finally arrived at the station, the tired passengers walked slowly "
    "toward the old main exit gates. Then they went home."
)


def quiet_runs(mel: np.ndarray, min_frames: int = 3) -> list[tuple[int, int]]:
    """(first frame, length) of every run of quiet frames at least `min_frames` long."""
    quiet = np.concatenate([mel.max(axis=1) < QUIET_LOG_MEL, [False]])
    runs, start = [], None
    for i, q in enumerate(quiet):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start >= min_frames:
                runs.append((start, i - start))
            start = None
    return runs


def test_a_long_first_sentence_is_spoken_opening_first(fe: FestivalFrontend) -> None:
    plan = fe.plan(LONG_FIRST)
    assert [(s.text.split()[0], s.join) for s in plan] == [
        ("When", ""),
        ("finally", "word"),
        ("Then", ""),
    ]
    # each part is spoken with the words on the other side of the cut, which are cut off again
    assert [(s.before, s.after) for s in plan[:2]] == [("", "finally"), ("morning train", "")]
    assert plan[1].spoken_text.startswith("morning train finally arrived")
    assert [s.join for s in FestivalFrontend(opening_words=10).plan(LONG_FIRST)][:2] == [
        "",
        "clause",
    ]
    assert FestivalFrontend(opening_words=None).plan(LONG_FIRST)[1].join == ""
    # only the first sentence is cut: it is the one the first audio waits for
    assert len(fe.plan("Hi. " + LONG_FIRST)) == 3


@pytest.mark.parametrize(
    ("sentence", "opening_words", "join"),
    [
        (LONG_FIRST.split(". ")[0] + ".", 10, "clause"),
        (LONG_FIRST.split(". ")[0] + ".", 4, "word"),
        (LONG_FIRST.split(". ")[0] + ".", 6, "word"),
        # no plain word after the cut to speak as context ("don't"): a cut without it
        ("When the morning train don't arrive at the station, the passengers wait.", 4, "phrase"),
    ],
)
def test_the_parts_join_without_a_pause_of_their_own(
    sentence: str, opening_words: int, join: str
) -> None:
    """The opening and the rest sound as one sentence: at a comma the pause is about Festival's
    own, between words there is none, and the duration is about the same."""
    whole_fe, split_fe = (
        FestivalFrontend(opening_words=None),
        FestivalFrontend(opening_words=opening_words),
    )
    try:
        (whole,) = whole_fe.spoken_for_text(sentence)
        head, rest = split_fe.spoken_for_text(sentence)
        assert split_fe.plan(sentence)[1].join == join
    finally:
        whole_fe.close()
        split_fe.close()
    joined = np.concatenate([head.mel, rest.mel])
    assert abs(joined.shape[0] - whole.mel.shape[0]) < 0.04 * whole.mel.shape[0]
    at_join = [(s, n) for s, n in quiet_runs(joined, 2) if s <= head.mel.shape[0] <= s + n]
    comma = max(n for _, n in quiet_runs(whole.mel)[1:-1])  # the pause after "station,"
    if join == "clause":
        assert len(at_join) == 1 and abs(at_join[0][1] - comma) <= 3, (at_join, comma)
    else:
        assert at_join == []  # no pause mid-phrase
    # the words of both parts still line up with the speech
    assert misaligned(head, head.words) == [] and misaligned(rest, rest.words) == []


CUT_SENTENCES = [
    "Please remember to bring your passport and two printed copies of the booking confirmation.",
    "We should probably leave before the evening traffic gets much worse on the bridge.",
    "She quickly opened the heavy wooden door and stepped into the cold night air.",
]


@pytest.mark.parametrize("sentence", CUT_SENTENCES)
def test_a_cut_between_words_has_no_final_lengthening(fe: FestivalFrontend, sentence: str) -> None:
    """Spoken with its context word, the opening's last word lasts about as long as in the uncut
    sentence (spoken alone, it would be stretched as a sentence's last word), and the parts'
    words are the sentence's words, each once, in order."""
    whole_fe = FestivalFrontend(opening_words=None)
    try:
        (whole,) = whole_fe.spoken_for_text(sentence)
        (alone,) = whole_fe.spoken_for_text(fe.plan(sentence)[0].text)
    finally:
        whole_fe.close()
    head, rest = fe.spoken_for_text(sentence)
    assert fe.plan(sentence)[1].join == "word"
    assert [w.word for w in head.words + rest.words] == [w.word for w in whole.words]
    last = head.words[-1]
    in_whole = next(w for w in whole.words[: len(head.words)][::-1] if w.word == last.word)
    duration = last.end - last.start
    assert duration <= 1.2 * (in_whole.end - in_whole.start), (last, in_whole)
    # the check is not blind: the opening spoken on its own stretches its last word
    assert alone.words[-1].end - alone.words[-1].start > 1.2 * (in_whole.end - in_whole.start)
    assert misaligned(head, head.words) == [] and misaligned(rest, rest.words) == []
    # no pause where the parts meet
    at = head.mel.shape[0]
    joined = np.concatenate([head.mel, rest.mel])
    assert [(s, n) for s, n in quiet_runs(joined, 2) if s <= at <= s + n] == []


def test_context_words_are_plain_words() -> None:
    from models.frontend.plan import context_words

    assert context_words("When the morning train", "pulled into it.") == ("morning train", "pulled")
    # a word Festival may say as several (an acronym, digits) or with punctuation is no context
    assert context_words("We met the NASA", "team today.") == ("", "team")
    assert context_words("It was a", "don't do it.") == ("was a", "")
    assert context_words("So we paid", "twelve, then left.") == ("we paid", "")
    assert context_words("It is ten", "km away.") == ("is ten", "")  # Festival says "k m"


def test_context_cut_finds_the_text_between_its_context_words() -> None:
    from models.frontend.plan import context_cut

    words = [
        WordTime("morning", 0.2, 0.5),
        WordTime("train", 0.5, 0.8),
        WordTime("pulled", 0.8, 1.1),
        WordTime("in", 1.1, 1.3),
    ]
    assert context_cut(words, "morning", "in") == (0.5, 1.1, words[1:3])
    assert context_cut(words, "", "") == (None, None, words)
    # Festival said something else: no cut is guessed
    assert context_cut(words, "evening", "in") is None
    assert context_cut(words, "morning train pulled", "in") is None


@pytest.mark.parametrize("speed", [0.6, 3.5])
def test_a_cut_between_words_at_other_speeds(fe: FestivalFrontend, speed: float) -> None:
    """The cut follows the speed (Festival's rate, and past it the mel's time-scale)."""
    sentence = CUT_SENTENCES[0]
    head, rest = fe.spoken_for_text(sentence, speed=speed)
    assert [w.word for w in head.words] == ["Please", "remember", "to", "bring"]
    assert misaligned(head, head.words) == [] and misaligned(rest, rest.words) == []
    at = head.mel.shape[0]
    joined = np.concatenate([head.mel, rest.mel])
    assert [(s, n) for s, n in quiet_runs(joined, 2) if s <= at <= s + n] == []


def test_context_words_festival_does_not_say_are_dropped(fe: FestivalFrontend) -> None:
    """If Festival does not say a context word as that one word ("km" is "k m"), the part is
    spoken again without it, its cut edge trimmed as between words without context."""
    from models.frontend.plan import JOIN_KEEP_FRAMES, Sentence

    head = Sentence("When the morning train", 1.0, after="km")
    (sp,) = fe._spoken([head], VOICES["slt"], fe._binary(), leads=False)
    assert [w.word for w in sp.words] == ["When", "the", "morning", "train"]
    assert misaligned(sp, sp.words) == []
    loud = np.flatnonzero(sp.mel.max(axis=1) >= QUIET_LOG_MEL)
    assert sp.mel.shape[0] - 1 - loud[-1] <= JOIN_KEEP_FRAMES["phrase"]


def test_the_first_words_are_heard_without_festivals_lead_in(fe: FestivalFrontend) -> None:
    """A text that leads (nothing heard before it) loses Festival's ~0.2 s of silence before its
    first word, keeping EDGE_KEEP_FRAMES: the first word starts that much sooner, its words and
    the rest of the mel unchanged; a text that follows earlier audio keeps it as the pause."""
    from models.frontend.festival_frontend import EDGE_KEEP_FRAMES

    text = "Seven silver swans crossed the lake."
    (led,) = fe.spoken_for_text(text)
    (kept,) = fe.spoken_for_text(text, leads=False)
    assert kept.words[0].start > 0.12  # Festival's lead-in
    quiet = [int(np.argmax(sp.mel.max(axis=1) > QUIET_LOG_MEL)) for sp in (led, kept)]
    assert quiet[0] == EDGE_KEEP_FRAMES < quiet[1]
    assert led.words[0].start < 0.05
    cut = kept.mel.shape[0] - led.mel.shape[0]
    assert cut == quiet[1] - quiet[0] and np.array_equal(led.mel, kept.mel[cut:])
    assert [w.word for w in led.words] == [w.word for w in kept.words]
    assert abs(led.words[0].start - (kept.words[0].start - cut * FRAME_S)) < 1e-6
    assert not misaligned(led, led.words)
