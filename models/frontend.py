"""Text -> audio -> log-mel with the Festival speech synthesiser (Debian `festival` + an HTS voice).

Festival stands in for an acoustic model: it speaks each sentence, and the audio is turned into
the mel contract of models/features.py, which the vocoder re-synthesises. It runs as a
subprocess (`text2wave`), one call per sentence, so a slow or crashing Festival cannot take the
server down and sentences stream: the first mel is ready after one sentence, not the whole text.

Security: user text is written to a temporary file that Festival reads in its plain-text mode. It
never becomes part of a Scheme expression; the only `-eval` arguments are fixed strings from the
voice table and a speed we format from a validated float.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from models import features, text

logger = logging.getLogger(__name__)

MIN_SPEED = 0.5
MAX_SPEED = 2.0
DEBIAN_PACKAGES = "festival festvox-us-slt-hts"


class FrontendUnavailable(RuntimeError):
    """Festival or the requested voice is not installed on this machine."""


class FrontendError(RuntimeError):
    """Festival failed or timed out on a request."""


class FrontendInputError(ValueError):
    """A request the front end cannot serve because of its parameters (voice, speed, text)."""

    param: str | None = None
    """The request field at fault when a caller's name for it differs (e.g. OpenAI's `input`)."""


class UnknownVoice(FrontendInputError):
    """The voice id is not one this front end knows."""


class InvalidSpeed(FrontendInputError):
    """The speed is outside [MIN_SPEED, MAX_SPEED] or not a finite number."""


class EmptyText(FrontendInputError):
    """The text has nothing to speak (no letters or digits after normalisation)."""


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
        text2wave: str = "text2wave",
        voices_roots: tuple[Path, ...] = DEFAULT_VOICES_ROOTS,
        timeout_s: float = 60.0,
        max_sentence_chars: int = text.MAX_SENTENCE_CHARS,
        niceness: int = 0,
    ) -> None:
        self.text2wave = text2wave
        self.voices_roots = voices_roots
        self.timeout_s = timeout_s
        self.max_sentence_chars = max_sentence_chars
        # CPU priority of the Festival processes (nice(1) increment); see server/app.py
        self.niceness = niceness

    # --- discovery ---------------------------------------------------------------------------

    def _binary(self) -> str | None:
        return shutil.which(self.text2wave)

    def _voice_installed(self, fv: _FestivalVoice) -> bool:
        return any((root / fv.voice_subdir).is_dir() for root in self.voices_roots)

    def available(self, voice: str = "slt") -> bool:
        """True if text2wave is on PATH and the voice's files are installed."""
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
        try:
            speed = float(speed)
        except (TypeError, ValueError) as exc:
            raise InvalidSpeed(f"speed must be a number, got {speed!r}") from exc
        if not (math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED):
            raise InvalidSpeed(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
        binary = self._binary()
        if binary is None:
            raise FrontendUnavailable(
                f"Festival's {self.text2wave!r} was not found on PATH; "
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

    def _run_festival(
        self, sentence: str, fv: _FestivalVoice, binary: str, speed: float
    ) -> np.ndarray:
        """One text2wave call on already-normalised ASCII text -> float32 audio at 24 kHz."""
        with tempfile.TemporaryDirectory(prefix="sparrow-festival-") as tmp:
            txt, wav = Path(tmp) / "input.txt", Path(tmp) / "out.wav"
            txt.write_text(sentence + "\n", encoding="ascii", errors="ignore")
            cmd = [
                binary,
                "-mode",
                "fundamental",  # plain text: no markup modes chosen by file content
                "-eval",
                f"(voice_{fv.scheme_name})",
                # speed was validated as a finite float in [0.5, 2]; "%.4f" cannot inject syntax.
                "-eval",
                f'(set! hts_engine_params (cons (list "-r" {speed:.4f}) hts_engine_params))',
                "-o",
                str(wav),
                str(txt),
            ]
            nice = shutil.which("nice") if self.niceness else None
            if nice is not None:
                cmd = [nice, "-n", str(self.niceness), *cmd]
            try:
                proc = subprocess.run(
                    cmd,
                    check=False,
                    cwd=tmp,
                    capture_output=True,
                    timeout=self.timeout_s,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "LC_ALL": "C"},
                )
            except subprocess.TimeoutExpired as exc:
                raise FrontendError(
                    f"Festival timed out after {self.timeout_s:g} s "
                    f"on a {len(sentence)}-character sentence"
                ) from exc
            except OSError as exc:
                raise FrontendUnavailable(f"cannot run {binary}: {exc}") from exc
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            # text2wave exits 0 even on Scheme errors, so its stderr is checked as well.
            if proc.returncode != 0 or "SIOD ERROR" in stderr:
                raise FrontendError(f"Festival failed (exit {proc.returncode}): {stderr[-500:]}")
            try:
                audio, sr = sf.read(str(wav), dtype="float32", always_2d=False)
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                raise FrontendError(
                    f"Festival produced no readable audio: {stderr[-500:]}"
                ) from exc
        if audio.ndim != 1 or audio.size == 0:
            raise FrontendError(f"Festival produced empty or multi-channel audio {audio.shape}")
        return features.resample(audio, int(sr), features.SPEC.sample_rate)

    def synthesize(self, sentence: str, voice: str = "slt", speed: float = 1.0) -> np.ndarray:
        """Speak one sentence: float32 [samples] in [-1, 1] at 24 kHz.

        The text is normalised (numbers, abbreviations, unicode) first; it is not split, so pass
        sentences (see `mel_for_text` for arbitrary text).
        """
        fv, binary, speed = self._resolve(voice, speed)
        clean = text.normalize(sentence)
        if not text.is_speakable(clean):
            raise EmptyText(f"nothing to speak in {sentence[:50]!r}")
        return self._run_festival(clean, fv, binary, speed)

    def sentences(self, text_in: str) -> list[str]:
        """Normalised, speakable sentences of `text_in`, each at most max_sentence_chars long."""
        chunks = text.split_sentences(text.normalize(text_in), self.max_sentence_chars)
        # Chunks of pure punctuation (e.g. "...") make no sound and make Festival fail.
        return [c for c in chunks if text.is_speakable(c)]

    def mel_for_text(
        self, text_in: str, voice: str = "slt", speed: float = 1.0
    ) -> Iterator[np.ndarray]:
        """Yield one log-mel float32 [frames, 80] per sentence, synthesising lazily.

        Voice, speed and emptiness are checked here, before the first sentence is synthesised,
        so bad requests fail before any audio is promised.
        """
        fv, binary, speed = self._resolve(voice, speed)
        chunks = self.sentences(text_in)
        if not chunks:
            raise EmptyText("the text has nothing to speak (no letters or digits)")
        logger.debug("front end: %d sentences, voice=%s speed=%.2f", len(chunks), voice, speed)
        return self._mels(chunks, fv, binary, speed)

    def _mels(
        self, chunks: list[str], fv: _FestivalVoice, binary: str, speed: float
    ) -> Iterator[np.ndarray]:
        for chunk in chunks:
            yield features.log_mel(self._run_festival(chunk, fv, binary, speed))
