"""Running text -> speakable pieces: fragments (an LLM's tokens) in, whole sentences out.

A voice agent streams its reply a token at a time: "Hel", "lo", " there", ".", " How", ... Each
fragment alone is not speakable, and speaking fragments one by one gives choppy audio with the
prosody of single words. `TextAssembler` keeps the running text and hands out each sentence as
soon as its end is known, so the front end speaks it whole; `flush` hands out what is left.

A sentence's end is known when its closing `.`, `!` or `?` (with any closing quotes or
brackets) is followed by whitespace, so "3" "." "14" stays one number and "Dr." "Smith" one
name: a stop after a title (Dr., Mr., ...) or an initial never ends a sentence; after another
abbreviation or a dotted word ("a.m.") it does only when the next word starts with a capital
letter (and the assembler waits for that word). Line structure ends pieces as markdown does (a blank
line, a heading, list item, quote or table row), an SSML document (`<speak>...</speak>`) is one
piece, and nothing is cut inside an open code fence.

With `opening_words` (min, max) set, the first sentence of the running text (since the start or
the last flush) is also handed out in two pieces when its opening clause, of min..max words, ends
at clause punctuation (`,` `;` `:`) before the sentence ends: the opening is spoken while the
rest of the sentence is still arriving (an LLM's reply is heard sooner), marked `opens`, and the
rest is marked `continues`, so the front end joins them as one sentence. Decided on the text
alone: the same text in any fragments gives the same pieces.

Pieces with nothing to say (".", "...", "?", emoji, whitespace, an empty list marker) are
dropped, never an error: they were punctuation or space of the running text. The running text is
bounded: more than `max_chars` characters without an end raises RunningTextTooLong.

Used by the websocket (server/streaming/text.py) and Wyoming's synthesize-chunk
(server/wyoming.py). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.frontend import markup, text


class RunningTextTooLong(ValueError):
    """More than `max_chars` characters arrived without a sentence end."""

    def __init__(self, chars: int, max_chars: int) -> None:
        super().__init__(
            f"the running text has {chars} characters without a sentence end; the limit is "
            f"{max_chars} (max_text_chars): end sentences, or send flush"
        )
        self.chars = chars
        self.max_chars = max_chars


_END_RE = re.compile(r"([.!?]+)[\"')\]]*(?=\s)")
_NEWLINE_RE = re.compile(r"\n")
_BLOCK_RE = re.compile(r"\s*(?:#{1,6}\s|[-*+]\s|\d{1,9}[.)]\s|>|\||```|~~~)")
_FENCE_RE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_SSML_START_RE = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?<speak[\s>/]")
_SSML_END = "</speak>"
_LEADING_RE = re.compile(r"^[\"'(\[*_]+")
_CLAUSE_RE = re.compile(r"[,;:](?=\s)")


@dataclass(frozen=True)
class Piece:
    """A speakable piece of the running text."""

    text: str
    opens: bool = False  # the opening of a sentence: its rest follows (a clause was cut off)
    continues: bool = False  # the rest of the sentence the previous piece opened


def speakable(piece: str) -> bool:
    """True if the front end would say something for `piece` (after markup and normalising)."""
    return any(
        isinstance(seg, markup.Speech) and text.is_speakable(text.normalize(seg.text))
        for seg in markup.segments(piece)
    )


class TextAssembler:
    """The running text of one stream; see the module docstring."""

    def __init__(self, max_chars: int, opening_words: tuple[int, int] | None = None) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        self.max_chars = max_chars
        self.opening_words = opening_words
        self._buf = ""
        self._first = True  # the next sentence is the first of the running text
        self._open = False  # the last piece opened a sentence

    @property
    def pending(self) -> str:
        """Text received whose sentence has not ended yet."""
        return self._buf

    def feed(self, fragment: str) -> list[Piece]:
        """Add a fragment; return the speakable pieces it completes, in order."""
        self._buf += fragment
        pieces: list[Piece] = []
        while True:
            cut = self._boundary(self._buf)
            opening = self._opening(self._buf, cut)
            if opening is not None:
                head, self._buf = self._buf[:opening], self._buf[opening:]
                pieces.append(Piece(head.strip(), opens=True))
                self._open = True
                continue
            if cut is None:
                break
            piece, self._buf = self._buf[:cut], self._buf[cut:]
            pieces += self._ended(piece)
        if not self._buf.strip():
            self._buf = ""  # only whitespace: nothing to keep
        elif len(self._buf) > self.max_chars:
            chars = len(self._buf)
            self._buf = ""
            raise RunningTextTooLong(chars, self.max_chars)
        return pieces

    def flush(self) -> list[Piece]:
        """End the running text: what is pending, if speakable (at most one piece)."""
        piece, self._buf = self._buf, ""
        out = self._ended(piece)
        self._first = True
        return out

    def _ended(self, piece: str) -> list[Piece]:
        """A piece that ends its sentence (or the text)."""
        out = [Piece(piece.strip(), continues=self._open)] if speakable(piece) else []
        self._open = False
        self._first = False
        return out

    def _opening(self, buf: str, cut: int | None) -> int | None:
        """Where the first sentence's opening clause ends, if it is to be spoken on its own."""
        if self.opening_words is None or not self._first or self._open:
            return None
        low, high = self.opening_words
        for m in _CLAUSE_RE.finditer(buf):
            if cut is not None and m.end() > cut:
                return None  # the sentence ends first
            head = buf[: m.end()]
            words = len(head.split())
            if words > high or "\n" in head.strip() or _SSML_START_RE.match(buf):
                return None
            if words >= low and speakable(head) and not _FENCE_RE.search(head):
                return m.end()
        return None

    # --- boundaries ------------------------------------------------------------------------------

    def _boundary(self, buf: str) -> int | None:
        """Index where the first complete piece of `buf` ends, or None if no end is known yet."""
        if _SSML_START_RE.match(buf):
            end = buf.find(_SSML_END)
            return None if end < 0 else end + len(_SSML_END)
        if not buf.strip():
            return None
        fence_open = False
        fences = [m.start() for m in _FENCE_RE.finditer(buf)]
        candidates = sorted(
            [(m.end(), "stop", m) for m in _END_RE.finditer(buf)]
            + [(m.start(), "line", m) for m in _NEWLINE_RE.finditer(buf)]
        )
        for pos, kind, m in candidates:
            fence_open = sum(f < pos for f in fences) % 2 == 1
            if fence_open or not buf[:pos].strip():
                continue
            if kind == "line":
                verdict = _line_ends(buf, pos)
            else:
                verdict = _stop_ends(buf, m)
            if verdict is None:
                return None  # the next word decides, and it has not arrived
            if verdict:
                return pos
        return None


def _line_ends(buf: str, pos: int) -> bool | None:
    """Does the newline at `pos` end a piece? As markdown reads lines: a blank line does, and a
    line break before or after a block (heading, list item, quote, table row)."""
    line_start = buf.rfind("\n", 0, pos) + 1
    line = buf[line_start:pos]
    if not line.strip() or _BLOCK_RE.match(line):
        return True
    rest = buf[pos + 1 :]
    if "\n" not in rest and len(rest.strip()) < 3:
        return None  # too little of the next line has arrived to tell
    nxt = rest.split("\n", 1)[0]
    return not nxt.strip() or bool(_BLOCK_RE.match(nxt))


def _stop_ends(buf: str, m: re.Match[str]) -> bool | None:
    """Does the `.`/`!`/`?` matched by `m` (followed by whitespace) end a sentence?"""
    if m.group(1) != ".":
        return True  # "!", "?", "...", "?!" always do
    before = buf[: m.start()]
    word = before.rsplit(None, 1)[-1] if before.strip() else ""
    core = _LEADING_RE.sub("", word).lower()
    if core in text.TITLES or (len(core) == 1 and core.isalpha()):
        return False  # "Dr. Smith", "J. Smith": a name follows
    if core.isdigit() and before[before.rfind("\n") + 1 :].strip() == word:
        return False  # "1. " opening a line is a list marker, not the end of a sentence
    ambiguous = core in text.ABBREVIATIONS or "." in core
    if not ambiguous:
        return True
    if core in ("e.g", "i.e"):
        return False
    nxt = buf[m.end() :].lstrip()
    if not nxt:
        return None
    return nxt[0].isupper()
