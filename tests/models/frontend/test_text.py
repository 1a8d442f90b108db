"""Text normalisation and sentence splitting."""

from __future__ import annotations

import random

import pytest

from models.frontend.numbers import int_to_words, ordinal_to_words, year_to_words
from models.frontend.text import MAX_SENTENCE_CHARS, is_speakable, normalize, split_sentences


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (1000, "one thousand"),
        (1_234_567, "one million two hundred thirty four thousand five hundred sixty seven"),
        (2_000_000_001, "two billion one"),
        (-5, "minus five"),
        (10**15, "one zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero"),
    ],
)
def test_int_to_words(n: int, words: str) -> None:
    assert int_to_words(n) == words


@pytest.mark.parametrize(
    ("year", "words"),
    [
        (1984, "nineteen eighty four"),
        (1905, "nineteen oh five"),
        (1900, "nineteen hundred"),
        (2000, "two thousand"),
        (2008, "two thousand eight"),
        (2024, "twenty twenty four"),
    ],
)
def test_year_to_words(year: int, words: str) -> None:
    assert year_to_words(year) == words


def test_ordinals() -> None:
    assert [ordinal_to_words(n) for n in (1, 2, 3, 5, 12, 20, 21, 102)] == [
        "first",
        "second",
        "third",
        "fifth",
        "twelfth",
        "twentieth",
        "twenty first",
        "one hundred second",
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("I have 3 cats.", "I have three cats."),
        ("Pi is 3.14.", "Pi is three point one four."),
        ("It was 1984.", "It was nineteen eighty four."),
        ("The 1990s were loud.", "The nineteen nineties were loud."),
        (
            "1,234,567 people",
            "one million two hundred thirty four thousand five hundred sixty seven people",
        ),
        ("It cost $12.50.", "It cost twelve dollars and fifty cents."),
        ("It cost $1.", "It cost one dollar."),
        ("\u00a35 or \u20ac2", "five pounds or two euros"),
        ("$3.5 million", "three point five million dollars"),
        ("50% off", "fifty percent off"),
        ("the 21st floor", "the twenty first floor"),
        ("at 10:30 or 7:05 or 3:00", "at ten thirty or seven oh five or three o'clock"),
        ("It was -5 outside.", "It was minus five outside."),
        ("Version 1.2.3", "Version one point two point three"),
        ("Mr. Smith met Dr. Jones.", "Mister Smith met Doctor Jones."),
        ("No. 5 said no.", "Number five said no."),
        ("fruit, e.g. apples", "fruit, for example apples"),
        ("salt & pepper", "salt and pepper"),
        ("\u201cHi\u201d \u2018there\u2019\u2014friend\u2026", "\"Hi\" 'there' - friend..."),
        ("caf\u00e9 na\u00efve", "cafe naive"),
        ("a\x00b\x07c\td\ne\r\nf", "abc d e f"),
        ("  lots   of\n\n space  ", "lots of space"),
        ("\u4e2d\u6587 and English", "and English"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_abbreviation_ending_a_sentence_keeps_the_stop() -> None:
    text = normalize("Buy pears etc. Then leave at 5 p.m. Bring Dr. Lee.")
    assert text == "Buy pears et cetera. Then leave at five P M. Bring Doctor Lee."
    assert split_sentences(text) == [
        "Buy pears et cetera.",
        "Then leave at five P M.",
        "Bring Doctor Lee.",
    ]


def test_normalize_is_idempotent_and_ascii() -> None:
    samples = [
        "On Jan. 5th, 1984, Mr. O\u2019Neil paid $1,250.75 (about 30%) at 9:45 p.m. \u2014 wow!",
        "Version 10.0.1 shipped in the 2010s; 3.5 million users, -12 degrees, No. 7.",
    ]
    for raw in samples:
        once = normalize(raw)
        assert normalize(once) == once
        assert once.isascii()
        assert not any(ch.isdigit() for ch in once)


def test_is_speakable() -> None:
    assert is_speakable("a") and is_speakable("7")
    assert not is_speakable("... -- !?") and not is_speakable("")


def _random_text(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    parts: list[str] = []
    size = 0
    while size < n_chars:
        # Sentences of very different lengths, some with no stop for hundreds of words,
        # plus clause punctuation and quotes, so every splitting path is exercised.
        n = rng.choice([1, 3, 8, 20, 60, 150])
        sentence = []
        for i in range(n):
            w = rng.choice(words)
            if i % 7 == 6:
                w += rng.choice([",", ";", ":"])
            sentence.append(w)
        end = rng.choice([".", "!", "?", '."', "", "..."])
        parts.append(" ".join(sentence) + end)
        size += len(parts[-1]) + 1
    return " ".join(parts)


@pytest.mark.parametrize("max_chars", [40, 120, MAX_SENTENCE_CHARS])
def test_split_sentences_keeps_every_word_of_20000_chars(max_chars: int) -> None:
    text = _random_text(20_000)
    assert len(text) >= 20_000
    chunks = split_sentences(text, max_chars=max_chars)
    assert all(0 < len(c) <= max_chars for c in chunks)
    # Every word, in order, with its punctuation: nothing dropped, nothing truncated.
    assert " ".join(chunks).split() == text.split()
    assert " ".join(chunks) == " ".join(text.split())


def test_split_sentences_splits_at_sentence_ends_first() -> None:
    chunks = split_sentences('Hello there. "How are you?" she asked! Fine... really?  Yes')
    assert chunks == ["Hello there.", '"How are you?"', "she asked!", "Fine...", "really?", "Yes"]


def test_long_sentence_is_split_at_clauses_before_spaces() -> None:
    sentence = "one two three four, five six seven eight; nine ten eleven twelve."
    assert split_sentences(sentence, max_chars=30) == [
        "one two three four,",
        "five six seven eight;",
        "nine ten eleven twelve.",
    ]


def test_a_word_longer_than_the_bound_is_cut_but_kept() -> None:
    url = "x" * 95
    chunks = split_sentences(f"See {url} now.", max_chars=40)
    assert all(len(c) <= 40 for c in chunks)
    assert "".join(chunks).replace(" ", "") == f"See{url}now."


def test_split_sentences_edge_cases() -> None:
    assert split_sentences("") == []
    assert split_sentences("   \n ") == []
    assert split_sentences("No stop at all") == ["No stop at all"]
    with pytest.raises(ValueError):
        split_sentences("text", max_chars=0)


LONG = (
    "When the morning train finally arrived at the station, the tired passengers walked slowly "
    "toward the old main exit gates."
)


@pytest.mark.parametrize(
    ("sentence", "max_words", "expected"),
    [
        ("Hello there, my friend.", 10, None),  # short: not cut
        (LONG, 10, (LONG[:54], LONG[55:], True)),  # at the comma
        (LONG, 6, ("When the morning train finally arrived", LONG[39:], False)),  # bounded
        (
            "We waited for hours in the rain because the last bus had left without us.",
            10,
            ("We waited for hours in the rain", "because the last bus had left without us.", False),
        ),
        ("One two, three four five six seven eight nine ten eleven twelve.", 10, None),
    ],
)
def test_split_opening(sentence: str, max_words: int, expected: object) -> None:
    from models.frontend.text import split_opening

    got = split_opening(sentence, max_words)
    assert got == expected
    if got is not None:
        head, rest, _ = got
        assert f"{head} {rest}" == sentence  # nothing lost
        assert 3 <= len(head.split()) <= max_words
