"""A bounded pool of warm Festival processes (models/frontend/festival.py), shared by the server's
threads: idle processes are reused, a failed one is closed, a worn one is replaced in advance."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from models.frontend.festival import FestivalFailed, FestivalProcess
from models.frontend.lexicon import Entry

logger = logging.getLogger(__name__)

# A process is replaced after this many sentences, so a slow leak in a 1990s C++ code base
# cannot grow without bound in a long-running server (a start costs ~0.05 s).
MAX_USES = 1000


class FestivalBusy(RuntimeError):
    """Every process of the pool stayed busy for the whole wait."""


class FestivalPool:
    """At most `size` Festival processes; idle ones are kept warm and reused.

    Thread-safe: the server asks for sentences from worker threads. A process that failed or
    timed out is closed, not returned, and the next request starts a fresh one.
    """

    def __init__(
        self,
        binary: str,
        size: int,
        niceness: int = 0,
        start_timeout_s: float = 30.0,
        lexicon: tuple[Entry, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"a Festival pool needs at least one process, got {size}")
        self.binary = binary
        self.size = size
        self.niceness = niceness
        self.start_timeout_s = start_timeout_s
        self.lexicon = lexicon
        self.started = 0  # processes started over the pool's life (tests and logs)
        self._idle: list[FestivalProcess] = []
        self._running = 0
        self._cond = threading.Condition()
        self._closed = False

    def _start(self) -> FestivalProcess:
        """Start a process for a place already counted in _running; give the place back if the
        start fails."""
        try:
            proc = FestivalProcess(self.binary, self.niceness, self.start_timeout_s, self.lexicon)
        except BaseException:
            with self._cond:
                self._running -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.started += 1
        return proc

    @contextmanager
    def process(self, wait_s: float) -> Iterator[FestivalProcess]:
        """A process for one sentence; it goes back to the pool if the sentence went well."""
        proc = self._acquire(wait_s)
        ok = False
        try:
            yield proc
            ok = True
        finally:
            self._release(proc, ok)

    def _acquire(self, wait_s: float) -> FestivalProcess:
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if self._closed:
                    raise FestivalFailed("the Festival pool is closed")
                if self._idle:
                    proc = self._idle.pop()
                    if proc.alive():
                        return proc
                    self._running -= 1
                    proc.close()
                    continue
                if self._running < self.size:
                    self._running += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FestivalBusy(
                        f"all {self.size} Festival processes stayed busy for {wait_s:g} s"
                    )
                self._cond.wait(remaining)
        return self._start()  # outside the lock: a start takes ~0.05 s

    def _release(self, proc: FestivalProcess, ok: bool) -> None:
        keep = ok and proc.alive() and proc.uses < MAX_USES
        retired = ok and proc.alive() and not keep
        with self._cond:
            if keep and not self._closed:
                self._idle.append(proc)
            else:
                self._running -= 1
            self._cond.notify()
            closed = self._closed
        if not keep or closed:
            proc.close()
        if retired and not closed:
            # Its successor starts now, in the background, with the same voice: the text that
            # comes next does not wait for a start and a voice load (~0.07 s).
            threading.Thread(
                target=self._replace, args=(proc.voice,), name="festival-warm", daemon=True
            ).start()

    def _replace(self, voice: str | None) -> None:
        try:
            self.warm(1, voice)
        except Exception as exc:  # noqa: BLE001 - the next request starts one and reports it
            logger.warning("could not start a Festival process in advance: %s", exc)

    def counts(self) -> tuple[int, int]:
        """(busy, idle) processes now."""
        with self._cond:
            return self._running - len(self._idle), len(self._idle)

    def warm(self, n: int = 1, voice: str | None = None) -> None:
        """Start up to `n` idle processes now, with `voice` (a Festival voice name) loaded, so
        the first sentences wait neither for a start nor for a voice to load."""
        for _ in range(n):
            with self._cond:
                if self._closed or self._running >= self.size:
                    return
                self._running += 1
            proc = self._start()
            ok = False
            try:
                if voice is not None:
                    proc.use_voice(voice, self.start_timeout_s)
                ok = True
            finally:
                self._release(proc, ok)

    def close(self) -> None:
        """Stop the idle processes; busy ones stop when their sentence ends."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._running -= len(idle)
            self._cond.notify_all()
        for proc in idle:
            proc.close()
