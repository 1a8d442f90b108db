"""The worker pool: one pinned sampling process per core, admission control, restarts, draining.

Lives in the server process, on its event loop. Each worker gets a duplex pipe served by two
threads: a writer (so a large mel push never blocks the event loop) and a reader that hands every
message to the loop. A stream is admitted to the least-loaded worker that is below its capacity
(`floor(headroom * 40 µs / measured µs per sample)`, capped by `max_streams`) and stays there, since
its recurrent state lives in that process.

The start-up measurement sees an idle core; serving costs more (the server's own I/O, other
processes, cache pressure), so capacity also follows the outcome that matters: when a worker's
frames go late, its capacity drops by one stream (at most once per `recovery_s / 6`, since frames
already queued were computed under the old load; admitted streams go on, new ones go elsewhere
or are refused), and after `recovery_s` without late frames it climbs back by one stream per
`recovery_s`, never above the measured figure.

When a worker dies its streams fail at once with `WorkerDied`, the others go on, and a new process
is started for the core.

Processes come from a forkserver that has imported the runtime (and TVM) once, so starting or
restarting a worker costs a fork, not a multi-second import, and no worker is forked from the
threaded server process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from models.dsp.features import SPEC, US_PER_SAMPLE_BUDGET, MelInputError
from server.errors import NoCapacity, NotReady, StreamFailed, WorkerDied
from server.metrics import Metrics
from server.workers.worker import worker_main

logger = logging.getLogger(__name__)


_PRELOAD = ["server.workers.worker", "models.runtime"]


def capacity_for(us_per_sample: float, headroom: float, max_streams: int | None) -> int:
    """Real-time streams a core admits: floor(headroom * 40 µs / measured µs), at least 1."""
    cap = math.floor(headroom * US_PER_SAMPLE_BUDGET / max(us_per_sample, 1e-3))
    if cap < 1:
        logger.warning(
            "%.1f µs/sample is slower than real time with headroom %.2f; admitting 1 stream per "
            "worker anyway (its frames will be late)",
            us_per_sample,
            headroom,
        )
        cap = 1
    return min(cap, max_streams) if max_streams else cap


@dataclass(frozen=True)
class Flushed:
    """Every frame pushed before the matching `finish()` has been delivered."""

    samples: int


@dataclass
class _Worker:
    core: int
    state: str = "starting"  # starting | ready | dead | failed | stopped
    generation: int = 0  # bumps on every (re)start; messages of older processes are dropped
    proc: Any = None
    conn: Connection | None = None
    outbox: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    us_per_sample: float | None = None
    kernel_us_per_sample: float | None = None
    capacity: int = 0  # streams admitted now: measured_capacity, lowered after late frames
    measured_capacity: int = 0  # from the start-up measurement
    changed_at: float = 0.0  # last late frame or capacity step (recovery waits from here)
    cut_at: float = -math.inf  # last decrease
    pid: int | None = None
    ready_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    error: str | None = None
    streams: dict[int, StreamHandle] = field(default_factory=dict)


class StreamHandle:
    """The server side of one stream: push mel, finish utterances, read audio as it is made.

    Events arrive in order: PCM `bytes` (s16le, whole frames) and `Flushed` after each finish().
    `read()` raises the stream's error (WorkerDied, StreamFailed...) once it has one.
    Always `close()` it (idempotent): that frees the worker's slot and drops its state there.
    """

    def __init__(self, pool: WorkerPool, worker: _Worker, sid: int) -> None:
        self.pool = pool
        self.worker = worker
        self.sid = sid
        self.core = worker.core
        self.seed = 0
        self.admitted_at = time.monotonic()
        self.first_audio_at: float | None = None
        self.compute_s = 0.0
        self.samples = 0
        self.queued_bytes = 0
        self.max_queued_bytes: int | None = None
        self.overflow = asyncio.Event()
        self.error: Exception | None = None
        self.closed = False
        self._opened = False
        self._events: asyncio.Queue[bytes | Flushed | Exception] = asyncio.Queue()

    # --- client side ---------------------------------------------------------------------

    def _open_on_worker(self) -> None:
        if not self._opened:
            self._opened = True
            self.pool._send(self.worker, ("open", self.sid, self.seed, self.admitted_at))

    def push(self, mel: np.ndarray) -> None:
        """Queue validated mel frames float32 [n, 80] for vocoding."""
        self._check_usable()
        self._open_on_worker()
        self.pool._send(
            self.worker, ("push", self.sid, np.ascontiguousarray(mel, dtype=np.float32))
        )

    def finish(self) -> None:
        """End of utterance: the look-ahead tail is vocoded and a `Flushed` event follows."""
        self._check_usable()
        self._open_on_worker()
        self.pool._send(self.worker, ("finish", self.sid))

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
            self.pool._send(self.worker, ("close", self.sid))  # stop computing for it now

    def _on_flushed(self, samples: int) -> None:
        self._events.put_nowait(Flushed(samples))

    def fail(self, error: Exception) -> None:
        """End the stream with `error` (raised by every later read), e.g. the front end failed."""
        if self.error is None:
            self.error = error
            self._events.put_nowait(error)


class WorkerPool:
    """Starts, supervises and stops the per-core workers; admits streams to them."""

    def __init__(
        self,
        model_dir: Path,
        cores: list[int],
        metrics: Metrics,
        *,
        cache_dir: Path | None = None,
        headroom: float = 0.8,
        max_streams: int | None = None,
        initial_buffer_s: float = 0.1,
        measure_frames: int = 20,
        adaptive: bool = True,
        recovery_s: float = 30.0,
    ) -> None:
        if not cores:
            raise ValueError("the pool needs at least one core")
        self.model_dir = model_dir
        self.cores = list(cores)
        self.metrics = metrics
        self.cache_dir = cache_dir
        self.headroom = headroom
        self.max_streams = max_streams
        self.initial_buffer_s = initial_buffer_s
        self.measure_frames = measure_frames
        self.adaptive = adaptive
        self.recovery_s = recovery_s
        self.workers = [_Worker(core=c) for c in self.cores]
        self.model_info: dict[str, Any] = {}
        self.sample_rate = SPEC.sample_rate
        self.hop_length = SPEC.hop_length
        self.draining = False
        self.draining_event = asyncio.Event()  # websocket sessions wrap up when it is set
        self.fatal_error: str | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self._stopping = False
        self._sids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker (returns at once; `ready` turns true when all have measured)."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop_event = asyncio.Event()
        for w in self.workers:
            self.metrics.init_core(w.core)
            self._spawn_later(w, 0.0)
        if self.adaptive:
            task = asyncio.ensure_future(self._recover_capacity())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every worker is ready; raise RuntimeError on a fatal start-up error."""

        async def _wait() -> None:
            while not self.ready:
                if self.fatal_error:
                    raise RuntimeError(self.fatal_error)
                assert self._changed is not None
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    @property
    def ready(self) -> bool:
        return (
            not self.draining
            and not self._stopping
            and self.fatal_error is None
            and all(w.state == "ready" for w in self.workers)
        )

    @property
    def streams_in_flight(self) -> int:
        return sum(len(w.streams) for w in self.workers)

    async def drain(self, timeout: float) -> bool:
        """Refuse new streams and wait (at most `timeout`) for the admitted ones to finish."""
        self.draining = True
        self.draining_event.set()
        self._notify()
        deadline = time.monotonic() + timeout
        while self.streams_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = self.streams_in_flight
        if left:
            logger.warning("drain timed out with %d streams still in flight", left)
        return left == 0

    async def stop(self, timeout: float = 5.0) -> None:
        """Fail what is left, ask the workers to exit, and make sure they do."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        # Let a start that is under way finish, so no process is left without its pipe.
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for w in self.workers:
            for h in list(w.streams.values()):
                h.fail(NotReady("the server is shutting down"))
            w.state = "stopped"
            self._send(w, ("stop",))
            w.outbox.put(None)
        await asyncio.gather(*(asyncio.to_thread(self._join, w, timeout) for w in self.workers))

    # --- admission -----------------------------------------------------------------------------

    def open_stream(self, seed: int = 0) -> StreamHandle:
        """Admit a stream to the least-loaded worker with room; NoCapacity / NotReady otherwise."""
        if self.draining or self._stopping:
            self.metrics.streams_refused.labels(reason="draining").inc()
            raise NotReady("the server is shutting down and takes no new streams")
        ready = [w for w in self.workers if w.state == "ready"]
        if not ready:
            self.metrics.streams_refused.labels(reason="not_ready").inc()
            raise NotReady(self.fatal_error or "workers are still starting; retry shortly")
        open_ = [w for w in ready if len(w.streams) < w.capacity]
        if not open_:
            self.metrics.streams_refused.labels(reason="capacity").inc()
            total = sum(w.capacity for w in ready)
            raise NoCapacity(
                f"all {len(ready)} workers are at capacity ({total} real-time streams); retry later"
            )
        w = min(open_, key=lambda x: (len(x.streams) / x.capacity, len(x.streams)))
        h = StreamHandle(self, w, next(self._sids))
        h.seed = int(seed)
        w.streams[h.sid] = h
        self.metrics.streams_in_flight.labels(core=str(w.core)).set(len(w.streams))
        return h

    def _release(self, h: StreamHandle) -> None:
        w = h.worker
        if w.streams.pop(h.sid, None) is not None:
            self.metrics.streams_in_flight.labels(core=str(w.core)).set(len(w.streams))
            if h._opened and not h.overflow.is_set():
                self._send(w, ("close", h.sid))
        rtf = h.real_time_factor
        if rtf is not None:
            self.metrics.real_time_factor.observe(rtf)
        self._notify()

    def worker_status(self) -> list[dict[str, Any]]:
        return [
            {
                "core": w.core,
                "state": w.state,
                "pid": w.pid,
                "us_per_sample": w.us_per_sample,
                "kernel_us_per_sample": w.kernel_us_per_sample,
                "capacity": w.capacity,
                "measured_capacity": w.measured_capacity,
                "streams": len(w.streams),
                "restarts": w.restarts,
                "error": w.error,
            }
            for w in self.workers
        ]

    # --- processes -----------------------------------------------------------------------------

    def _spawn_later(self, w: _Worker, delay: float) -> None:
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

    async def _spawn(self, w: _Worker) -> None:
        """Start the process and its two pipe threads (the fork itself runs off the event loop)."""
        parent, child = self._ctx.Pipe(duplex=True)
        w.generation += 1
        gen = w.generation
        w.state, w.error, w.outbox = "starting", None, queue.SimpleQueue()
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                w.core,
                str(self.model_dir),
                str(self.cache_dir) if self.cache_dir else None,
                self.initial_buffer_s,
                self.measure_frames,
                child,
            ),
            name=f"sparrow-worker-{w.core}",
            daemon=True,
        )
        try:
            # The first start waits for the forkserver to import the runtime (seconds).
            await asyncio.to_thread(proc.start)
        finally:
            child.close()  # so the parent sees EOF the moment the worker dies
        w.proc, w.conn, w.pid = proc, parent, proc.pid
        threading.Thread(
            target=self._reader, args=(w, gen, parent), daemon=True, name=f"sparrow-rx-{w.core}"
        ).start()
        threading.Thread(
            target=self._writer, args=(w.outbox, parent), daemon=True, name=f"sparrow-tx-{w.core}"
        ).start()
        logger.info("worker for core %d started (pid %d)", w.core, proc.pid)

    def _join(self, w: _Worker, timeout: float) -> None:
        if w.proc is None:
            return
        w.proc.join(timeout)
        if w.proc.is_alive():
            logger.warning("worker for core %d did not stop in %.1f s; killing it", w.core, timeout)
            w.proc.kill()
            w.proc.join(1.0)
        if w.conn is not None:
            w.conn.close()

    def _send(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        w.outbox.put(msg)

    @staticmethod
    def _writer(outbox: queue.SimpleQueue[Any], conn: Connection) -> None:
        while True:
            msg = outbox.get()
            if msg is None:
                return
            try:
                conn.send(msg)
            except (OSError, ValueError):
                return  # the worker is gone; the reader reports it

    def _reader(self, w: _Worker, gen: int, conn: Connection) -> None:
        loop = self._loop
        assert loop is not None
        try:
            while True:
                msg = conn.recv()
                loop.call_soon_threadsafe(self._on_message, w, gen, msg)
        except (EOFError, OSError):
            pass
        except RuntimeError:  # the event loop is closed: the server is gone
            return
        try:
            loop.call_soon_threadsafe(self._on_exit, w, gen)
        except RuntimeError:
            pass

    # --- events (event loop thread) ------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _on_message(self, w: _Worker, gen: int, msg: tuple[Any, ...]) -> None:
        if gen != w.generation:
            return
        kind = msg[0]
        if kind == "frames":
            _, sid, pcm, computes, waits, late, redrawn, clipped = msg
            self.metrics.record_frames(w.core, self.hop_length, computes, waits, late, redrawn, clipped)
            if late:
                self._on_late(w)
            h = w.streams.get(sid)
            if h is not None:
                h._on_audio(pcm, sum(computes))
        elif kind == "flushed":
            h = w.streams.get(msg[1])
            if h is not None:
                h._on_flushed(int(msg[2]))
        elif kind == "failed":
            _, sid, why, message = msg
            h = w.streams.get(sid)
            if h is not None:
                if why == "input":  # the worker's own mel check: a bad input (422), not a 500
                    h.fail(MelInputError(message))
                else:
                    h.fail(StreamFailed(f"the worker could not compute this stream: {message}"))
        elif kind == "ready":
            self._on_ready(w, msg[1])
        elif kind == "load_error":
            self._on_load_error(w, msg[1])
        else:
            logger.error("unknown message %r from worker %d", kind, w.core)

    def _on_ready(self, w: _Worker, info: dict[str, Any]) -> None:
        w.us_per_sample = float(info["us_per_sample"])
        w.kernel_us_per_sample = info.get("kernel_us_per_sample")
        w.measured_capacity = capacity_for(w.us_per_sample, self.headroom, self.max_streams)
        w.capacity, w.changed_at = w.measured_capacity, time.monotonic()
        w.state, w.ready_at, w.pid = "ready", time.monotonic(), info.get("pid", w.pid)
        cfg = info.get("config", {})
        self.sample_rate = int(cfg.get("sample_rate", self.sample_rate))
        self.hop_length = int(cfg.get("hop_length", self.hop_length))
        self.model_info = {
            k: v
            for k, v in info.items()
            if k not in ("core", "pid", "us_per_sample", "kernel_us_per_sample")
        }
        self.metrics.stream_capacity.labels(core=str(w.core)).set(w.capacity)
        logger.info(
            "worker core %d ready: model %s (%s), %.2f µs/sample -> capacity %d streams",
            w.core,
            info.get("name"),
            info.get("isa"),
            w.us_per_sample,
            w.capacity,
        )
        self._notify()

    # --- adaptive capacity (event loop thread) ------------------------------------------------

    def _set_capacity(self, w: _Worker, capacity: int) -> None:
        w.capacity = capacity
        w.changed_at = time.monotonic()
        self.metrics.stream_capacity.labels(core=str(w.core)).set(capacity)
        self._notify()

    def _on_late(self, w: _Worker) -> None:
        now = time.monotonic()
        w.changed_at = now
        if not self.adaptive or w.state != "ready" or now - w.cut_at < self.recovery_s / 6:
            return
        # One stream at a time: late reports trail the load that caused them (a backlog drains
        # slowly, and streams ending together report at once), so cutting to "streams held - 1"
        # collapsed capacity to 1 in a load test. Not below one: a lone late stream is the
        # core's speed, not its load (capacity_for warns about that).
        if w.capacity > 1:
            w.cut_at = now
            logger.warning(
                "late frames on core %d with %d streams: capacity %d -> %d (back up by one per "
                "%.0f s without late frames, to %d)",
                w.core,
                len(w.streams),
                w.capacity,
                w.capacity - 1,
                self.recovery_s,
                w.measured_capacity,
            )
            self._set_capacity(w, w.capacity - 1)

    def _recover_one(self, w: _Worker, now: float) -> None:
        if (
            w.state == "ready"
            and w.capacity < w.measured_capacity
            and now - w.changed_at >= self.recovery_s
        ):
            self._set_capacity(w, w.capacity + 1)
            logger.info(
                "core %d: no late frames for %.0f s; capacity -> %d",
                w.core,
                self.recovery_s,
                w.capacity,
            )

    async def _recover_capacity(self) -> None:
        assert self._stop_event is not None
        tick = max(0.05, self.recovery_s / 4)
        while not self._stopping:
            try:
                await asyncio.wait_for(self._stop_event.wait(), tick)
            except TimeoutError:
                pass
            now = time.monotonic()
            for w in self.workers:
                self._recover_one(w, now)

    def _on_load_error(self, w: _Worker, message: str) -> None:
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

    def _on_exit(self, w: _Worker, gen: int) -> None:
        if gen != w.generation or self._stopping or w.state in ("stopped", "failed"):
            return
        code = w.proc.exitcode if w.proc is not None else None
        streams = list(w.streams.values())
        logger.error(
            "worker for core %d (pid %s) died (exit code %s); failing its %d streams and restarting",
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

    def _schedule_restart(self, w: _Worker, why: str) -> None:
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
