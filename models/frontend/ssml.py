"""SSML -> the content of markup segments: speech (with its rate), boundaries and pauses.

Parsed with the standard library's XML parser. Supported: `<break time="500ms|1s"
strength="...">` (a real pause, at most MAX_PAUSE_S), `<prosody rate="x-slow|slow|medium|fast|
x-fast|80%|+20%|1.5">` (multiplies the request's speed for its content), `<sub alias="...">`,
`<say-as interpret-as="characters|spell-out|digits|cardinal|ordinal|date|telephone">`,
`<p>`/`<s>` (sentence boundaries). Other tags are dropped and their text is spoken; `<desc>` is
not spoken. models/frontend/markup.py decides what is SSML, builds the segments and speaks
malformed SSML as plain text.

Pure functions, no I/O.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from typing import Protocol

from models.frontend import numbers, text

logger = logging.getLogger(__name__)

MAX_PAUSE_S = 10.0
"""Longest single pause (`<break>`); longer ones are clamped."""

_SPEAK_RE = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?<speak[\s>/]")
ParseError = ET.ParseError
"""Raised by `parse` for text that is not well-formed XML."""


def is_ssml(text_in: str) -> bool:
    """True if the text is SSML: it starts (after space, perhaps an XML declaration) with <speak>."""
    return _SPEAK_RE.match(text_in) is not None


def parse(text_in: str) -> ET.Element:
    """The SSML document's root element; ParseError if it is not well-formed XML."""
    return ET.fromstring(text_in.strip())


class Sink(Protocol):
    """Where the SSML's content goes (markup.py's segment builder)."""

    def add(self, chunk: str, rate: float = 1.0) -> None:
        """Text to speak at `rate` times the request's speed."""

    def boundary(self) -> None:
        """A sentence boundary."""

    def pause(self, seconds: float) -> None:
        """Seconds of silence."""


def walk(root: ET.Element, sink: Sink) -> None:
    """Put the document's speech, boundaries and pauses into `sink`, in order."""
    _walk(root, sink, 1.0)


_STRENGTH_S = {
    "none": 0.0,
    "x-weak": 0.1,
    "weak": 0.25,
    "medium": 0.5,
    "strong": 0.75,
    "x-strong": 1.25,
}
_RATE_WORDS = {"x-slow": 0.5, "slow": 0.64, "medium": 1.0, "default": 1.0, "fast": 1.55}
_RATE_WORDS["x-fast"] = 2.0
_TIME_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*$", re.IGNORECASE)


def _local(tag: object) -> str:
    return tag.split("}")[-1].lower() if isinstance(tag, str) else ""


def break_seconds(time_attr: str | None, strength: str | None) -> float:
    """A `<break>`'s length: its time if it parses, else its strength's, else medium's."""
    if time_attr is not None:
        m = _TIME_RE.match(time_attr)
        if m:
            value = float(m.group(1))
            return min(value / 1000.0 if m.group(2).lower() == "ms" else value, MAX_PAUSE_S)
        logger.debug("SSML break time %r not understood", time_attr)
    return _STRENGTH_S.get((strength or "medium").strip().lower(), _STRENGTH_S["medium"])


def prosody_rate(value: str | None) -> float:
    """A `<prosody rate>` as a multiplier: words, "80%", "+20%", "-20%" or "1.5"; else 1."""
    if value is None:
        return 1.0
    v = value.strip().lower()
    try:
        if v in _RATE_WORDS:
            rate = _RATE_WORDS[v]
        elif v.endswith("%"):
            number = float(v[:-1])
            rate = 1.0 + number / 100.0 if v[0] in "+-" else number / 100.0
        else:
            rate = float(v)
    except ValueError:
        rate = 0.0
    if not (rate > 0.0 and rate < float("inf")):
        logger.debug("SSML prosody rate %r not understood", value)
        return 1.0
    return rate


def _walk(el: ET.Element, b: Sink, rate: float) -> None:
    tag = _local(el.tag)
    if tag == "break":
        b.pause(break_seconds(el.get("time"), el.get("strength")))
    elif tag in ("desc", "mark"):
        pass
    elif tag == "sub":
        b.add(el.get("alias", "".join(el.itertext())), rate)
    elif tag == "say-as":
        words = say_as("".join(el.itertext()), el.get("interpret-as"), el.get("format"))
        b.add(f" {words} ", rate)
    else:
        if tag in ("p", "s"):
            b.boundary()
        if tag == "prosody":
            rate *= prosody_rate(el.get("rate"))
        b.add(el.text or "", rate)
        for child in el:
            _walk(child, b, rate)
            b.add(child.tail or "", rate)
        if tag in ("p", "s"):
            b.boundary()


# --- say-as -------------------------------------------------------------------------------------

_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _spell(s: str) -> str:
    """ "abc12" -> "A B C one two": letters as capitals (read as letter names), digits as words."""
    out = [
        numbers.digits_to_words(ch) if ch.isdigit() else ch.upper()
        for ch in text.to_ascii(s)
        if ch.isalnum()
    ]
    return " ".join(out)


def _date(s: str, fmt: str | None) -> str | None:
    parts = [p for p in re.split(r"[-/.\s]+", s.strip()) if p]
    if not parts or not all(p.isdigit() for p in parts):
        return None
    if fmt is None:
        fmt = "ymd" if len(parts[0]) == 4 else "mdy"[: len(parts)]
    fmt = fmt.lower()
    if len(fmt) != len(parts) or set(fmt) - set("ymd"):
        return None
    fields = dict(zip(fmt, (int(p) for p in parts), strict=True))
    words = []
    if "m" in fields:
        if not 1 <= fields["m"] <= 12:
            return None
        words.append(_MONTHS[fields["m"] - 1])
    if "d" in fields:
        if not 1 <= fields["d"] <= 31:
            return None
        words.append(numbers.ordinal_to_words(fields["d"]))
    if "y" in fields:
        y = fields["y"]
        year = numbers.year_to_words(y) if 1000 <= y <= 9999 else numbers.int_to_words(y)
        words.append(("," if words else "") + " " + year)
    return " ".join(words).replace(" ,", ",").strip()


def say_as(content: str, interpret_as: str | None, fmt: str | None = None) -> str:
    """`<say-as>` content -> words; content it cannot read that way is left as it is."""
    kind = (interpret_as or "").strip().lower()
    digits = content.replace(",", "").strip()
    if kind in ("characters", "spell-out", "verbatim", "letters"):
        return _spell(content)
    if kind == "digits":
        return _spell(re.sub(r"\D", "", content)) or content
    if kind in ("cardinal", "number") and re.fullmatch(r"-?\d+", digits):
        return numbers.int_to_words(int(digits))
    if kind == "ordinal":
        m = re.fullmatch(r"(\d+)(?:st|nd|rd|th)?", digits, re.IGNORECASE)
        if m:
            return numbers.ordinal_to_words(int(m.group(1)))
    if kind == "date":
        return _date(content, fmt) or content
    if kind == "telephone":
        groups = re.findall(r"\+|\d+", content)
        words = [
            "plus" if g == "+" else numbers.digits_to_words(g) for g in groups
        ]  # "555-1234" -> "five five five, one two three four"
        return ", ".join(words).replace("plus,", "plus") if words else content
    return content
