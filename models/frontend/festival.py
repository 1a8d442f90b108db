"""Warm Festival processes: `festival --pipe` kept running with its voice loaded, one sentence at
a time (the bounded pool of them: models/frontend/festival_pool.py).

Starting Festival costs more than speaking a short sentence: `text2wave` on "Hello there." takes
~0.33 s, of which ~0.25 s is start-up (init files, voice, a 10-million-cell Lisp heap it touches
whole), while a warm process speaks it in ~0.07 s. So the front end keeps processes alive and
feeds them sentences; each produces exactly what `text2wave` would (same hooks: every utterance
Festival splits a file into is synthesised and the waves joined), bit for bit.

Security: user text only ever reaches Festival through the file `input.txt` read in plain-text
("fundamental") mode. What goes down the pipe is our own fixed Scheme, a voice name from the
front end's table, a speed formatted from a validated float, and a marker made of a random token
and a counter; each process works in its own temporary directory, so file names are constants.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from models.frontend.lexicon import Entry

logger = logging.getLogger(__name__)

# Lisp cells in Festival's heap (its default is 10,000,000, ~330 MB touched at start-up). With
# the HTS voice, 1,000,000 starts in 0.05 s instead of 0.18 s and speaks the same audio at the
# same speed, in ~60 MB (~120 MB after a 300-character sentence of digits, against ~410 MB).
HEAP_CELLS = 1_000_000

# Defined once per process. `sparrow_join` is text2wave's hook: each utterance Festival cuts the
# file into is synthesised and its wave appended. It also keeps each word's start and end (its
# first segment's start, its last segment's end, from the Word -> SylStructure -> Segment
# relations), shifted by the audio already joined, so word times come from the same call.
_PRELUDE = """(define (sparrow_seconds w)
  (/ (cadr (assoc 'num_samples (wave.info w))) (cadr (assoc 'sample_rate (wave.info w)))))
(define (sparrow_join utt)
  (let ((off (if sparrow_wave (sparrow_seconds sparrow_wave) 0)))
    (mapcar
     (lambda (w)
       (set! sparrow_words
             (cons (list (+ off (item.feat w "R:SylStructure.daughter1.daughter1.segment_start"))
                         (+ off (item.feat w "R:SylStructure.daughtern.daughtern.segment_end"))
                         (item.name w))
                   sparrow_words)))
     (utt.relation.items utt 'Word)))
  (set! sparrow_wave (if sparrow_wave (wave.append sparrow_wave (utt.wave utt)) (utt.wave utt))))
(define (sparrow_save_words)
  (let ((fd (fopen "words.txt" "w")))
    (mapcar (lambda (x) (format fd "%f %f %s\\n" (car x) (cadr x) (car (cddr x))))
            (reverse sparrow_words))
    (fclose fd)))
(define (sparrow_load_lexicon)
  (let ((fd (fopen "lexicon.txt" "r")) (e nil))
    (while (not (equal? (set! e (readfp fd)) (eof-val)))
      (lex.add.entry (list (car e) nil (lex.syllabify.phstress (car (cdr e))))))
    (fclose fd)))
(set! tts_hooks (list utt.synth sparrow_join))
(defvar sparrow_wave nil)
(defvar sparrow_words nil)"""

# The user lexicon (models/frontend/lexicon.py) is read as data by `sparrow_load_lexicon` above:
# `readfp` parses each ("word" (phones)) entry without evaluating it, after each voice load
# (entries belong to the voice's lexicon).

# hts_engine_params as the voice left it, so each sentence's speed replaces the last one's
# rather than piling onto it.
_LOAD_VOICE = "(voice_{scheme}) (set! sparrow_voice_params hts_engine_params)"

_SCHEME_NAME = re.compile(r"[a-z0-9_]+")  # voice names come from our table; checked anyway

_SPEAK = (
    '(set! hts_engine_params (cons (list "-r" {speed:.4f}) sparrow_voice_params)) '
    "(set! sparrow_wave nil) (set! sparrow_words nil) "
    '(tts_file "input.txt" (quote fundamental)) '
    '(if sparrow_wave (wave.save sparrow_wave "out.wav" (quote riff))) '
    "(sparrow_save_words)"
)


@dataclass(frozen=True)
class WordTime:
    """A word as Festival spoke it (its own tokenisation: "3.5" is three words), in seconds of
    the sentence's audio."""

    word: str
    start: float
    end: float


class FestivalFailed(RuntimeError):
    """Festival reported an error, died or produced no audio."""


class FestivalTimeout(FestivalFailed):
    """Festival did not answer in time (it has been killed)."""


class FestivalProcess:
    """One running `festival --pipe` in its own temporary directory."""

    def __init__(
        self,
        binary: str,
        niceness: int = 0,
        start_timeout_s: float = 30.0,
        lexicon: tuple[Entry, ...] = (),
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="sparrow-festival-"))
        self._lexicon = bool(lexicon)
        if lexicon:
            data = "".join(e.festival_data() + "\n" for e in lexicon)
            (self._dir / "lexicon.txt").write_text(data, encoding="ascii")
        cmd = [binary, "--heap", str(HEAP_CELLS), "--pipe"]
        nice = shutil.which("nice") if niceness else None
        if nice is not None:
            cmd = [nice, "-n", str(niceness), *cmd]
        self._token = secrets.token_hex(8)
        self._count = 0
        self.voice: str | None = None
        self.uses = 0
        try:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self._dir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # one stream: errors arrive before the marker
                env={**os.environ, "LC_ALL": "C"},
                start_new_session=True,  # its own process group, killed as one on timeout
            )
        except OSError:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._dir)
        try:
            self._call(_PRELUDE, start_timeout_s)
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return self._proc.poll() is None

    def speak(
        self, sentence: str, scheme_voice: str, speed: float, timeout_s: float
    ) -> tuple[np.ndarray, int]:
        """Synthesise one sentence of normalised ASCII text: (float32 [samples], Festival's
        sample rate). FestivalFailed / FestivalTimeout; after either, close the process."""
        audio, sample_rate, _ = self.speak_timed(sentence, scheme_voice, speed, timeout_s)
        return audio, sample_rate

    def speak_timed(
        self, sentence: str, scheme_voice: str, speed: float, timeout_s: float
    ) -> tuple[np.ndarray, int, list[WordTime]]:
        """`speak`, plus each word's times from the same synthesis (read back as data)."""
        deadline = time.monotonic() + timeout_s
        self.use_voice(scheme_voice, timeout_s)
        (self._dir / "input.txt").write_text(sentence + "\n", encoding="ascii", errors="ignore")
        out, words = self._dir / "out.wav", self._dir / "words.txt"
        out.unlink(missing_ok=True)
        words.unlink(missing_ok=True)
        self.uses += 1
        self._call(_SPEAK.format(speed=float(speed)), deadline - time.monotonic())
        try:
            audio, sample_rate = sf.read(str(out), dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise FestivalFailed("Festival produced no readable audio") from exc
        return audio, int(sample_rate), _read_words(words, audio.shape[0] / sample_rate)

    def use_voice(self, scheme_voice: str, timeout_s: float) -> None:
        """Load the voice (and the user lexicon into it) unless it is the one loaded."""
        if not _SCHEME_NAME.fullmatch(scheme_voice):
            raise ValueError(f"not a Festival voice name: {scheme_voice!r}")
        if self.voice == scheme_voice:
            return
        deadline = time.monotonic() + timeout_s
        self._call(_LOAD_VOICE.format(scheme=scheme_voice), timeout_s)
        if self._lexicon:
            self._call("(sparrow_load_lexicon)", deadline - time.monotonic())
        self.voice = scheme_voice

    def _call(self, scheme: str, timeout_s: float) -> str:
        """Send Scheme, wait for its marker; return what Festival printed before it."""
        self._count += 1
        marker = f"sparrow-done-{self._token}-{self._count}"
        line = f'{scheme}\n(format t "{marker}\\n") (fflush nil)\n'
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(line.encode("ascii"))
            self._proc.stdin.flush()
        except OSError as exc:  # it exited before reading: say what it printed
            raise FestivalFailed(f"Festival exited: {self._tail(self._drain())}") from exc
        out = self._read_until(marker.encode(), time.monotonic() + max(timeout_s, 0.0))
        text = out.decode("utf-8", "replace")
        if "SIOD ERROR" in text:  # Festival carries on after a Scheme error; we do not
            raise FestivalFailed(f"Festival error: {text.strip()[-500:]}")
        return text

    def _read_until(self, marker: bytes, deadline: float) -> bytes:
        buf, why = self._read(deadline, marker)
        if why == "timeout":
            self.close()
            raise FestivalTimeout("Festival did not answer in time")
        if why == "eof":
            raise FestivalFailed(f"Festival exited: {self._tail(buf)}")
        return buf[: buf.index(marker)]

    def _drain(self) -> bytes:
        """What the (exited) process left on its output, up to EOF or one second."""
        return self._read(time.monotonic() + 1.0)[0]

    def _read(self, deadline: float, marker: bytes | None = None) -> tuple[bytes, str]:
        """Festival's output until `marker` appears, EOF or the deadline: (bytes, which)."""
        assert self._proc.stdout is not None
        fd, buf = self._proc.stdout.fileno(), b""
        while marker is None or marker not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return buf, "timeout"
            if not select.select([fd], [], [], remaining)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return buf, "eof"
            buf += chunk
        return buf, "marker"

    def _tail(self, buf: bytes) -> str:
        try:
            code = self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        return f"exit {code}, {buf.decode('utf-8', 'replace').strip()[-500:]!r}"

    def close(self) -> None:
        """Stop the process (its whole group) and remove its directory; safe to call twice."""
        self._finalizer()


def _read_words(path: Path, duration: float) -> list[WordTime]:
    """words.txt ("start end word" lines) -> WordTimes within [0, duration], in order."""
    out: list[WordTime] = []
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        start_s, _, rest = line.partition(" ")
        end_s, _, word = rest.partition(" ")
        try:
            start, end = float(start_s), float(end_s)
        except ValueError:
            continue
        start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
        if word and end > start:
            out.append(WordTime(word, start, end))
    return out


def _stop(proc: subprocess.Popen[bytes], workdir: Path) -> None:
    # A module function, not a method: weakref.finalize must not hold the FestivalProcess, and
    # it also runs at interpreter exit, so no process or directory outlives the server.
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        logger.warning("Festival process %d did not exit after SIGKILL", proc.pid)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:  # stdin's unflushed bytes to a process that is gone
                pass
    shutil.rmtree(workdir, ignore_errors=True)
