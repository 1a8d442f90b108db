"""The user lexicon: validated line by line, and its entries change what Festival says."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.frontend.festival_frontend import FestivalFrontend
from models.frontend.lexicon import Entry, LexiconError, load_lexicon, parse_line


def test_lines_parse_to_entries() -> None:
    assert parse_line("Sparrow  s p ae1 r ow0  # the product") == Entry(
        "sparrow", ("s", "p", "ae1", "r", "ow0")
    )
    assert parse_line("   # only a comment") is None and parse_line("") is None
    assert Entry("o'neil", ("ow0", "n", "iy1", "l")).festival_data() == '("o\'neil" (ow0 n iy1 l))'


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("sparrow", "has no phones"),
        ("sparrow s p ae r ow0", "vowel 'ae' needs a stress digit"),
        ("sparrow s p xx1 r ow0", "'xx1' is not a phone"),
        ('sp"arrow s p ae1', "use letters"),
        ("(system s p ae1", "use letters"),
        ("v2 v iy1 t uw1", "use letters"),
        ("psst p s s t", "has no vowel"),
        ("long " + "ae1 " * 61, "limit is 60"),
    ],
)
def test_bad_lines_are_refused(line: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_line(line)


def test_the_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text("# mine\nsparrow s p ae1 r ow0\n\nnginx eh1 n jh ih0 n eh2 k s\nbad s q\n")
    with pytest.raises(LexiconError, match=r"lexicon.txt, line 5: 'q' is not a phone"):
        load_lexicon(path)
    path.write_text("sparrow s p ae1 r ow0\nnginx eh1 n jh ih0 n eh2 k s\n")
    assert [e.word for e in load_lexicon(path)] == ["sparrow", "nginx"]
    with pytest.raises(LexiconError, match="cannot read"):
        load_lexicon(tmp_path / "missing.txt")


def word_seconds(fe: FestivalFrontend, sentence: str, word: str) -> float:
    (spoken,) = fe.spoken_for_text(sentence)
    (w,) = [w for w in spoken.words if w.word.lower() == word]
    return w.end - w.start


def test_entries_change_the_phones() -> None:
    """A word given twice its phones lasts about twice as long; other words are unchanged."""
    sentence = "The sparrow sang near the window."
    plain = FestivalFrontend()
    doubled = FestivalFrontend(
        lexicon=(Entry("sparrow", ("s", "p", "ae1", "r", "ow0") * 2),),
    )
    try:
        before, after = (
            word_seconds(plain, sentence, "sparrow"),
            word_seconds(doubled, sentence, "sparrow"),
        )
        assert 1.6 < after / before < 2.6, (before, after)
        same = word_seconds(plain, sentence, "window"), word_seconds(doubled, sentence, "window")
        assert abs(same[0] - same[1]) < 0.03
    finally:
        plain.close()
        doubled.close()


def test_text_in_the_lexicon_file_is_never_code(tmp_path: Path) -> None:
    """Lines that look like Scheme are refused before they could reach Festival."""
    path = tmp_path / "lex.txt"
    path.write_text('hello hh ah0 l ow1 ) (system "touch /tmp/pwned")\n')
    with pytest.raises(LexiconError, match="line 1"):
        load_lexicon(path)
