"""The running-text assembler: fragments in, whole sentences out (pure, no Festival)."""

from __future__ import annotations

import random
import re

import pytest

from models.frontend.assembler import Piece, RunningTextTooLong, TextAssembler, speakable


class Texts(TextAssembler):
    """The assembler with its pieces as plain strings (every piece here ends its sentence)."""

    def feed(self, fragment: str) -> list[str]:  # type: ignore[override]
        return self._texts(super().feed(fragment))

    def flush(self) -> list[str]:  # type: ignore[override]
        return self._texts(super().flush())

    @staticmethod
    def _texts(pieces: list[Piece]) -> list[str]:
        assert not any(p.opens or p.continues for p in pieces)
        return [p.text for p in pieces]


def feed_all(fragments: list[str], max_chars: int = 4096) -> tuple[list[str], list[str]]:
    """(pieces released while feeding, pieces released by the final flush)."""
    a = Texts(max_chars)
    out: list[str] = []
    for f in fragments:
        out += a.feed(f)
    return out, a.flush()


def test_word_fragments_make_whole_sentences() -> None:
    frags = ["Hel", "lo", " there", ".", " How", " are", " you", "?", " Fine", "!"]
    a = Texts(100)
    released = [a.feed(f) for f in frags]
    # a sentence is released when the fragment after its stop (a space) arrives
    assert released[:4] == [[], [], [], []]
    assert released[4] == ["Hello there."]
    assert released[8] == ["How are you?"]
    assert a.pending == " Fine!"
    assert a.flush() == ["Fine!"]
    assert a.pending == ""


@pytest.mark.parametrize("junk", [".", " ", "...", "?", "\U0001f600", "", "\n\n", "!?", "* "])
def test_unspeakable_fragments_are_never_errors(junk: str) -> None:
    out, rest = feed_all(["Hello there", junk, " ", "Good", junk, " bye", junk])
    said = " ".join(out + rest)
    assert "Hello there" in said and "Good" in said and "bye" in said
    assert all(speakable(p) for p in out + rest)
    assert feed_all([junk, junk, junk]) == ([], [])


def test_numbers_and_abbreviations_are_not_cut() -> None:
    out, rest = feed_all(
        ["Pi", " is", " 3", ".", "14", " today", ".", " Dr", ".", " Smith", " came."]
    )
    assert out == ["Pi is 3.14 today."] and rest == ["Dr. Smith came."]
    # after a non-title abbreviation the next word decides
    a = Texts(100)
    assert a.feed("We sell apples etc. ") == []  # waits for the next word
    assert a.feed("Then") == ["We sell apples etc."]
    b = Texts(100)
    assert b.feed("Apples etc. and pears. ") == ["Apples etc. and pears."]
    c = Texts(100)
    assert c.feed("Use e.g. Python. J. Smith said so. ") == [
        "Use e.g. Python.",
        "J. Smith said so.",
    ]


def test_markdown_lines_and_ssml() -> None:
    out, rest = feed_all(["# Title\n", "- one item\n", "- two", "\n\nA para", "graph\nwrapped."])
    assert out == ["# Title", "- one item", "- two"]
    assert rest == ["A paragraph\nwrapped."]
    out, rest = feed_all(["1. First", " thing\n2. Second\n"])
    assert out == ["1. First thing", "2. Second"] and rest == []
    ssml = '<speak>One. <break time="1s"/> Two. Three.</speak>'
    a = Texts(1000)
    got = [p for ch in ssml for p in a.feed(ch)]
    assert got == [ssml]
    out, rest = feed_all(["Code:\n", "```\nx = 1. y = 2. \n", "```\n", "Done. "])
    # the fenced block is one piece (not cut at "1. "), and code is not spoken
    assert out == ["Code:", "Done."] and not rest


def test_running_text_is_bounded() -> None:
    a = Texts(50)
    a.feed("word " * 9)
    with pytest.raises(RunningTextTooLong, match=r"limit is 50 \(max_text_chars\)"):
        a.feed("word " * 2)
    assert a.pending == ""  # the stream can go on
    assert a.feed("Short one. ") == ["Short one."]
    # ended sentences do not count against the bound
    b = Texts(50)
    for _ in range(20):
        assert b.feed("A sentence of some length. ") == ["A sentence of some length."]


def test_any_chunking_gives_the_same_pieces() -> None:
    text = (
        "Hello there! The price is $3.50, i.e. cheap. Mr. Brown met Dr. Who at 10:30 a.m. "
        "Then they left... Did they? Yes.\n\n## Next\n- a list item\n- another one\nThe end"
    )
    whole = feed_all([text])
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        frags = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert feed_all(frags) == whole
    assert len(whole[0]) == 9, whole


OPENING = (5, 10)
LONG = "When the morning train finally arrived at the station, the tired passengers left. Then"


def pieces(fragments: list[str]) -> list[Piece]:
    a = TextAssembler(4096, OPENING)
    return [p for f in fragments for p in a.feed(f)] + a.flush()


def test_the_first_sentence_opening_goes_first() -> None:
    words = re.findall(r"\s*\S+", LONG)  # " word" tokens, as an LLM streams
    a = TextAssembler(4096, OPENING)
    released = [a.feed(w) for w in words]
    at = next(i for i, r in enumerate(released) if r)
    assert words[at] == " the"  # the word after "station," made the clause known
    assert released[at] == [Piece("When the morning train finally arrived at the station,", True)]
    assert (
        pieces([LONG])
        == pieces(words)
        == [
            Piece("When the morning train finally arrived at the station,", opens=True),
            Piece("the tired passengers left.", continues=True),
            Piece("Then"),
        ]
    )


@pytest.mark.parametrize(
    "text",
    [
        "Yes, well, that is all there is to it.",  # clauses under 5 words
        "When the long morning train finally arrived at the main station, we left.",  # over 10
        "Short one. Then the morning train finally arrived at the station, and so on.",  # not first
        "Hello there, my friend.",
    ],
)
def test_no_opening_when_it_would_not_help(text: str) -> None:
    got = pieces([text])
    assert not any(p.opens or p.continues for p in got), got
    assert " ".join(p.text for p in got) == text


def test_every_flush_starts_a_new_first_sentence() -> None:
    a = TextAssembler(4096, OPENING)
    first = a.feed("One two three four five, six. Seven eight nine ten eleven, twelve ")
    assert [p.opens for p in first] == [True, False]
    assert [p.text for p in a.flush()] == ["Seven eight nine ten eleven, twelve"]
    again = a.feed("One two three four five, six")
    assert again == [Piece("One two three four five,", opens=True)]
    assert a.flush() == [Piece("six", continues=True)]


def test_openings_do_not_depend_on_the_chunking() -> None:
    text = "Well, so the train we waited for came at last; we boarded it. Then it left. "
    whole = pieces([text])
    assert whole[0] == Piece("Well, so the train we waited for came at last;", True)
    rng = random.Random(3)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 30)))
        frags = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert pieces(frags) == whole
