"""Worker processes over their life, for the pool: start, fail a dead worker's streams, restart
with back-off, refuse to go on when the model does not load at all.

A mixin of WorkerPool (server/workers/pool.py), which holds the state it reads (the worker
records, settings, metrics, the event loop): the pool routes streams, this keeps its processes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import WorkerDied
from server.workers.process import WorkerSlot, join_process, serve_pipe, start_process

if TYPE_CHECKING:
    from server.metrics import Metrics
    from server.workers.messages import Report

logger = logging.getLogger(__name__)


class Supervision:
    """Process lifecycle of WorkerPool's workers (see the module docstring)."""

    # The pool's state this mixin reads and writes.
    workers: list[WorkerSlot]
    metrics: Metrics
    model_dir: Path
    cache_dir: Path | None
    initial_buffer_s: float
    measure_frames: int
    synthesis: Any
    fatal_error: str | None
    on_fatal: Callable[[str], None] | None
    _ctx: Any
    _loop: asyncio.AbstractEventLoop | None
    _stop_event: asyncio.Event | None
    _stopping: bool
    _tasks: set[asyncio.Task[Any]]

    def _notify(self) -> None:
        raise NotImplementedError

    def _on_message(self, w: WorkerSlot, gen: int, msg: Report) -> None:
        raise NotImplementedError

    # --- processes -----------------------------------------------------------------------------

    def _spawn_later(self, w: WorkerSlot, delay: float) -> None:
        async def _go() -> None:
            if delay:
                assert self._stop_event is not None
                try:
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                except TimeoutError:
                    pass
            if self._stopping:
                return
            try:
                await self._spawn(w)
            except Exception as exc:  # noqa: BLE001 - e.g. fork failed: treat as a dead worker and retry
                logger.error("could not start worker for core %d: %s", w.core, exc)
                self._schedule_restart(w, str(exc))

        task = asyncio.ensure_future(_go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, w: WorkerSlot) -> None:
        """Start the process and its two pipe threads (the fork itself runs off the event loop)."""
        w.generation += 1
        gen = w.generation
        w.state, w.error, w.outbox = "starting", None, queue.SimpleQueue()
        args = (
            w.core,
            str(self.model_dir),
            str(self.cache_dir) if self.cache_dir else None,
            self.initial_buffer_s,
            self.measure_frames,
            self.synthesis.to_dict() if self.synthesis is not None else None,
        )
        # The first start waits for the forkserver to import the runtime (seconds).
        proc, conn = await asyncio.to_thread(start_process, self._ctx, w.core, args)
        w.proc, w.conn, w.pid = proc, conn, proc.pid
        loop = self._loop
        assert loop is not None
        serve_pipe(
            w.core,
            conn,
            w.outbox,
            lambda msg: loop.call_soon_threadsafe(self._on_message, w, gen, msg),
            lambda: loop.call_soon_threadsafe(self._on_exit, w, gen),
        )
        logger.info("worker for core %d started (pid %d)", w.core, proc.pid)

    def _join(self, w: WorkerSlot, timeout: float) -> None:
        join_process(w.proc, w.conn, w.core, timeout)

    def _on_load_error(self, w: WorkerSlot, message: str) -> None:
        w.error = message
        if w.restarts == 0 and w.ready_at == 0.0:
            # The model does not load at all: a configuration error, not a crash to retry.
            w.state = "failed"
            self.fatal_error = (
                f"worker for core {w.core} could not load {self.model_dir}: {message}"
            )
            logger.error("%s", self.fatal_error)
            self._notify()
            if self.on_fatal is not None:
                self.on_fatal(self.fatal_error)
        else:
            logger.error("worker for core %d failed to reload the model: %s", w.core, message)

    def _on_exit(self, w: WorkerSlot, gen: int) -> None:
        if gen != w.generation or self._stopping or w.state in ("stopped", "failed"):
            return
        code = w.proc.exitcode if w.proc is not None else None
        streams = list(w.streams.values())
        logger.error(
            "worker for core %d (pid %s) died (exit code %s); failing its %d streams and "
            "restarting",
            w.core,
            w.pid,
            code,
            len(streams),
        )
        for h in streams:
            h.fail(WorkerDied(f"the worker on core {w.core} died while computing this stream"))
        # Their state died with the process: the slots are free for the restarted worker.
        w.streams.clear()
        self.metrics.streams_in_flight.labels(core=str(w.core)).set(0)
        w.state = "dead"
        w.capacity = 0
        self.metrics.worker_restarts.labels(core=str(w.core)).inc()
        self._schedule_restart(w, f"exit code {code}")
        self._notify()

    def _schedule_restart(self, w: WorkerSlot, why: str) -> None:
        w.restarts += 1
        w.state = "dead"
        w.error = why
        # Back off only when it keeps dying right after starting (a crash loop).
        if w.ready_at and time.monotonic() - w.ready_at > 30.0:
            w.backoff_s = 0.0
        else:
            w.backoff_s = min(30.0, max(0.25, w.backoff_s * 2))
        if w.conn is not None:
            w.outbox.put(None)
        self._spawn_later(w, w.backoff_s if w.restarts > 1 else 0.0)
