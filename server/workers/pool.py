"""The worker pool: one pinned sampling process per core, admission control, restarts, draining.

Lives in the server process, on its event loop. Each worker is a process with a duplex pipe
served by two threads (server/workers/process.py) carrying typed messages
(server/workers/messages.py); admission (which core a stream goes to, and each core's capacity as
its measured cost and late frames come and go) is server/workers/admission.py; a stream's server side is
server/workers/handle.py.

When a worker dies its streams fail at once with `WorkerDied`, the others go on, and a new process
is started for the core (server/workers/supervisor.py).

Processes come from a forkserver that has imported the runtime (and TVM) once, so starting or
restarting a worker costs a fork, not a multi-second import, and no worker is forked from the
threaded server process.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.dsp.features import SPEC, MelInputError
from models.vocoder.config import SynthesisConfig
from server.errors import NotReady, StreamFailed
from server.metrics import Metrics
from server.workers.admission import (
    Refused,
    capacity_after_estimate,
    capacity_after_late,
    capacity_after_quiet,
    capacity_for,
    estimate_moves,
    pick_worker,
    rolling_us_per_sample,
)
from server.workers.handle import Flushed, StreamHandle
from server.workers.messages import (
    CloseStream,
    Command,
    FramesMade,
    LoadError,
    Report,
    Stop,
    StreamError,
    UtteranceDone,
    WorkerReady,
)
from server.workers.process import (
    WorkerSlot,
    slot_status,
)
from server.workers.supervisor import Supervision

logger = logging.getLogger(__name__)

# The pool's API: the pool and the stream handles and events it gives out.
__all__ = ["Flushed", "StreamHandle", "WorkerPool"]


_PRELOAD = ["server.workers.worker", "models.runtime"]

ESTIMATE_WINDOW = 4096
"""Steady frames the rolling cost estimate looks at: ~4 s of a core serving 12 streams, a minute
of one stream."""
ESTIMATE_MIN_FRAMES = 256
"""Steady frames a worker must have computed before the estimate replaces its start-up figure."""
ESTIMATE_QUANTILE = 0.2
"""The step CPU time the estimate takes: a low quantile (the core's own speed)."""


class WorkerPool(Supervision):
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
        synthesis: SynthesisConfig | None = None,
        estimate_s: float = 1.0,
        estimate_min_frames: int = ESTIMATE_MIN_FRAMES,
    ) -> None:
        """`synthesis`: the server's synthesis settings in place of the voice's own (a stream may
        still bring its own to open_stream); None keeps the artefact's. `estimate_s`: how often
        each worker's cost is re-estimated from its recent steady frames (at least
        `estimate_min_frames` of them)."""
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
        self.synthesis = synthesis
        self.estimate_s = estimate_s
        self.estimate_min_frames = estimate_min_frames
        self.workers = [WorkerSlot(core=c) for c in self.cores]
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
        task = asyncio.ensure_future(self._follow_capacity())
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
            self._send(w, Stop())
            w.outbox.put(None)
        await asyncio.gather(*(asyncio.to_thread(self._join, w, timeout) for w in self.workers))

    # --- admission -----------------------------------------------------------------------------

    def open_stream(self, seed: int = 0, synthesis: SynthesisConfig | None = None) -> StreamHandle:
        """Admit a stream to the least-loaded worker with room; NoCapacity / NotReady otherwise.
        `synthesis`: this stream's own synthesis settings (else the voice's)."""
        try:
            w = pick_worker(
                self.workers,
                closing=self.draining or self._stopping,
                fatal_error=self.fatal_error,
            )
        except Refused as refused:
            self.metrics.streams_refused.labels(reason=refused.reason).inc()
            raise refused.error from None
        h = StreamHandle(self, w, next(self._sids))
        h.seed = int(seed)
        h.synthesis = synthesis.to_dict() if synthesis is not None else None
        w.streams[h.sid] = h
        self.metrics.streams_in_flight.labels(core=str(w.core)).set(len(w.streams))
        return h

    def _release(self, h: StreamHandle) -> None:
        w = h.worker
        if w.streams.pop(h.sid, None) is not None:
            self.metrics.streams_in_flight.labels(core=str(w.core)).set(len(w.streams))
            if h._opened and not h.overflow.is_set():
                self._send(w, CloseStream(h.sid))
        rtf = h.real_time_factor
        if rtf is not None:
            self.metrics.real_time_factor.observe(rtf)
        self._notify()

    def worker_status(self) -> list[dict[str, Any]]:
        return [slot_status(w) for w in self.workers]

    def _send(self, w: WorkerSlot, msg: Command) -> None:
        w.outbox.put(msg)

    # --- events (event loop thread) ------------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _on_message(self, w: WorkerSlot, gen: int, msg: Report) -> None:
        if gen != w.generation:
            return
        if isinstance(msg, FramesMade):
            self.metrics.record_frames(
                w.core,
                self.hop_length,
                msg.compute_s,
                msg.queue_wait_s,
                msg.late,
                msg.redrawn,
                msg.clipped,
            )
            w.steady_s.extend(msg.steady_s)
            w.steady_cpu_s.extend(msg.steady_cpu_s)
            if msg.late:
                self._on_late(w)
            h = w.streams.get(msg.sid)
            if h is not None:
                h._on_audio(msg.pcm, sum(msg.compute_s))
        elif isinstance(msg, UtteranceDone):
            h = w.streams.get(msg.sid)
            if h is not None:
                h._on_flushed(msg.samples)
        elif isinstance(msg, StreamError):
            h = w.streams.get(msg.sid)
            if h is not None:
                if msg.kind == "input":  # the worker's own mel check: a bad input (422), not a 500
                    h.fail(MelInputError(msg.message))
                else:
                    h.fail(StreamFailed(f"the worker could not compute this stream: {msg.message}"))
        elif isinstance(msg, WorkerReady):
            self._on_ready(w, msg)
        elif isinstance(msg, LoadError):
            self._on_load_error(w, msg.message)
        else:
            logger.error("unknown message %r from worker %d", msg, w.core)

    def _on_ready(self, w: WorkerSlot, info: WorkerReady) -> None:
        w.us_per_sample = w.startup_us_per_sample = float(info.us_per_sample)
        w.kernel_us_per_sample = info.kernel_us_per_sample
        w.measured_capacity = capacity_for(w.us_per_sample, self.headroom, self.max_streams)
        w.startup_capacity = w.measured_capacity
        w.capacity, w.changed_at = w.measured_capacity, time.monotonic()
        # A new process starts its estimate afresh (the core's neighbours may have changed).
        w.steady_s = collections.deque(maxlen=ESTIMATE_WINDOW)
        w.steady_cpu_s = collections.deque(maxlen=ESTIMATE_WINDOW)
        w.estimate_frames, w.core_share = 0, None
        self.metrics.measured_sample_seconds.labels(core=str(w.core)).set(w.us_per_sample * 1e-6)
        w.state, w.ready_at, w.pid = "ready", time.monotonic(), info.pid
        self.sample_rate = int(info.config.get("sample_rate", self.sample_rate))
        self.hop_length = int(info.config.get("hop_length", self.hop_length))
        self.model_info = info.model_info()
        self.metrics.stream_capacity.labels(core=str(w.core)).set(w.capacity)
        logger.info(
            "worker core %d ready: model %s (%s), %.2f µs/sample -> capacity %d streams",
            w.core,
            info.name,
            info.isa,
            w.us_per_sample,
            w.capacity,
        )
        self._notify()

    # --- adaptive capacity (event loop thread) ------------------------------------------------

    def _set_capacity(self, w: WorkerSlot, capacity: int) -> None:
        w.capacity = capacity
        w.changed_at = time.monotonic()
        self.metrics.stream_capacity.labels(core=str(w.core)).set(capacity)
        self._notify()

    def _on_late(self, w: WorkerSlot) -> None:
        cut = capacity_after_late(
            w, time.monotonic(), adaptive=self.adaptive, recovery_s=self.recovery_s
        )
        if cut is not None:
            logger.warning(
                "late frames on core %d with %d streams: capacity %d -> %d (back up by one per "
                "%.0f s without late frames, to %d)",
                w.core,
                len(w.streams),
                w.capacity,
                cut,
                self.recovery_s,
                w.measured_capacity,
            )
            self._set_capacity(w, cut)

    def _estimate(self, w: WorkerSlot, now: float) -> None:
        """Re-estimate the worker's µs per sample from its recent steady frames and move its
        capacity to what that allows (down at once, up after a quiet spell)."""
        if w.state != "ready":
            return
        estimate = rolling_us_per_sample(
            w.steady_s,
            w.steady_cpu_s,
            self.hop_length,
            min_frames=self.estimate_min_frames,
            quantile=ESTIMATE_QUANTILE,
        )
        if estimate is None:
            return
        us, w.core_share = estimate
        w.us_per_sample, w.estimate_frames = us, len(w.steady_s)
        self.metrics.measured_sample_seconds.labels(core=str(w.core)).set(us * 1e-6)
        estimated = capacity_for(us, self.headroom, self.max_streams)
        if not estimate_moves(w.measured_capacity, estimated):
            estimated = w.measured_capacity
        moved = (
            capacity_after_estimate(w, estimated, now, recovery_s=self.recovery_s)
            if self.adaptive
            else None
        )
        if estimated != w.measured_capacity:
            logger.info(
                "core %d: %.2f µs/sample over its last %d steady frames (%.0f%% of the core) -> "
                "measured capacity %d -> %d (start-up: %d)",
                w.core,
                us,
                len(w.steady_s),
                100 * w.core_share,
                w.measured_capacity,
                estimated,
                w.startup_capacity,
            )
        w.measured_capacity = estimated
        if moved is not None:
            logger.info("core %d: capacity %d -> %d", w.core, w.capacity, moved)
            self._set_capacity(w, moved)

    def _recover_one(self, w: WorkerSlot, now: float) -> None:
        more = capacity_after_quiet(w, now, recovery_s=self.recovery_s)
        if more is not None:
            self._set_capacity(w, more)
            logger.info(
                "core %d: no late frames for %.0f s; capacity -> %d",
                w.core,
                self.recovery_s,
                w.capacity,
            )

    async def _follow_capacity(self) -> None:
        """In the background: re-estimate each worker's cost, and give back capacity that late
        frames took once they stop."""
        assert self._stop_event is not None
        tick = self.estimate_s
        if self.adaptive:
            tick = min(tick, max(0.05, self.recovery_s / 4))
        while not self._stopping:
            try:
                await asyncio.wait_for(self._stop_event.wait(), tick)
            except TimeoutError:
                pass
            now = time.monotonic()
            for w in self.workers:
                self._estimate(w, now)
                if self.adaptive:
                    self._recover_one(w, now)
