"""The server side of one stream: push mel, finish utterances, read the audio as it is made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from server.workers.messages import CloseStream, FinishUtterance, OpenStream, PushMel

if TYPE_CHECKING:
    from server.workers.pool import WorkerPool
    from server.workers.process import WorkerSlot


@dataclass(frozen=True)
class Flushed:
    """Every frame pushed before the matching `finish()` has been delivered."""

    samples: int


class StreamHandle:
    """The server side of one stream: push mel, finish utterances, read audio as it is made.

    Events arrive in order: PCM `bytes` (s16le, whole frames) and `Flushed` after each finish().
    `read()` raises the stream's error (WorkerDied, StreamFailed...) once it has one.
    Always `close()` it (idempotent): that frees the worker's slot and drops its state there.
    """

    def __init__(self, pool: WorkerPool, worker: WorkerSlot, sid: int) -> None:
        self.pool = pool
        self.worker = worker
        self.sid = sid
        self.core = worker.core
        self.seed = 0
        self.synthesis: dict[str, Any] | None = None  # the stream's own synthesis settings
        self.admitted_at = time.monotonic()
        self.first_audio_at: float | None = None
        self.compute_s = 0.0
        self.samples = 0
        self.queued_bytes = 0
        self.max_queued_bytes: int | None = None
        self.overflow = asyncio.Event()
        self.error: Exception | None = None
        self.closed = False
        self.on_close: list[Callable[[], None]] = []  # run once, when the stream is closed
        self._opened = False
        self._events: asyncio.Queue[bytes | Flushed | Exception] = asyncio.Queue()

    # --- client side ---------------------------------------------------------------------

    def _open_on_worker(self) -> None:
        if not self._opened:
            self._opened = True
            self.pool._send(
                self.worker, OpenStream(self.sid, self.seed, self.admitted_at, self.synthesis)
            )

    def push(self, mel: np.ndarray) -> None:
        """Queue validated mel frames float32 [n, 80] for vocoding."""
        self._check_usable()
        self._open_on_worker()
        self.pool._send(self.worker, PushMel(self.sid, np.ascontiguousarray(mel, dtype=np.float32)))

    def finish(self) -> None:
        """End of utterance: the look-ahead tail is vocoded and a `Flushed` event follows."""
        self._check_usable()
        self._open_on_worker()
        self.pool._send(self.worker, FinishUtterance(self.sid))

    async def read(self) -> bytes | Flushed:
        ev = await self._events.get()
        if isinstance(ev, Exception):
            self._events.put_nowait(ev)  # every later read fails the same way
            raise ev
        if isinstance(ev, bytes):
            self.queued_bytes -= len(ev)
        return ev

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._release(self)
            for callback in self.on_close:
                callback()

    @property
    def real_time_factor(self) -> float | None:
        seconds = self.samples / self.pool.sample_rate if self.pool.sample_rate else 0.0
        return self.compute_s / seconds if seconds > 0 else None

    def _check_usable(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise RuntimeError("stream is closed")

    # --- pool side (event loop thread) ---------------------------------------------------

    def _on_audio(self, pcm: bytes, compute_s: float) -> None:
        if self.overflow.is_set():
            return  # being dropped: frames still in the pipe are not queued
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self.compute_s += compute_s
        self.samples += len(pcm) // 2
        self.queued_bytes += len(pcm)
        self._events.put_nowait(pcm)
        if self.max_queued_bytes is not None and self.queued_bytes > self.max_queued_bytes:
            self.overflow.set()
            self.pool._send(self.worker, CloseStream(self.sid))  # stop computing for it now

    def _on_flushed(self, samples: int) -> None:
        self._events.put_nowait(Flushed(samples))

    def fail(self, error: Exception) -> None:
        """End the stream with `error` (raised by every later read), e.g. the front end failed."""
        if self.error is None:
            self.error = error
            self._events.put_nowait(error)
