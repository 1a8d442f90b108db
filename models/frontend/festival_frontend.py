"""Text -> audio -> log-mel with the Festival speech synthesiser (Debian `festival` + an HTS voice).

Festival stands in for an acoustic model: it speaks each sentence, and the audio is turned into
the mel contract of models/dsp/features.py, which the vocoder re-synthesises. Festival runs in
subprocesses kept warm between sentences (models/frontend/festival.py), one sentence at a time, so a slow
or crashing Festival cannot take the server down and sentences stream: the first mel is ready
after one sentence, not the whole text.

Security: user text is written to a file that Festival reads in its plain-text mode. It never
becomes part of a Scheme expression (see models/frontend/festival.py for what does).

Markup (markdown, SSML, URLs) is resolved by models/markup.py before normalisation, and `plan`
shows what will be spoken (sentences with their speeds, pauses) without running Festival.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.dsp import features
from models.frontend import markup, tempo, text
from models.frontend.festival import (
    FestivalBusy,
    FestivalFailed,
    FestivalPool,
    FestivalTimeout,
    WordTime,
)
from models.frontend.lexicon import Entry

logger = logging.getLogger(__name__)

MIN_SPEED = 0.25  # OpenAI's range; see models/tempo.py for how each end is reached
MAX_SPEED = 4.0
DEBIAN_PACKAGES = "festival festvox-us-slt-hts"


class FrontendUnavailable(RuntimeError):
    """Festival or the requested voice is not installed on this machine."""


class FrontendError(RuntimeError):
    """Festival failed or timed out on a request."""


class FrontendInputError(ValueError):
    """A request the front end cannot serve because of its parameters (voice, speed, text)."""

    param: str | None = None
    """The request field at fault when a caller's name for it differs (e.g. OpenAI's `input`)."""


class FrontendBusy(FrontendError):
    """Every Festival process stayed busy for the whole timeout."""


class UnknownVoice(FrontendInputError):
    """The voice id is not one this front end knows."""


class InvalidSpeed(FrontendInputError):
    """The speed is outside [MIN_SPEED, MAX_SPEED] or not a finite number."""


class EmptyText(FrontendInputError):
    """The text has nothing to speak (no letters or digits after normalisation)."""


@dataclass(frozen=True)
class Sentence:
    text: str  # normalised, speakable, at most max_sentence_chars
    speed: float  # the request's speed times any SSML prosody rate, within the allowed range
    join: str = ""
    """How it follows the previous sentence: "" (a sentence of its own), or it continues the
    previous one, which is a long sentence's opening (see OPENING_WORDS): "clause" (cut at clause
    punctuation, a short pause between) or "phrase" (cut between words, no pause)."""


OPENING_WORDS = 10
"""A text's first sentence longer than this many words (and 3 more) is spoken in two parts, its
opening first (models/frontend/text.py `split_opening`), so the first audio does not wait for
Festival to speak the whole sentence: Festival's time grows with the audio it makes (~0.05 s for
4 words, ~0.18 s for 20 on a shared 2-core EPYC)."""
JOIN_KEEP_FRAMES = {"clause": 5, "phrase": 1}
"""Quiet frames kept on each side of the cut: 2 x 5 (125 ms, about Festival's own pause at a
comma) at clause punctuation, 2 x 1 (25 ms, no audible pause) between words."""


Segment = Sentence | markup.Pause


@dataclass(frozen=True)
class Spoken:
    """One segment of a text as the vocoder will hear it: its log-mel and the words in it."""

    mel: np.ndarray  # float32 [frames, 80]
    words: tuple[WordTime, ...]  # seconds from this mel's first frame, in order (none in a pause)


@dataclass(frozen=True)
class Voice:
    id: str  # what clients pass as "voice"
    name: str
    language: str
    sample_rate: int  # of the audio this front end returns (always the mel contract's rate)


@dataclass(frozen=True)
class _FestivalVoice:
    voice: Voice
    scheme_name: str  # Festival's voice function is `voice_<scheme_name>`
    voice_subdir: str  # relative to the Festival voices root


# Voices Sparrow knows how to drive. Speed uses the HTS engine's "-r" (speech rate) option, which
# Festival's generic Duration_Stretch parameter does not affect for HTS voices (measured: a 6.17 s
# sentence stays 6.17 s under Duration_Stretch 0.5 and 2.0, but becomes 12.4 s / 3.1 s with -r).
_VOICES: dict[str, _FestivalVoice] = {
    "slt": _FestivalVoice(
        voice=Voice(
            "slt", "CMU Arctic SLT (US English, female, HTS)", "en-US", features.SPEC.sample_rate
        ),
        scheme_name="cmu_us_slt_arctic_hts",
        voice_subdir="us/cmu_us_slt_arctic_hts",
    ),
}

DEFAULT_VOICES_ROOTS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))


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
        opening_words: int | None = OPENING_WORDS,
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

    def _voice_installed(self, fv: _FestivalVoice) -> bool:
        return any((root / fv.voice_subdir).is_dir() for root in self.voices_roots)

    def available(self, voice: str = "slt") -> bool:
        """True if festival is on PATH and the voice's files are installed."""
        fv = _VOICES.get(voice)
        return self._binary() is not None and fv is not None and self._voice_installed(fv)

    def voices(self) -> list[Voice]:
        """Installed voices this front end can speak with (empty if Festival is missing)."""
        if self._binary() is None:
            return []
        return [fv.voice for fv in _VOICES.values() if self._voice_installed(fv)]

    # --- validation --------------------------------------------------------------------------

    def _resolve(self, voice: str, speed: float) -> tuple[_FestivalVoice, str, float]:
        fv = _VOICES.get(voice)
        if fv is None:
            raise UnknownVoice(f"unknown voice {voice!r}; known voices: {sorted(_VOICES)}")
        speed = _check_speed(speed)
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
        self, sentence: str, fv: _FestivalVoice, binary: str, speed: float
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
        """Start one Festival process now (the server does, at start-up), so the first text
        does not wait for it; False if Festival or the default voice is not installed."""
        binary = self._binary()
        if binary is None or not self._voice_installed(_VOICES["slt"]):
            return False
        self._pool_for(binary).warm(1)
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

        Markup is resolved first (models/markup.py), so it never meets the normaliser. Needs no
        Festival; InvalidSpeed for a speed out of range. An SSML prosody rate multiplies
        `speed`, and the product is clamped to [MIN_SPEED, MAX_SPEED]. With `continues`, the
        text is the rest of a sentence whose opening was spoken before (a streamed text, see
        models/frontend/assembler.py): it joins that opening, and is not cut again.
        """
        speed = _check_speed(speed)
        out: list[Segment] = []
        for seg in markup.segments(text_in):
            if isinstance(seg, markup.Pause):
                out.append(seg)
                continue
            seg_speed = min(max(speed * seg.rate, MIN_SPEED), MAX_SPEED)
            chunks = text.split_sentences(text.normalize(seg.text), self.max_sentence_chars)
            # Chunks of pure punctuation (e.g. "...") make no sound and make Festival fail.
            out += [Sentence(c, seg_speed) for c in chunks if text.is_speakable(c)]
        if not continues:
            return self._split_opening(out)
        if out and isinstance(out[0], Sentence):
            out[0] = Sentence(out[0].text, out[0].speed, "clause")
        return out

    def _split_opening(self, segments: list[Segment]) -> list[Segment]:
        """The first sentence, if long, as its opening and the rest (see OPENING_WORDS)."""
        first = next((i for i, s in enumerate(segments) if isinstance(s, Sentence)), None)
        if first is None or self.opening_words is None:
            return segments
        sentence = segments[first]
        assert isinstance(sentence, Sentence)
        cut = text.split_opening(sentence.text, self.opening_words)
        if cut is None:
            return segments
        head, rest, at_clause = cut
        parts = [
            Sentence(head, sentence.speed, sentence.join),
            Sentence(rest, sentence.speed, "clause" if at_clause else "phrase"),
        ]
        return [*segments[:first], *parts, *segments[first + 1 :]]

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
    ) -> Iterator[Spoken]:
        """`mel_for_text` with each segment's words: their times are in seconds of that mel
        (after the speed's time-scale and the edge trimming), as Festival placed them.

        A streamed text's pieces (models/frontend/assembler.py) say how they join: `opens` (the
        text is a sentence's opening clause: its end is trimmed to a clause pause) and
        `continues` (the rest of such a sentence: its start is, see `plan`)."""
        fv, binary, speed = self._resolve(voice, speed)
        segments = self.plan(text_in, speed, continues)
        n = sum(isinstance(s, Sentence) for s in segments)
        if not n:
            raise EmptyText("the text has nothing to speak (no letters or digits)")
        if opens:
            segments.append(_OPEN_END)
        logger.debug("front end: %d sentences, voice=%s speed=%.2f", n, voice, speed)
        return self._spoken(segments, fv, binary)

    def _spoken(self, segments: list[Segment], fv: _FestivalVoice, binary: str) -> Iterator[Spoken]:
        for i, seg in enumerate(segments):
            if seg is _OPEN_END:
                continue  # only marks how the last sentence ends
            if isinstance(seg, markup.Pause):
                yield Spoken(silence_mel(seg.seconds), ())
                continue
            t0 = time.perf_counter()
            rate, factor = tempo.split_speed(seg.speed)
            audio, words = self._run_festival(seg.text, fv, binary, rate)
            mel = features.log_mel(audio)
            if factor != 1.0:
                mel = tempo.time_scale(mel, factor)
            # Festival starts and ends each utterance with ~0.2 s of near-silence; next to a pause
            # that edge is cut, so the silence around a <break time="1s"/> lasts about 1 s, and
            # where a sentence was cut in two, so the parts join as one sentence.
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            before = _keep_before(segments[i - 1] if i else None, seg)
            after = _keep_before(seg, nxt) if nxt is not None else None
            lo, hi = quiet_edges(mel, before, after)
            mel = mel[lo:hi]
            if self.on_sentence is not None:
                self.on_sentence(time.perf_counter() - t0)
            yield Spoken(mel, _place_words(words, factor, lo, mel.shape[0]))


_OPEN_END = Sentence("", 1.0, "clause")
"""Marks (after the last segment) a text that is a sentence's opening: the next text joins it."""


def _keep_before(prev: Segment | None, seg: Segment) -> int | None:
    """Quiet frames to keep at the boundary between `prev` and `seg` (None: keep Festival's)."""
    if isinstance(prev, markup.Pause) or isinstance(seg, markup.Pause):
        return EDGE_KEEP_FRAMES
    if isinstance(seg, Sentence) and seg.join:
        return JOIN_KEEP_FRAMES[seg.join]
    return None


def _place_words(
    words: list[WordTime], factor: float, lo: int, frames: int
) -> tuple[WordTime, ...]:
    """Festival's word times -> seconds of the mel made from its audio: divided by the
    time-scale factor, shifted by the `lo` frames trimmed off the start, clamped to the mel."""
    frame_s = features.SPEC.hop_length / features.SPEC.sample_rate
    shift, length = lo * frame_s, frames * frame_s
    out = []
    for w in words:
        start = min(max(w.start / factor - shift, 0.0), length)
        end = min(max(w.end / factor - shift, 0.0), length)
        if end > start:
            out.append(WordTime(w.word, round(start, 4), round(end, 4)))
    return tuple(out)


def _check_speed(speed: object) -> float:
    try:
        value = float(speed)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidSpeed(f"speed must be a number, got {speed!r}") from exc
    if not (math.isfinite(value) and MIN_SPEED <= value <= MAX_SPEED):
        raise InvalidSpeed(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {value}")
    return value


QUIET_LOG_MEL = -5.0
"""A frame whose loudest bin is below this is quiet (Festival's edge silence lies at -8..-5.3,
speech onsets above -4.5)."""
EDGE_KEEP_FRAMES = 3  # kept of a trimmed quiet edge (37.5 ms), so a weak onset or tail survives


def trim_quiet_edges(mel: np.ndarray, start: bool, end: bool) -> np.ndarray:
    """Cut the quiet frames at the start and/or end of `mel`, keeping EDGE_KEEP_FRAMES of each."""
    keep = EDGE_KEEP_FRAMES
    lo, hi = quiet_edges(mel, keep if start else None, keep if end else None)
    return mel[lo:hi]


def quiet_edges(mel: np.ndarray, start: int | None, end: int | None) -> tuple[int, int]:
    """The frames to keep, [lo, hi): the quiet frames at the start (end) of `mel` cut down to
    `start` (`end`) frames; None leaves that edge as it is."""
    loud = np.flatnonzero(mel.max(axis=1) >= QUIET_LOG_MEL)
    if loud.size == 0:
        return 0, mel.shape[0]
    lo = max(int(loud[0]) - start, 0) if start is not None else 0
    hi = min(int(loud[-1]) + 1 + end, mel.shape[0]) if end is not None else mel.shape[0]
    return lo, hi


def silence_mel(seconds: float) -> np.ndarray:
    """Log-mel of digital silence lasting `seconds` (at least one frame): float32 [frames, 80]."""
    frame_rate = features.SPEC.sample_rate / features.SPEC.hop_length
    frames = max(1, round(seconds * frame_rate))
    row = features.log_mel(np.zeros(features.SPEC.hop_length, dtype=np.float32))[:1]
    return np.repeat(row, frames, axis=0)
