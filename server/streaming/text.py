"""The running text of a websocket stream: `text` fragments in, mel segments out.

The fragments are one running text (an LLM's tokens): each sentence is spoken as soon as its end
is known (models/frontend/assembler.py), a long first sentence's opening clause sooner, and the
front end's segments go to the session one at a time as they are made, each with its words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from models.dsp.features import SPEC, validate_mel
from models.frontend.assembler import Piece, RunningTextTooLong, TextAssembler
from models.frontend.festival_frontend import OPENING_WORDS
from server.catalog import resolve_voice
from server.errors import InputTooLarge
from server.synthesis import check_text, check_text_frames

OPENING_CLAUSE = 5
"""Fewest words of a first sentence's opening clause spoken before the sentence has ended."""

Emit = Callable[[np.ndarray, Sequence[Any]], Awaitable[None]]
"""Takes one segment's mel and its words (the session sends the words, then pushes the mel)."""


class RunningText:
    """One connection's text: `voice` and `speed` are the stream's config."""

    def __init__(self, frontend: Any, max_text_chars: int, max_text_frames: int) -> None:
        self.frontend = frontend
        self.max_text_chars = max_text_chars
        self.max_text_frames = max_text_frames
        self.voice: str | None = None
        self.speed = 1.0
        self.assembler = TextAssembler(max_text_chars, (OPENING_CLAUSE, OPENING_WORDS))
        self.checked = False  # voice, speed and Festival checked at the first text
        self.utt_frames = 0  # frames the text of this utterance read out as

    async def feed(self, fragment: str, emit: Emit) -> None:
        """A fragment of the running text: speak each sentence it completes."""
        check_text(fragment, self.max_text_chars)
        if not self.checked:  # a missing Festival or bad speed fails now, not at the end
            self.frontend.check(resolve_voice(self.voice), self.speed)
            self.checked = True
        try:
            pieces = self.assembler.feed(fragment)
        except RunningTextTooLong as exc:
            raise InputTooLarge(str(exc), "text") from exc
        for piece in pieces:
            await self._speak(piece, emit)

    async def flush(self, emit: Emit) -> None:
        """Speak whatever text is pending (the utterance ends, or a mel comes after it)."""
        for piece in self.assembler.flush():
            await self._speak(piece, emit)

    def end_utterance(self) -> None:
        self.utt_frames = 0

    async def _speak(self, piece: Piece, emit: Emit) -> None:
        """One speakable piece of the running text, a segment at a time as the front end makes
        it; its words are emitted with its mel, so they can go out before its audio."""
        spoken = self.frontend.spoken_for_text(
            piece.text,
            voice=resolve_voice(self.voice),
            speed=self.speed,
            continues=piece.continues,
            opens=piece.opens,
            leads=self.utt_frames == 0,
        )
        sentinel = object()
        while True:
            item: Any = await asyncio.to_thread(next, spoken, sentinel)
            if item is sentinel:
                return
            mel = validate_mel(item.mel)
            self.utt_frames += mel.shape[0]
            check_text_frames(self.utt_frames, self.max_text_frames)
            await emit(mel, item.words)


def words_event(words: Sequence[Any], frames_before: int) -> dict[str, Any]:
    """A `words` event for the mel that follows `frames_before` frames of the connection's audio,
    its times in seconds of that audio."""
    t0 = frames_before * SPEC.hop_length / SPEC.sample_rate
    return {
        "type": "words",
        "words": [
            {"word": w.word, "start": round(t0 + w.start, 4), "end": round(t0 + w.end, 4)}
            for w in words
        ],
    }
