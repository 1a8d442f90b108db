"""Text -> audio -> log-mel with the Festival speech synthesiser (Debian `festival` + an HTS voice).

Festival stands in for an acoustic model: it speaks each sentence, and the audio is turned into
the mel contract of models/dsp/features.py, which the vocoder re-synthesises. Festival runs in
subprocesses kept warm between sentences (models/frontend/festival.py), one sentence at a time,
so a slow or crashing Festival cannot take the server down and sentences stream: the first mel is
ready after one sentence, not the whole text.

Security: user text is written to a file that Festival reads in its plain-text mode. It never
becomes part of a Scheme expression (see models/frontend/festival.py for what does).

Markup (markdown, SSML, URLs) is resolved before normalisation, and `plan` shows what will be
spoken (sentences with their speeds, pauses) without running Festival: models/frontend/plan.py
makes the plan and joins the segments' mels, models/frontend/voices.py has the voices, speeds and
errors. This module is the front end's one import point: it re-exports their public names.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from models.dsp import features
from models.frontend import markup, tempo, text
from models.frontend.festival import FestivalFailed, FestivalTimeout, WordTime
from models.frontend.festival_pool import FestivalBusy, FestivalPool
from models.frontend.lexicon import Entry
from models.frontend.plan import (
    EDGE_KEEP_FRAMES,
    FIRST_WORDS,
    JOIN_KEEP_FRAMES,
    OPEN_END,
    OPENING_WORDS,
    QUIET_LOG_MEL,
    Segment,
    Sentence,
    Spoken,
    context_cut,
    keep_before,
    place_words,
    plan_text,
    quiet_edges,
    silence_mel,
    trim_quiet_edges,
)
from models.frontend.voices import (
    DEBIAN_PACKAGES,
    DEFAULT_VOICES_ROOTS,
    MAX_SPEED,
    MIN_SPEED,
    VOICES,
    EmptyText,
    FestivalVoice,
    FrontendBusy,
    FrontendError,
    FrontendInputError,
    FrontendUnavailable,
    InvalidSpeed,
    UnknownVoice,
    Voice,
    check_speed,
)

__all__ = [
    "DEBIAN_PACKAGES",
    "DEFAULT_VOICES_ROOTS",
    "EDGE_KEEP_FRAMES",
    "FIRST_WORDS",
    "JOIN_KEEP_FRAMES",
    "MAX_SPEED",
    "MIN_SPEED",
    "OPENING_WORDS",
    "QUIET_LOG_MEL",
    "EmptyText",
    "FestivalFrontend",
    "FrontendBusy",
    "FrontendError",
    "FrontendInputError",
    "FrontendUnavailable",
    "InvalidSpeed",
    "Segment",
    "Sentence",
    "Spoken",
    "UnknownVoice",
    "Voice",
    "quiet_edges",
    "silence_mel",
    "trim_quiet_edges",
]

logger = logging.getLogger(__name__)


class FestivalFrontend:
    """Speaks text with Festival and returns 24 kHz audio or log-mel frames per sentence."""

    def __init__(
        self,
        festival: str = "festival",
        voices_roots: tuple[Path, ...] = DEFAULT_VOICES_ROOTS,
        timeout_s: float = 60.0,
        max_sentence_chars: int = text.MAX_SENTENCE_CHARS,
        niceness: int = 0,
        processes: int = 2,
        on_sentence: Callable[[float], None] | None = None,
        opening_words: int | None = FIRST_WORDS,
        lexicon: tuple[Entry, ...] = (),
    ) -> None:
        self.festival = festival
        self.voices_roots = voices_roots
        self.timeout_s = timeout_s
        self.max_sentence_chars = max_sentence_chars
        # CPU priority of the Festival processes (nice(1) increment); see server/app.py
        self.niceness = niceness
        self.processes = processes  # most Festival processes at once, kept warm when idle
        self.on_sentence = on_sentence  # told each sentence's seconds (the server's metrics)
        self.opening_words = opening_words  # None: never split the first sentence
        self.lexicon = lexicon  # the user's pronunciations (models/frontend/lexicon.py)
        self._pool: FestivalPool | None = None
        self._lock = threading.Lock()

    # --- discovery ---------------------------------------------------------------------------

    def _binary(self) -> str | None:
        return shutil.which(self.festival)

    def _voice_installed(self, fv: FestivalVoice) -> bool:
        return any((root / fv.voice_subdir).is_dir() for root in self.voices_roots)

    def available(self, voice: str = "slt") -> bool:
        """True if festival is on PATH and the voice's files are installed."""
        fv = VOICES.get(voice)
        return self._binary() is not None and fv is not None and self._voice_installed(fv)

    def voices(self) -> list[Voice]:
        """Installed voices this front end can speak with (empty if Festival is missing)."""
        if self._binary() is None:
            return []
        return [fv.voice for fv in VOICES.values() if self._voice_installed(fv)]

    # --- validation --------------------------------------------------------------------------

    def _resolve(self, voice: str, speed: float) -> tuple[FestivalVoice, str, float]:
        fv = VOICES.get(voice)
        if fv is None:
            raise UnknownVoice(f"unknown voice {voice!r}; known voices: {sorted(VOICES)}")
        speed = check_speed(speed)
        binary = self._binary()
        if binary is None:
            raise FrontendUnavailable(
                f"Festival's {self.festival!r} was not found on PATH; "
                f"install the Debian packages: apt-get install {DEBIAN_PACKAGES}"
            )
        if not self._voice_installed(fv):
            raise FrontendUnavailable(
                f"Festival voice {fv.scheme_name!r} is not installed under "
                f"{[str(r) for r in self.voices_roots]}; "
                f"install the Debian packages: apt-get install {DEBIAN_PACKAGES}"
            )
        return fv, binary, speed

    # --- synthesis ---------------------------------------------------------------------------

    def check(self, voice: str = "slt", speed: float = 1.0) -> None:
        """Raise what `mel_for_text` would for this voice and speed (UnknownVoice, InvalidSpeed,
        FrontendUnavailable), without speaking: a stream checks before its text is complete."""
        self._resolve(voice, speed)

    def _run_festival(
        self, sentence: str, fv: FestivalVoice, binary: str, speed: float
    ) -> tuple[np.ndarray, list[WordTime]]:
        """One sentence of already-normalised ASCII text, spoken by a warm process of the pool
        -> (float32 audio at 24 kHz, its words' times)."""
        pool = self._pool_for(binary)
        try:
            # Waiting for a free process and speaking share the one timeout.
            deadline = time.monotonic() + self.timeout_s
            with pool.process(self.timeout_s) as proc:
                audio, sr, words = proc.speak_timed(
                    sentence, fv.scheme_name, speed, deadline - time.monotonic()
                )
        except FestivalBusy as exc:
            raise FrontendBusy(str(exc)) from exc
        except FestivalTimeout as exc:
            raise FrontendError(
                f"Festival timed out after {self.timeout_s:g} s "
                f"on a {len(sentence)}-character sentence"
            ) from exc
        except FestivalFailed as exc:
            raise FrontendError(str(exc)) from exc
        except OSError as exc:
            raise FrontendUnavailable(f"cannot run {binary}: {exc}") from exc
        if audio.ndim != 1 or audio.size == 0:
            raise FrontendError(f"Festival produced empty or multi-channel audio {audio.shape}")
        return features.resample(audio, sr, features.SPEC.sample_rate), words

    def _pool_for(self, binary: str) -> FestivalPool:
        with self._lock:
            if self._pool is None or self._pool.binary != binary:
                if self._pool is not None:
                    self._pool.close()
                self._pool = FestivalPool(
                    binary,
                    self.processes,
                    self.niceness,
                    start_timeout_s=self.timeout_s,
                    lexicon=self.lexicon,
                )
            return self._pool

    def warm_up(self) -> bool:
        """Start one Festival process with the default voice loaded now (the server does, at
        start-up), so the first text does not wait for either; False if Festival or the
        default voice is not installed."""
        binary = self._binary()
        if binary is None or not self._voice_installed(VOICES["slt"]):
            return False
        self._pool_for(binary).warm(1, VOICES["slt"].scheme_name)
        return True

    def process_counts(self) -> tuple[int, int]:
        """(busy, idle) Festival processes now."""
        with self._lock:
            pool = self._pool
        return pool.counts() if pool is not None else (0, 0)

    def close(self) -> None:
        """Stop the warm Festival processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def synthesize(self, sentence: str, voice: str = "slt", speed: float = 1.0) -> np.ndarray:
        """Speak one sentence: float32 [samples] in [-1, 1] at 24 kHz.

        The text is normalised (numbers, abbreviations, unicode) first; it is not split, so pass
        sentences (see `mel_for_text` for arbitrary text).
        """
        fv, binary, speed = self._resolve(voice, speed)
        if speed > tempo.HTS_MAX_RATE:  # faster needs the mel time-scale of `mel_for_text`
            raise InvalidSpeed(
                f"synthesize speaks up to speed {tempo.HTS_MAX_RATE:g} (Festival's own rate); "
                "faster needs mel_for_text, which time-scales the mel"
            )
        clean = text.normalize(sentence)
        if not text.is_speakable(clean):
            raise EmptyText(f"nothing to speak in {sentence[:50]!r}")
        return self._run_festival(clean, fv, binary, speed)[0]

    def sentences(self, text_in: str) -> list[str]:
        """Normalised, speakable sentences of `text_in`, each at most max_sentence_chars long."""
        return [s.text for s in self.plan(text_in) if isinstance(s, Sentence)]

    def plan(self, text_in: str, speed: float = 1.0, continues: bool = False) -> list[Segment]:
        """What `mel_for_text` speaks, in order: sentences (normalised text, speed) and pauses.

        Markup is resolved first (models/frontend/markup.py), so it never meets the normaliser.
        Needs no Festival; InvalidSpeed for a speed out of range. See models/frontend/plan.py
        `plan_text` for prosody rates and `continues`.
        """
        return plan_text(
            text_in, check_speed(speed), self.max_sentence_chars, self.opening_words, continues
        )

    def mel_for_text(
        self, text_in: str, voice: str = "slt", speed: float = 1.0
    ) -> Iterator[np.ndarray]:
        """Yield one log-mel float32 [frames, 80] per segment of `plan` (a sentence, or a pause's
        silence), synthesising lazily.

        Voice, speed and emptiness are checked here, before the first sentence is synthesised,
        so bad requests fail before any audio is promised.
        """
        return (s.mel for s in self.spoken_for_text(text_in, voice, speed))

    def spoken_for_text(
        self,
        text_in: str,
        voice: str = "slt",
        speed: float = 1.0,
        continues: bool = False,
        opens: bool = False,
        leads: bool = True,
    ) -> Iterator[Spoken]:
        """`mel_for_text` with each segment's words: their times are in seconds of that mel
        (after the speed's time-scale and the edge trimming), as Festival placed them.

        A streamed text's pieces (models/frontend/assembler.py) say how they join: `opens` (the
        text is a sentence's opening clause: its end is trimmed to a clause pause) and
        `continues` (the rest of such a sentence: its start is, see `plan`). `leads`: nothing
        is heard before this text (a request's or an utterance's start), so Festival's ~0.2 s of
        silence before its first word is cut to EDGE_KEEP_FRAMES: the first word is heard that
        much sooner. Elsewhere it stays, as the pause between sentences."""
        fv, binary, speed = self._resolve(voice, speed)
        segments = self.plan(text_in, speed, continues)
        n = sum(isinstance(s, Sentence) for s in segments)
        if not n:
            raise EmptyText("the text has nothing to speak (no letters or digits)")
        if opens:
            segments.append(OPEN_END)
        logger.debug("front end: %d sentences, voice=%s speed=%.2f", n, voice, speed)
        return self._spoken(segments, fv, binary, leads)

    def _spoken(
        self, segments: list[Segment], fv: FestivalVoice, binary: str, leads: bool
    ) -> Iterator[Spoken]:
        for i, seg in enumerate(segments):
            if seg is OPEN_END:
                continue  # only marks how the last sentence ends
            if isinstance(seg, markup.Pause):
                yield Spoken(silence_mel(seg.seconds), ())
                continue
            t0 = time.perf_counter()
            rate, factor = tempo.split_speed(seg.speed)
            audio, words = self._run_festival(seg.spoken_text, fv, binary, rate)
            cut = context_cut(words, seg.before, seg.after)
            lost = cut is None and bool(seg.before or seg.after)
            if lost:
                # Festival did not say the context words as one word each: the text alone, its
                # cut edges trimmed as between words without context
                logger.debug("front end: context words not found; spoken without them")
                audio, words = self._run_festival(seg.text, fv, binary, rate)
            start_s, end_s, words = cut if cut is not None else (None, None, words)
            mel = features.log_mel(audio)
            if factor != 1.0:
                mel = tempo.time_scale(mel, factor)
            # Festival starts and ends each utterance with ~0.2 s of near-silence; next to a pause
            # that edge is cut, so the silence around a <break time="1s"/> lasts about 1 s, and
            # where a sentence was cut in two, so the parts join as one sentence. Where context
            # words were spoken, the mel is cut where they meet the text instead.
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            before = keep_before(segments[i - 1] if i else None, seg)
            if i == 0 and leads and before is None:
                before = EDGE_KEEP_FRAMES
            after = keep_before(seg, nxt) if nxt is not None else None
            if lost:
                phrase = JOIN_KEEP_FRAMES["phrase"]
                before, after = (phrase if seg.before else before), (phrase if seg.after else after)
            lo, hi = quiet_edges(mel, before, after)
            if start_s is not None:
                lo = _frame_at(start_s / factor, mel.shape[0])
            if end_s is not None:
                hi = max(_frame_at(end_s / factor, mel.shape[0]), lo + 1)
            mel = mel[lo:hi]
            if self.on_sentence is not None:
                self.on_sentence(time.perf_counter() - t0)
            yield Spoken(mel, place_words(words, factor, lo, mel.shape[0]))


def _frame_at(seconds: float, frames: int) -> int:
    """The mel frame nearest `seconds`, within [0, frames - 1]."""
    frame_rate = features.SPEC.sample_rate / features.SPEC.hop_length
    return min(max(round(seconds * frame_rate), 0), frames - 1)
