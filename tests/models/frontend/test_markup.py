"""Markup -> speakable segments (models/frontend/markup.py, SSML in models/frontend/ssml.py) and
the front end's plan built on it; pure, no Festival needed."""

from __future__ import annotations

import numpy as np
import pytest

from models.dsp.features import SPEC
from models.frontend import markup, tempo
from models.frontend.festival_frontend import (
    MAX_SPEED,
    MIN_SPEED,
    FestivalFrontend,
    InvalidSpeed,
    Sentence,
    silence_mel,
)
from models.frontend.markup import Pause, Speech, segments


def _texts(text_in: str) -> list[str]:
    return [s.text for s in segments(text_in) if isinstance(s, Speech)]


def _words(text_in: str, speed: float = 1.0) -> list[str]:
    """The words the front end would speak, in order (pauses as "<pause>")."""
    out: list[str] = []
    for seg in FestivalFrontend().plan(text_in, speed):
        if isinstance(seg, Pause):
            out.append("<pause>")
        else:
            out += [w.strip(".,!?;:") for w in seg.text.split()]
    return [w for w in out if w]


# --- markdown ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("md", "plain"),
    [
        ("**Hello** there.", "Hello there."),
        ("*Hello* there.", "Hello there."),
        ("__Hello__ there.", "Hello there."),
        ("_Hello_ there.", "Hello there."),
        ("~~Hello~~ there.", "Hello there."),
        ("***Hello*** there.", "Hello there."),
        ("Use `pip install` now.", "Use pip install now."),
        ("See [the docs](https://example.com/a/b?c=1) now.", "See the docs now."),
        ("A ![red cat](cat.png) sits.", "A red cat sits."),
        ("An ![](spacer.gif) image.", "An image."),
        ("Read [this][1] later.\n\n[1]: https://example.com/x", "Read this later."),
        ("Hi <b>there</b><br/> friend.", "Hi there friend."),
        ("Great job \U0001f389\U0001f44d\U0001f3fd!", "Great job!"),
        ("Flags \U0001f1fa\U0001f1f8 and keycap 1\ufe0f\u20e3 done.", "Flags and keycap 1 done."),
    ],
)
def test_inline_markdown_is_removed(md: str, plain: str) -> None:
    assert _texts(md) == [plain]


def test_underscores_inside_words_and_lone_asterisks_stay() -> None:
    assert _texts("snake_case_name and 5 * 3") == ["snake_case_name and 5 * 3"]


def test_blocks_are_sentences_of_their_own() -> None:
    md = (
        "# Shopping list\n"
        "Things to buy:\n"
        "- apples\n"
        "* pears\n"
        "  + plums\n"
        "1. bread\n"
        "2) milk\n"
        "\n"
        "> Quoted **advice**\n"
        "> over two lines\n"
        "\n"
        "---\n"
        "## Done ##"
    )
    assert _texts(md) == [
        "Shopping list",
        "Things to buy:",
        "apples",
        "pears",
        "plums",
        "bread",
        "milk",
        "Quoted advice over two lines",
        "Done",
    ]


def test_setext_headings_are_blocks() -> None:
    assert _texts("Title\n=====\nBody text.\nSub\n---\nMore.") == [
        "Title",
        "Body text. Sub",
        "More.",
    ]


def test_fenced_code_is_dropped() -> None:
    md = "Run this:\n```python\nprint(42)\n```\nThen it stays.\n~~~\nsecret 7\n~~~\nEnd."
    assert _texts(md) == ["Run this:", "Then it stays.", "End."]
    # An unclosed fence runs to the end of the text (CommonMark), so nothing after it is read.
    assert _texts("Before.\n```\ncode\nmore code") == ["Before."]
    assert "forty two" not in " ".join(_words(md))


def test_tables_read_their_cells() -> None:
    md = "| Name | Age |\n|:-----|----:|\n| Ann | 31 |\n\nx | y\n--|--\n1 | 2"
    assert _texts(md) == ["Name, Age", "Ann, 31", "x, y", "1, 2"]


def test_plain_text_is_unchanged() -> None:
    plain = "Dr. Smith paid $3.50 at 10:30, i.e. early. Version 1.2.3 works; 2024 was fine!"
    assert _texts(plain) == [plain]
    assert _texts("Line one\ncontinues here.") == ["Line one continues here."]
    assert _texts("#hashtag and -5 degrees") == ["#hashtag and -5 degrees"]


# --- URLs and e-mail addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://www.example.com/docs", "example dot com slash docs"),
        ("http://example.com/", "example dot com"),
        (
            "https://api.example.io/v2/getting-started?x=1#top",
            "api dot example dot io slash v 2 slash getting started",
        ),
        ("www.python.org", "python dot org"),
        ("example.com:8080/index.html", "example dot com colon 8080 slash index dot html"),
    ],
)
def test_urls_become_words(url: str, words: str) -> None:
    assert _texts(f"Go to {url} now.") == [f"Go to {words} now."]


def test_urls_and_addresses_end_sentences_cleanly() -> None:
    assert _texts("See https://example.com/docs. Or mail jane.doe@example.org!") == [
        "See example dot com slash docs. Or mail jane dot doe at example dot org!"
    ]
    assert _texts("Write to <bob_smith+tts@mail.example.co.uk>.") == [
        "Write to bob smith plus tts at mail dot example dot co dot uk."
    ]


def test_urls_never_meet_number_or_abbreviation_rules() -> None:
    words = _words("Mail dr.no@example.com or see https://example.com/no.5/1.2.3 today.")
    assert (
        words
        == (
            "Mail dr dot no at example dot com or see example dot com slash no dot 5 slash "
            "1 dot 2 dot 3 today"
        )
        .replace("5", "five")
        .replace("1", "one")
        .replace("2", "two")
        .replace("3", "three")
        .split()
    )
    assert "doctor" not in words and "number" not in words and "point" not in words


def test_ordinary_dotted_words_are_not_urls() -> None:
    text_in = "It works.Me too, e.g. file.py and Node.js and U.S. policy."
    assert _texts(text_in) == [text_in]


# --- SSML ----------------------------------------------------------------------------------------


def test_ssml_break_is_a_pause_not_words() -> None:
    ssml = '<speak>Hello <break time="1s"/> there. <break time="250ms"/>Bye.</speak>'
    assert segments(ssml) == [
        Speech("Hello"),
        Pause(1.0),
        Speech("there."),
        Pause(0.25),
        Speech("Bye."),
    ]
    words = _words(ssml)
    assert words == ["Hello", "<pause>", "there", "<pause>", "Bye"]


@pytest.mark.parametrize(
    ("attrs", "seconds"),
    [
        ('time="1.5s"', 1.5),
        ('time="700ms"', 0.7),
        ('time="90s"', markup.MAX_PAUSE_S),
        ('strength="x-strong"', 1.25),
        ('strength="weak"', 0.25),
        ("", 0.5),
        ('time="soon"', 0.5),
    ],
)
def test_break_lengths(attrs: str, seconds: float) -> None:
    assert segments(f"<speak>A <break {attrs}/> B</speak>") == [
        Speech("A"),
        Pause(seconds),
        Speech("B"),
    ]


def test_break_none_and_adjacent_breaks() -> None:
    assert segments('<speak>A <break strength="none"/> B</speak>') == [Speech("A"), Speech("B")]
    two = '<speak>A <break time="6s"/><break time="7s"/> B</speak>'
    assert segments(two) == [Speech("A"), Pause(markup.MAX_PAUSE_S), Speech("B")]


def test_prosody_rate_multiplies_the_request_speed() -> None:
    ssml = (
        '<speak>Normal. <prosody rate="slow">Slow words.</prosody> '
        '<prosody rate="200%">Fast <prosody rate="x-fast">and faster</prosody></prosody> '
        '<prosody rate="-50%">half</prosody> <prosody rate="1.5">number</prosody> '
        '<prosody rate="bogus">same</prosody></speak>'
    )
    plan = FestivalFrontend().plan(ssml, speed=1.5)
    assert [(s.text, s.speed) for s in plan if isinstance(s, Sentence)] == [
        ("Normal.", 1.5),
        ("Slow words.", pytest.approx(1.5 * 0.64)),
        ("Fast", 3.0),
        ("and faster", MAX_SPEED),  # 1.5 * 2 * 2 = 6, clamped
        ("half", 0.75),
        ("number", 2.25),
        ("same", 1.5),
    ]
    slow = FestivalFrontend().plan('<speak><prosody rate="x-slow">Slow.</prosody></speak>', 0.3)
    assert slow == [Sentence("Slow.", MIN_SPEED)]


def test_sub_say_as_and_boundaries() -> None:
    ssml = (
        '<speak><p>The <sub alias="World Wide Web Consortium">W3C</sub> met.</p>'
        '<s>Code <say-as interpret-as="characters">ab1</say-as></s>'
        '<s>Spelt <say-as interpret-as="spell-out">NASA</say-as></s>'
        '<s><say-as interpret-as="cardinal">1,234</say-as> and '
        '<say-as interpret-as="ordinal">21</say-as> and '
        '<say-as interpret-as="digits">2024</say-as></s>'
        '<s>On <say-as interpret-as="date">2024-03-05</say-as> or '
        '<say-as interpret-as="date" format="dmy">05/03/1999</say-as> or '
        '<say-as interpret-as="date" format="md">12/25</say-as></s>'
        '<s>Call <say-as interpret-as="telephone">+1 555-0123</say-as></s></speak>'
    )
    assert _texts(ssml) == [
        "The World Wide Web Consortium met.",
        "Code A B one",
        "Spelt N A S A",
        "one thousand two hundred thirty four and twenty first and two zero two four",
        (
            "On March fifth, twenty twenty four or March fifth, nineteen ninety nine or "
            "December twenty fifth"
        ),
        "Call plus one, five five five, zero one two three",
    ]


def test_unknown_tags_are_dropped_and_their_text_spoken() -> None:
    ssml = (
        '<speak xmlns="http://www.w3.org/2001/10/synthesis" version="1.1">'
        '<voice name="x"><emphasis level="strong">Very</emphasis> '
        '<phoneme alphabet="ipa" ph="t&#x259;">tomato</phoneme> <mark name="m1"/>'
        '<audio src="a.wav">fallback<desc>a bell</desc></audio></voice></speak>'
    )
    assert _texts(ssml) == ["Very tomato fallback"]
    # Tags inside unusual but valid SSML never reach the words.
    assert all("<" not in w and "=" not in w for w in _words(ssml))


def test_ssml_markup_never_meets_number_rules() -> None:
    ssml = '<speak>Wait <break time="1s"/> <prosody rate="80%">for 2 <sub alias="doctor">Dr.</sub></prosody></speak>'
    words = _words(ssml)
    assert words == ["Wait", "<pause>", "for", "two", "doctor"]
    assert not {"time", "one", "ones", "s", "rate", "eighty", "percent"} & set(words)


def test_ssml_text_is_normalised_and_links_spoken() -> None:
    ssml = "<speak>It costs $5 &amp; more at example.com/shop &lt;now&gt;.</speak>"
    # Escaped angle brackets are text, not tags: they reach the voice as characters.
    expected = "It costs five dollars and more at example dot com slash shop <now>"
    assert _words(ssml) == expected.split(" ")


@pytest.mark.parametrize(
    "bad",
    [
        '<speak>Tom & Jerry <break time="1s"/> talk.</speak>',
        "<speak>Unclosed <prosody rate='slow'>tags</speak>",
        "<speak>Hello there.",
    ],
)
def test_malformed_ssml_is_spoken_without_its_tags(bad: str) -> None:
    (only,) = segments(bad)
    assert isinstance(only, Speech) and "<" not in only.text and ">" not in only.text
    assert "time" not in only.text and "rate" not in only.text
    assert only.text.split()[0] in ("Tom", "Unclosed", "Hello")


def test_text_with_only_markup_plans_no_sentences() -> None:
    fe = FestivalFrontend()
    for text_in in ("<speak><break time='1s'/></speak>", "**\U0001f600**", "```\ncode\n```", "---"):
        assert not any(isinstance(s, Sentence) for s in fe.plan(text_in)), text_in


def test_tags_outside_speak_are_not_ssml() -> None:
    # Only text that starts with <speak> is SSML; elsewhere tags are removed as HTML.
    assert segments('Hello <break time="1s"/> there.') == [Speech("Hello there.")]


# --- the plan and speed --------------------------------------------------------------------------


def test_plan_matches_plain_text_word_for_word() -> None:
    fe = FestivalFrontend()
    assert fe.plan("**Hello** there.") == fe.plan("Hello there.")
    assert fe.plan("See [the manual](https://example.com/m/v1.2).") == fe.plan("See the manual.")
    assert fe.plan("<speak>Hello there.</speak>") == fe.plan("Hello there.")


@pytest.mark.parametrize("speed", [0.24, 4.01, float("nan"), "fast"])
def test_plan_checks_speed(speed: object) -> None:
    with pytest.raises(InvalidSpeed):
        FestivalFrontend().plan("Hello.", speed)  # type: ignore[arg-type]


def test_speed_splits_into_hts_rate_and_mel_time_scale() -> None:
    for speed in (0.25, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0):
        rate, factor = tempo.split_speed(speed)
        assert rate * factor == pytest.approx(speed)
        assert tempo.HTS_MIN_RATE <= rate <= tempo.HTS_MAX_RATE and factor >= 1.0
    assert tempo.split_speed(4.0) == (tempo.HTS_MAX_RATE, pytest.approx(4.0 / 3.0))


def test_time_scale_keeps_each_frame_and_shortens_time() -> None:
    mel = np.stack([np.full(80, float(i), np.float32) for i in range(120)])
    fast = tempo.time_scale(mel, 4.0 / 3.0)
    assert fast.shape == (90, 80) and fast.dtype == np.float32
    assert fast[0, 0] == 0.0 and fast[-1, 0] == 119.0
    assert np.all(np.diff(fast[:, 0]) > 0)  # a ramp stays a ramp: interpolated, not reordered
    assert tempo.time_scale(mel, 1.0) is mel
    assert tempo.time_scale(mel[:1], 4.0).shape == (1, 80)


def test_silence_mel_is_the_log_floor_for_the_time_asked() -> None:
    mel = silence_mel(1.0)
    frame_rate = SPEC.sample_rate / SPEC.hop_length
    assert mel.shape == (round(frame_rate), SPEC.n_mels) and mel.dtype == np.float32
    np.testing.assert_allclose(mel, np.log(SPEC.log_floor), rtol=1e-6)
    assert silence_mel(0.001).shape[0] == 1
