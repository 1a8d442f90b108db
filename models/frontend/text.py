"""Text normalisation and sentence splitting for the text-to-speech front end.

`normalize` turns arbitrary user text into plain ASCII words an English voice can read: unicode
punctuation folded to ASCII, control characters removed, numbers, currency, percentages, ordinals
and common abbreviations written out (the numbers by models/frontend/numbers.py).
`split_sentences` cuts text into bounded chunks so the first one can be spoken while the rest is
still being synthesised; it never drops or truncates text.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from models.frontend import numbers

MAX_SENTENCE_CHARS = 300
"""Default chunk bound: ~20 s of speech, a few hundred ms of Festival time per chunk."""


class TextError(ValueError):
    """The text cannot be spoken (for example it contains no letters or digits)."""


# --- unicode folding ---------------------------------------------------------------------------

_PUNCT_MAP = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u00b4": "'",
    "\u0060": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2212": "-",
    # En/em dashes and bars mark a pause, so they become a spaced hyphen.
    "\u2013": " - ",
    "\u2014": " - ",
    "\u2015": " - ",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u2007": " ",
    "\u00d7": " times ",
    "\u00b0": " degrees ",
}
_PUNCT_TABLE = str.maketrans(_PUNCT_MAP)


def to_ascii(text: str) -> str:
    """Fold typographic punctuation to ASCII, strip accents and control characters.

    Characters with no ASCII reading (e.g. CJK) are removed: the English voice cannot say them.
    Newlines and tabs become spaces.
    """
    text = text.translate(_PUNCT_TABLE)
    # NFKD splits "é" into "e" + combining accent and "ﬁ" into "fi"; the marks are then dropped.
    text = unicodedata.normalize("NFKD", text)
    out = []
    for ch in text:
        if ch in "\t\n\r\v\f":
            out.append(" ")
        elif ord(ch) < 128 and ch.isprintable():
            out.append(ch)
        # Non-ASCII left after NFKD: combining marks, symbols, other scripts; all dropped.
    return "".join(out)


def collapse_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- abbreviations -----------------------------------------------------------------------------

# Only unambiguous ones; "St." (saint/street) and "Dr." (doctor/drive) take the common reading.
_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miz",
    "dr": "doctor",
    "prof": "professor",
    "st": "saint",
    "jr": "junior",
    "sr": "senior",
    "vs": "versus",
    "etc": "et cetera",
    "approx": "approximately",
    "dept": "department",
    "govt": "government",
    "no": "number",
    "vol": "volume",
    "fig": "figure",
    "feb": "february",
    "jan": "january",
    "aug": "august",
    "sept": "september",
    "oct": "october",
    "nov": "november",
    "dec": "december",
    "mt": "mount",
    "ft": "feet",
    "lb": "pounds",
    "lbs": "pounds",
    "oz": "ounces",
}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.", re.IGNORECASE)
_LATIN_RE = [
    (re.compile(r"\be\.g\.", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.", re.IGNORECASE), "that is"),
    (re.compile(r"\ba\.m\.", re.IGNORECASE), "A M"),
    (re.compile(r"\bp\.m\.", re.IGNORECASE), "P M"),
    (re.compile(r"\bU\.S\.A\.", re.IGNORECASE), "U S A"),
    (re.compile(r"\bU\.S\."), "U S"),
]
# Titles precede a name, so their stop never ends a sentence; other abbreviations often do.
_TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "no", "fig", "vol"}
TITLES = frozenset(_TITLES)
ABBREVIATIONS = frozenset(_ABBREVIATIONS)
"""Lower-case words whose stop may not end a sentence (models/frontend/assembler.py)."""


def _ends_sentence(text: str, end: int) -> bool:
    """True if the abbreviation's stop at text[end - 1] also ends the sentence."""
    rest = text[end:]
    stripped = rest.lstrip()
    return not stripped or (rest[:1].isspace() and stripped[:1].isupper())


def _latin(replacement: str, sentence_final: bool) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        ends = sentence_final and _ends_sentence(m.string, m.end())
        return replacement + ("." if ends else "")

    return sub


def _abbrev(m: re.Match[str]) -> str:
    word = m.group(1)
    # "No." is "number" only before a digit ("No. 5"); "no." ending a sentence stays "no."
    if word.lower() == "no":
        rest = m.string[m.end() :].lstrip()
        if not rest[:1].isdigit():
            return m.group(0)
    expansion = _ABBREVIATIONS[word.lower()]
    expansion = expansion.capitalize() if word[0].isupper() else expansion
    # "...apples, pears etc. Then" keeps its full stop so the sentence still ends there.
    if word.lower() not in _TITLES and _ends_sentence(m.string, m.end()):
        expansion += "."
    return expansion


def expand_abbreviations(text: str) -> str:
    for pattern, replacement in _LATIN_RE:
        # e.g./i.e. introduce more words; a.m., p.m., U.S. can end a sentence.
        final = replacement not in ("for example", "that is")
        text = pattern.sub(_latin(replacement, final), text)
    return _ABBREV_RE.sub(_abbrev, text)


_SYMBOLS = [(re.compile(r"\s*&\s*"), " and "), (re.compile(r"\s*\+\s*(?=\d)"), " plus ")]


def normalize(text: str) -> str:
    """User text -> ASCII text with numbers and abbreviations written out; whitespace collapsed.

    Idempotent: normalize(normalize(t)) == normalize(t).
    """
    # Currency first: the pound and euro signs are not ASCII and would be dropped by to_ascii.
    text = numbers.expand_currency(text)
    text = to_ascii(text)
    text = expand_abbreviations(text)
    for pattern, replacement in _SYMBOLS:
        text = pattern.sub(replacement, text)
    text = numbers.expand_numbers(text)
    return collapse_whitespace(text)


def is_speakable(text: str) -> bool:
    """True if the text has at least one letter or digit (pure punctuation makes no sound)."""
    return any(ch.isalnum() for ch in text)


# --- sentence splitting ------------------------------------------------------------------------

# A sentence ends at . ! or ? (possibly repeated, possibly followed by a closing quote/bracket)
# followed by whitespace. Abbreviations were expanded by `normalize`, so "Dr. Smith" no longer
# contains a stop.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_CLAUSE_END_RE = re.compile(r"(?<=[,;:])\s+|\s+(?=-\s)")


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Split after each match, keeping every character except the separating whitespace."""
    out, start = [], 0
    for m in pattern.finditer(text):
        # Keep closing quotes/brackets with the sentence they close.
        end_of_piece = m.start() + len(m.group(0).rstrip())
        out.append(text[start:end_of_piece])
        start = m.end()
    out.append(text[start:])
    return [p for p in out if p.strip()]


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive pieces with spaces while the result stays within max_chars."""
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= max_chars:
            chunks[-1] += " " + piece
        else:
            chunks.append(piece)
    return chunks


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut an over-long sentence at clause punctuation, then spaces, then (last resort) anywhere."""
    if len(sentence) <= max_chars:
        return [sentence]
    out: list[str] = []
    for clause in _pack(_pieces(sentence, _CLAUSE_END_RE), max_chars):
        if len(clause) <= max_chars:
            out.append(clause)
            continue
        for words in _pack(clause.split(" "), max_chars):
            # A single "word" longer than max_chars (a URL, a hash) is cut into fixed slices.
            out += [words[i : i + max_chars] for i in range(0, len(words), max_chars)]
    return out


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Split text into sentences of at most max_chars characters each.

    Nothing is dropped: joining the chunks with single spaces gives the input with its whitespace
    collapsed (only a word longer than max_chars is cut inside itself). Short sentences are not
    merged, so the first chunk is as short as the first sentence.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    text = collapse_whitespace(text)
    out: list[str] = []
    for sentence in _pieces(text, _SENTENCE_END_RE):
        out += _split_long(sentence.strip(), max_chars)
    return [s for s in out if s]


# --- the opening of a long first sentence --------------------------------------------------------

# Words that open a clause: cutting just before one keeps each part a phrase of its own.
_CLAUSE_OPENERS = frozenset(
    [
        "and",
        "but",
        "or",
        "so",
        "because",
        "while",
        "when",
        "where",
        "which",
        "who",
        "whose",
        "that",
        "although",
        "though",
        "since",
        "unless",
        "until",
        "after",
        "before",
        "if",
        "whereas",
    ]
)


def split_opening(
    sentence: str, max_words: int, min_words: int = 3
) -> tuple[str, str, bool] | None:
    """Cut the opening off a long sentence so it can be spoken first: (head, rest, at_clause).

    None when the sentence has at most `max_words + min_words` words. The head has `min_words`
    to `max_words` words and ends, by preference, at clause punctuation (`,` `;` `:` or before a
    dash: at_clause is True, a pause belongs there), else before a word that opens a clause
    ("and", "which", ...), else after `max_words` words. `sentence` is normalised text.
    """
    words = sentence.split(" ")
    if len(words) <= max_words + min_words:
        return None
    span = range(min_words, max_words + 1)  # head = words[:i]
    cut = next((i for i in span if words[i - 1][-1:] in ",;:" or words[i] == "-"), None)
    at_clause = cut is not None
    if cut is None:
        cut = next((i for i in span if words[i].lower() in _CLAUSE_OPENERS), max_words)
    return " ".join(words[:cut]), " ".join(words[cut:]), at_clause
