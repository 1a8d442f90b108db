"""The running-text assembler: fragments in, whole sentences out (pure, no Festival)."""

from __future__ import annotations

import random

import pytest

from models.frontend.assembler import RunningTextTooLong, TextAssembler, speakable


def feed_all(fragments: list[str], max_chars: int = 4096) -> tuple[list[str], list[str]]:
    """(pieces released while feeding, pieces released by the final flush)."""
    a = TextAssembler(max_chars)
    out: list[str] = []
    for f in fragments:
        out += a.feed(f)
    return out, a.flush()


def test_word_fragments_make_whole_sentences() -> None:
    frags = ["Hel", "lo", " there", ".", " How", " are", " you", "?", " Fine", "!"]
    a = TextAssembler(100)
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
    a = TextAssembler(100)
    assert a.feed("We sell apples etc. ") == []  # waits for the next word
    assert a.feed("Then") == ["We sell apples etc."]
    b = TextAssembler(100)
    assert b.feed("Apples etc. and pears. ") == ["Apples etc. and pears."]
    c = TextAssembler(100)
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
    a = TextAssembler(1000)
    got = [p for ch in ssml for p in a.feed(ch)]
    assert got == [ssml]
    out, rest = feed_all(["Code:\n", "```\nx = 1. y = 2. \n", "```\n", "Done. "])
    # the fenced block is one piece (not cut at "1. "), and code is not spoken
    assert out == ["Code:", "Done."] and not rest


def test_running_text_is_bounded() -> None:
    a = TextAssembler(50)
    a.feed("word " * 9)
    with pytest.raises(RunningTextTooLong, match=r"limit is 50 \(max_text_chars\)"):
        a.feed("word " * 2)
    assert a.pending == ""  # the stream can go on
    assert a.feed("Short one. ") == ["Short one."]
    # ended sentences do not count against the bound
    b = TextAssembler(50)
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
