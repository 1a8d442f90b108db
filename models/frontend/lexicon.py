"""A user lexicon: how to say words Festival gets wrong (a product's name, a place).

The file (`SPARROW_LEXICON`) has one entry per line, a word and its phones in Festival's "radio"
phone set (the CMU dictionary's ARPAbet, lower case), each vowel with a stress digit (0
unstressed, 1 primary, 2 secondary), as the CMU dictionary writes them:

    # comments and blank lines are ignored
    sparrow   s p ae1 r ow0
    nginx     eh1 n jh ih0 n eh2 k s

Words are matched as Festival reads them: lower case, after the text is normalised (so a word
with digits or dots is not reachable: "v2" is read "v two"). Every line is checked at start-up;
an error names the line. The entries reach Festival as data: `load_lexicon` keeps only validated
words and phones, the front end writes them to a file, and fixed Scheme reads it with `readfp`
and adds each entry (models/frontend/festival.py); nothing from the file is evaluated.

Pure: parsing and validation only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

VOWELS = frozenset(
    "aa ae ah ao aw ax axr ay eh el em en er ey ih iy ow oy uh uw".split()  # noqa: SIM905
)
CONSONANTS = frozenset(
    "b ch d dh dx f g hh hv jh k l m n nx ng p r s sh t th v w y z zh".split()  # noqa: SIM905
)
"""Festival's "radio" phone set (the SLT voice's), without its pause phones."""

MAX_ENTRIES = 10_000
MAX_PHONES = 60
_WORD_RE = re.compile(r"[a-z][a-z'-]{0,63}")
_VOWEL_RE = re.compile(r"([a-z]+)([012])")


class LexiconError(ValueError):
    """The lexicon file cannot be used; the message names the line."""


@dataclass(frozen=True)
class Entry:
    word: str  # lower case, letters, apostrophes and hyphens
    phones: tuple[str, ...]  # radio phones, vowels with a stress digit

    def festival_data(self) -> str:
        """The entry as the s-expression the front end's Scheme reads (data, not code)."""
        return f'("{self.word}" ({" ".join(self.phones)}))'


def parse_line(line: str) -> Entry | None:
    """One line -> an Entry, None for a blank or comment line; ValueError says what is wrong."""
    body = line.split("#", 1)[0].strip()
    if not body:
        return None
    word, *phones = body.split()
    word = word.lower()
    if not _WORD_RE.fullmatch(word):
        raise ValueError(
            f"word {word!r}: use letters, apostrophes and hyphens (as Festival reads words)"
        )
    if not phones:
        raise ValueError(f"word {word!r} has no phones")
    if len(phones) > MAX_PHONES:
        raise ValueError(f"word {word!r} has {len(phones)} phones; the limit is {MAX_PHONES}")
    for phone in phones:
        m = _VOWEL_RE.fullmatch(phone)
        if m and m.group(1) in VOWELS:
            continue
        if phone in VOWELS:
            raise ValueError(
                f"vowel {phone!r} needs a stress digit: {phone}0, {phone}1 or {phone}2"
            )
        if phone not in CONSONANTS:
            raise ValueError(
                f"{phone!r} is not a phone of Festival's radio set "
                f"(vowels {' '.join(sorted(VOWELS))}; consonants {' '.join(sorted(CONSONANTS))})"
            )
    if not any(_VOWEL_RE.fullmatch(p) for p in phones):
        raise ValueError(f"word {word!r} has no vowel: every syllable needs one")
    return Entry(word, tuple(phones))


def load_lexicon(path: Path) -> tuple[Entry, ...]:
    """The entries of a lexicon file, in order (a later entry for a word wins, as in Festival);
    LexiconError naming the file and line of the first problem."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LexiconError(f"cannot read the lexicon {str(path)!r}: {exc}") from exc
    entries: list[Entry] = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = parse_line(line)
        except ValueError as exc:
            raise LexiconError(f"{path}, line {number}: {exc}") from exc
        if entry is not None:
            entries.append(entry)
    if len(entries) > MAX_ENTRIES:
        raise LexiconError(f"{path} has {len(entries)} entries; the limit is {MAX_ENTRIES}")
    return tuple(entries)
