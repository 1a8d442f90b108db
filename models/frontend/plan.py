"""What a text is spoken as, and how the mels of its parts join.

`plan` turns text into segments: markup resolved (models/frontend/markup.py), each speech
segment normalised and split into sentences (models/frontend/text.py), pauses kept, and a long
first sentence cut so its opening is spoken first (FIRST_WORDS). The rest is about the mels
Festival's sentences become: the quiet edges to trim where segments meet, a pause's silence, and
where the words fall in the trimmed mel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from models.dsp import features
from models.frontend import markup, text
from models.frontend.festival import WordTime
from models.frontend.voices import MAX_SPEED, MIN_SPEED


@dataclass(frozen=True)
class Sentence:
    text: str  # normalised, speakable, at most max_sentence_chars
    speed: float  # the request's speed times any SSML prosody rate, within the allowed range
    join: str = ""
    """How it follows the previous sentence: "" (a sentence of its own), or it continues the
    previous one, which is a long sentence's opening (see FIRST_WORDS): "clause" (cut at clause
    punctuation, a short pause between), "word" (cut between words, spoken with context words
    on both sides of the cut, see `before`), or "phrase" (cut between words without them)."""
    before: str = ""
    after: str = ""
    """Context words spoken with the text and cut off its mel: the last words before a "word"
    cut are spoken before the rest of the sentence, and the first word after it after its
    opening, so Festival speaks each part as the middle of a sentence (no final lengthening or
    fall at the cut, no fresh start after it) and the two mels meet where the words meet."""

    @property
    def spoken_text(self) -> str:
        """What Festival is given: the text with its context words."""
        return " ".join(t for t in (self.before, self.text, self.after) if t)


FIRST_WORDS = 4
"""A text's first sentence longer than this many words (and 3 more) is spoken in two parts, its
opening first (models/frontend/text.py `split_opening`), so the first audio does not wait for
Festival to speak the whole sentence. Festival's time grows with the audio it makes, ~2.5 ms +
5.4 ms a word warm on one idle Zen 5 core (5 words 29 ms, 8 words 44 ms, 19 words 110 ms); an
opening of 4 words and its 1 context word keeps Festival's share of the first audio near 30 ms."""
OPENING_WORDS = 10
"""The most words of a streamed text's opening clause spoken before its sentence has ended
(models/frontend/assembler.py; 5 to 10 words ending at `,` `;` `:`)."""
CONTEXT_BEFORE, CONTEXT_AFTER = 2, 1
"""Context words at a "word" cut: the rest is spoken after the opening's last 2 words (off the
path to the first audio, so two), the opening before the rest's first word (on it, so one)."""
JOIN_KEEP_FRAMES = {"clause": 5, "phrase": 1}
"""Quiet frames kept on each side of the cut: 2 x 5 (125 ms, about Festival's own pause at a
comma) at clause punctuation, 2 x 1 (25 ms, no audible pause) between words."""
_PLAIN_WORD = re.compile(r"[A-Za-z]*[AEIOUYaeiouy][A-Za-z]*")
"""A context word must be one Festival speaks as one word of the same name: letters only, with a
vowel, and not an acronym ("km" is said "k m", "st" "street", "NASA" may be spelled out)."""


Segment = Sentence | markup.Pause


@dataclass(frozen=True)
class Spoken:
    """One segment of a text as the vocoder will hear it: its log-mel and the words in it."""

    mel: np.ndarray  # float32 [frames, 80]
    words: tuple[WordTime, ...]  # seconds from this mel's first frame, in order (none in a pause)


OPEN_END = Sentence("", 1.0, "clause")
"""Marks (after the last segment) a text that is a sentence's opening: the next text joins it."""


def plan_text(
    text_in: str,
    speed: float,
    max_sentence_chars: int,
    opening_words: int | None,
    continues: bool = False,
) -> list[Segment]:
    """`text_in` as sentences (normalised text, speed) and pauses, in order; `speed` is checked.

    An SSML prosody rate multiplies `speed`, and the product is clamped to [MIN_SPEED,
    MAX_SPEED]. With `continues`, the text is the rest of a sentence whose opening was spoken
    before (a streamed text, see models/frontend/assembler.py): it joins that opening, and is not
    cut again; otherwise a first sentence longer than `opening_words` (None: never) is cut.
    """
    out: list[Segment] = []
    for seg in markup.segments(text_in):
        if isinstance(seg, markup.Pause):
            out.append(seg)
            continue
        seg_speed = min(max(speed * seg.rate, MIN_SPEED), MAX_SPEED)
        chunks = text.split_sentences(text.normalize(seg.text), max_sentence_chars)
        # Chunks of pure punctuation (e.g. "...") make no sound and make Festival fail.
        out += [Sentence(c, seg_speed) for c in chunks if text.is_speakable(c)]
    if not continues:
        return split_first_sentence(out, opening_words)
    if out and isinstance(out[0], Sentence):
        out[0] = Sentence(out[0].text, out[0].speed, "clause")
    return out


def split_first_sentence(segments: list[Segment], opening_words: int | None) -> list[Segment]:
    """The first sentence, if long, as its opening and the rest (see OPENING_WORDS)."""
    first = next((i for i, s in enumerate(segments) if isinstance(s, Sentence)), None)
    if first is None or opening_words is None:
        return segments
    sentence = segments[first]
    assert isinstance(sentence, Sentence)
    cut = text.split_opening(sentence.text, opening_words)
    if cut is None:
        return segments
    head, rest, at_clause = cut
    before, after = ("", "") if at_clause else context_words(head, rest)
    join = "clause" if at_clause else ("word" if before and after else "phrase")
    parts = [
        Sentence(head, sentence.speed, sentence.join, sentence.before, after),
        Sentence(rest, sentence.speed, join, before, sentence.after),
    ]
    return [*segments[:first], *parts, *segments[first + 1 :]]


def is_plain_word(word: str) -> bool:
    return bool(_PLAIN_WORD.fullmatch(word)) and (len(word) == 1 or not word.isupper())


def context_words(head: str, rest: str) -> tuple[str, str]:
    """(before, after) for a cut between `head` and `rest`: up to CONTEXT_BEFORE plain words
    that end `head` and the CONTEXT_AFTER plain words that start `rest` ("" if there are none)."""
    tail = []
    for word in reversed(head.split(" ")[-CONTEXT_BEFORE:]):
        if not is_plain_word(word):
            break
        tail.insert(0, word)
    lead = rest.split(" ")[:CONTEXT_AFTER]
    after = " ".join(lead) if all(is_plain_word(w) for w in lead) else ""
    return " ".join(tail), after


def context_cut(
    words: list[WordTime], before: str, after: str
) -> tuple[float | None, float | None, list[WordTime]] | None:
    """Where a text spoken with context words (`Sentence.before`, `.after`) starts and ends in
    Festival's audio: (start s or None, end s or None, the text's own words), or None if
    Festival's words do not begin with `before` and end with `after` as expected."""
    nb, na = len(before.split()), len(after.split())
    if len(words) <= nb + na:
        return None
    names = [w.word.lower() for w in words]
    if names[:nb] != before.lower().split() or names[len(names) - na :] != after.lower().split():
        return None
    own = words[nb : len(words) - na]
    start = own[0].start if nb else None
    end = words[len(words) - na].start if na else None
    return start, end, own


def keep_before(prev: Segment | None, seg: Segment) -> int | None:
    """Quiet frames to keep at the boundary between `prev` and `seg` (None: keep Festival's)."""
    if isinstance(prev, markup.Pause) or isinstance(seg, markup.Pause):
        return EDGE_KEEP_FRAMES
    if isinstance(seg, Sentence) and seg.join in JOIN_KEEP_FRAMES:
        return JOIN_KEEP_FRAMES[seg.join]
    return None  # a "word" cut is made where the context words meet the text


def place_words(words: list[WordTime], factor: float, lo: int, frames: int) -> tuple[WordTime, ...]:
    """Festival's word times -> seconds of the mel made from its audio: divided by the
    time-scale factor, shifted by the `lo` frames trimmed off the start, clamped to the mel."""
    frame_s = features.SPEC.hop_length / features.SPEC.sample_rate
    shift, length = lo * frame_s, frames * frame_s
    out = []
    for w in words:
        start = min(max(w.start / factor - shift, 0.0), length)
        end = min(max(w.end / factor - shift, 0.0), length)
        if end > start:
            out.append(WordTime(w.word, round(start, 4), round(end, 4)))
    return tuple(out)


QUIET_LOG_MEL = -5.0
"""A frame whose loudest bin is below this is quiet (Festival's edge silence lies at -8..-5.3,
speech onsets above -4.5)."""
EDGE_KEEP_FRAMES = 3  # kept of a trimmed quiet edge (37.5 ms), so a weak onset or tail survives


def trim_quiet_edges(mel: np.ndarray, start: bool, end: bool) -> np.ndarray:
    """Cut the quiet frames at the start and/or end of `mel`, keeping EDGE_KEEP_FRAMES of each."""
    keep = EDGE_KEEP_FRAMES
    lo, hi = quiet_edges(mel, keep if start else None, keep if end else None)
    return mel[lo:hi]


def quiet_edges(mel: np.ndarray, start: int | None, end: int | None) -> tuple[int, int]:
    """The frames to keep, [lo, hi): the quiet frames at the start (end) of `mel` cut down to
    `start` (`end`) frames; None leaves that edge as it is."""
    loud = np.flatnonzero(mel.max(axis=1) >= QUIET_LOG_MEL)
    if loud.size == 0:
        return 0, mel.shape[0]
    lo = max(int(loud[0]) - start, 0) if start is not None else 0
    hi = min(int(loud[-1]) + 1 + end, mel.shape[0]) if end is not None else mel.shape[0]
    return lo, hi


def silence_mel(seconds: float) -> np.ndarray:
    """Log-mel of digital silence lasting `seconds` (at least one frame): float32 [frames, 80]."""
    frame_rate = features.SPEC.sample_rate / features.SPEC.hop_length
    frames = max(1, round(seconds * frame_rate))
    row = features.log_mel(np.zeros(features.SPEC.hop_length, dtype=np.float32))[:1]
    return np.repeat(row, frames, axis=0)
