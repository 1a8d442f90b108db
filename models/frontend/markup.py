"""Markup -> speakable segments: what LLM replies and SSML clients send, before normalisation.

The front end calls `segments` on every text before `text.normalize`, so markup never reaches
the normaliser's number and abbreviation rules (`<break time="1s"/>` is a pause, not "time
ones"). The result is a list of `Speech` (plain text, a speaking-rate multiplier) and `Pause`
(seconds of silence) segments; each `Speech` segment is spoken as its own sentence(s).

Two input kinds:

- **SSML**, when the stripped text starts with `<speak>` (or `<speak ...>`): read by
  models/frontend/ssml.py (breaks, prosody rate, sub, say-as, p/s; other tags are dropped and
  their text is spoken). **Malformed SSML** (not well-formed XML, e.g. a bare `&`) is not an
  error: it is spoken as plain text with its tags removed (logged at info), because an LLM's
  SSML is often almost right and a spoken answer beats a refused one.
- **Everything else** is read as markdown: emphasis markers, headings, list markers, block
  quotes, table pipes and HTML tags are removed; fenced code blocks are dropped (code read aloud
  is noise; an unclosed fence runs to the end of the text, as in CommonMark); inline `code`
  keeps its text; links speak their text, images their alt text; a heading, list item, table
  row or paragraph is its own sentence.

In both, emoji are dropped and bare URLs and e-mail addresses are spoken as words:
`https://www.example.com/docs` -> "example dot com slash docs", `jane.doe@example.org` ->
"jane dot doe at example dot org" (scheme, `www.`, query and fragment are not spoken).

Pure functions, no I/O.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from models.frontend import ssml, text
from models.frontend.ssml import MAX_PAUSE_S

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speech:
    text: str  # plain text, not yet normalised
    rate: float = 1.0  # multiplies the request's speed


@dataclass(frozen=True)
class Pause:
    seconds: float


Segment = Speech | Pause

_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([.,!?;:])(?=\s|$)")


class _Builder:
    """Collects text into segments: a rate change, boundary or pause closes the current one."""

    def __init__(self) -> None:
        self.out: list[Segment] = []
        self._parts: list[str] = []
        self._rate = 1.0

    def add(self, chunk: str, rate: float = 1.0) -> None:
        if not chunk:
            return
        if rate != self._rate and "".join(self._parts).strip():
            self.boundary()
        self._rate = rate
        self._parts.append(chunk)

    def boundary(self) -> None:
        joined = text.collapse_whitespace(speak_links(drop_emoji("".join(self._parts))))
        joined = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", joined)  # "org !" once a link became words
        self._parts = []
        if joined:
            self.out.append(Speech(joined, self._rate))

    def pause(self, seconds: float) -> None:
        self.boundary()
        seconds = min(max(seconds, 0.0), MAX_PAUSE_S)
        if seconds <= 0.0:
            return
        if self.out and isinstance(self.out[-1], Pause):  # adjacent pauses are one
            seconds = min(self.out[-1].seconds + seconds, MAX_PAUSE_S)
            self.out[-1] = Pause(seconds)
        else:
            self.out.append(Pause(seconds))

    def done(self) -> list[Segment]:
        self.boundary()
        return self.out


def segments(text_in: str) -> list[Segment]:
    """Markup (SSML or markdown) -> speech and pause segments; see the module docstring."""
    if ssml.is_ssml(text_in):
        try:
            root = ssml.parse(text_in)
        except ssml.ParseError as exc:
            logger.info("malformed SSML (%s): speaking it as plain text without tags", exc)
            return _plain(_TAG_RE.sub(" ", text_in))
        builder = _Builder()
        ssml.walk(root, builder)
        return builder.done()
    return _markdown(text_in)


def _plain(text_in: str) -> list[Segment]:
    builder = _Builder()
    builder.add(_unescape(text_in))
    return builder.done()


# --- emoji, URLs, e-mail addresses ----------------------------------------------------------------

# Pictographs, dingbats, flags, skin tones, keycaps, variation selectors and joiners. Symbols the
# normaliser reads (degree sign, currency) are outside these ranges.
_EMOJI_RE = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff\ufe0e\ufe0f\u200d\u20e3"
    "\U000e0020-\U000e007f]+"
)


def drop_emoji(text_in: str) -> str:
    return _EMOJI_RE.sub("", text_in)


# Bare domains need a lower-case top-level domain from this list, so "it.Me" (a missing space)
# or "file.py" stay text.
_TLDS = "com|org|net|edu|gov|io|ai|dev|app|co|uk|de|fr|eu|info|biz|ca|au|gg|xyz"
_URL_RE = re.compile(
    r"\b(?i:(?:https?|ftp)://|www\.)[^\s<>\"'`]+"
    r"|\b(?:[A-Za-z0-9-]+\.)+(?:" + _TLDS + r")(?::\d+)?(?:/[^\s<>\"'`]*)?(?![\w.@-]*\w)"
)
_EMAIL_RE = re.compile(r"\b[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+\b", re.IGNORECASE)
_TRAILING_PUNCT = ".,;:!?)]}'\""
_WORD_SYMBOLS = {".": " dot ", "@": " at ", "+": " plus ", "/": " slash ", ":": " colon "}


def _say_parts(s: str) -> str:
    """One host, path or mailbox part as words: "getting-started" -> "getting started"."""
    s = re.sub(r"[-_~=&%]+", " ", s)
    for symbol, word in _WORD_SYMBOLS.items():
        s = s.replace(symbol, word)
    # "v2" -> "v 2": letters glued to digits would be read as one odd word
    s = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", s)
    return " " + " ".join(s.split()) + " "


def say_url(url: str) -> str:
    """ "https://www.example.com/docs/" -> "example dot com slash docs"."""
    rest = re.sub(r"^(?:[a-z]+://)?(?:www\.)?", "", url, flags=re.IGNORECASE)
    rest = re.split(r"[?#]", rest, maxsplit=1)[0].rstrip("/")
    return _say_parts(rest)


def say_email(address: str) -> str:
    """ "jane.doe@example.org" -> "jane dot doe at example dot org"."""
    return _say_parts(address)


def _url_sub(m: re.Match[str]) -> str:
    url = m.group(0)
    trail = ""
    while url and url[-1] in _TRAILING_PUNCT:  # "see example.com." ends a sentence
        url, trail = url[:-1], url[-1] + trail
    return say_url(url) + trail


def speak_links(text_in: str) -> str:
    """Bare e-mail addresses and URLs -> words, so they are not spelt out or read as numbers."""
    text_in = _EMAIL_RE.sub(lambda m: say_email(m.group(0)), text_in)
    return _URL_RE.sub(_url_sub, text_in)


# --- markdown ----------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}(?:\s+|$)")
_LIST_RE = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_QUOTE_RE = re.compile(r"^\s*(?:>\s?)+")
# Thematic breaks, and the "===" / "---" underlines of setext headings (the line above is a
# block of its own either way).
_RULE_RE = re.compile(r"^\s{0,3}(?:(?:-\s*){3,}|(?:\*\s*){3,}|(?:_\s*){3,}|=+\s*)$")
_TABLE_DELIM_RE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_REF_DEF_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S+")
_CLOSING_HASHES_RE = re.compile(r"\s+#+\s*$")

_IMAGE_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK_RE = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+|[\w.+-]+@[\w.-]+)>", re.IGNORECASE)
_CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
_EMPHASIS_RES = (
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
    re.compile(r"\*(?=\S)(.+?)(?<=\S)\*"),
    re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"),
)
_LEFTOVER_RE = re.compile(r"\*{2,}|(?<!\w)_{2,}|_{2,}(?!\w)|~~")
_TAG_RE = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>|<!--.*?-->", re.DOTALL)


def _inline(line: str) -> str:
    """One block's inline markdown -> its text (links' URLs and emphasis markers dropped)."""
    line = _IMAGE_RE.sub(r"\1", line)
    line = _LINK_RE.sub(lambda m: m.group(1) or m.group(2), line)
    line = _AUTOLINK_RE.sub(lambda m: m.group(1).removeprefix("mailto:"), line)
    out = []
    # Code spans keep their text verbatim: no emphasis rules inside them.
    for i, part in enumerate(_CODE_SPAN_RE.split(line)):
        if i % 3 == 1:  # the backtick run captured by the split
            continue
        if i % 3 == 0:
            part = _TAG_RE.sub(" ", part)
            for pattern in _EMPHASIS_RES:
                part = pattern.sub(r"\1", part)
            part = _LEFTOVER_RE.sub("", part)
        out.append(part)
    return _unescape("".join(out))


def _unescape(s: str) -> str:
    s = re.sub(r"\\([\\`*_{}\[\]()#+\-.!|~<>])", r"\1", s)  # markdown backslash escapes
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&nbsp;", " ")):
        s = s.replace(entity, char)
    return s.replace("&amp;", "&")


def _markdown(text_in: str) -> list[Segment]:
    builder = _Builder()
    fence: str | None = None
    quoted = False
    for raw in text_in.splitlines():
        m = _FENCE_RE.match(raw)
        if fence is not None:  # inside a fenced code block: dropped
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            builder.boundary()
            fence = m.group(1)
            continue
        line = _QUOTE_RE.sub("", raw)
        if (line != raw) != quoted:  # a block quote starts or ends
            builder.boundary()
            quoted = not quoted
        if not line.strip() or _RULE_RE.match(line) or _TABLE_DELIM_RE.match(line):
            builder.boundary()
            continue
        if _REF_DEF_RE.match(line):
            continue
        if _HEADING_RE.match(line):
            builder.boundary()
            builder.add(_inline(_CLOSING_HASHES_RE.sub("", _HEADING_RE.sub("", line))))
            builder.boundary()
            continue
        if line.lstrip().startswith("|"):  # a table row: its cells, as one sentence
            builder.boundary()
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            builder.add(", ".join(_inline(c) for c in cells if c))
            builder.boundary()
            continue
        if _LIST_RE.match(line):
            builder.boundary()
            line = _LIST_RE.sub("", line)
        # Pipes left over (a table written without its outer pipes) separate cells.
        builder.add(_inline(line).replace("|", ", ") + " ")
    return builder.done()
