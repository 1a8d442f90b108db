"""A worker's process and its pipe: forked from the forkserver, served by two threads (a writer,
so a large mel push never blocks the event loop, and a reader that hands each report on)."""

from __future__ import annotations

import collections
import logging
import math
import multiprocessing as mp
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from server.workers.messages import Report
from server.workers.worker import worker_main

if TYPE_CHECKING:
    from server.workers.handle import StreamHandle

logger = logging.getLogger(__name__)


@dataclass
class WorkerSlot:
    """The pool's record of one core's worker: its process, pipe, capacity and streams."""

    core: int
    state: str = "starting"  # starting | ready | dead | failed | stopped
    generation: int = 0  # bumps on every (re)start; messages of older processes are dropped
    proc: Any = None
    conn: Connection | None = None
    outbox: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    us_per_sample: float | None = None  # now: the rolling estimate, or the start-up figure
    startup_us_per_sample: float | None = None  # measured by the worker when it started
    kernel_us_per_sample: float | None = None
    estimate_frames: int = 0  # steady frames behind us_per_sample (0: the start-up figure)
    core_share: float | None = None  # CPU time / wall time of those frames' steps
    capacity: int = 0  # streams admitted now: measured_capacity, lowered after late frames
    measured_capacity: int = 0  # what us_per_sample allows
    startup_capacity: int = 0  # what the start-up measurement allowed
    # Step times and CPU times (s) of the worker's recent steady frames, for the rolling estimate.
    steady_s: collections.deque[float] = field(default_factory=collections.deque)
    steady_cpu_s: collections.deque[float] = field(default_factory=collections.deque)
    changed_at: float = 0.0  # last late frame or capacity step (recovery waits from here)
    cut_at: float = -math.inf  # last decrease
    pid: int | None = None
    ready_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    error: str | None = None
    streams: dict[int, StreamHandle] = field(default_factory=dict)


def start_process(
    ctx: mp.context.BaseContext, core: int, args: tuple[Any, ...]
) -> tuple[Any, Connection]:
    """Fork worker_main(*args, pipe) for `core` (blocking); (process, the parent's end)."""
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(  # type: ignore[attr-defined]
        target=worker_main, args=(*args, child), name=f"sparrow-worker-{core}", daemon=True
    )
    try:
        proc.start()
    finally:
        child.close()  # so the parent sees EOF the moment the worker dies
    return proc, parent


def serve_pipe(
    core: int,
    conn: Connection,
    outbox: queue.SimpleQueue[Any],
    deliver: Callable[[Report], object],
    on_exit: Callable[[], object],
) -> None:
    """Start the pipe's writer (sends what `outbox` gets until None) and reader (hands every
    report to `deliver`, then calls `on_exit` when the pipe closes). Both callbacks run on the
    reader thread: they hand over to the event loop themselves."""
    threading.Thread(
        target=_write, args=(outbox, conn), daemon=True, name=f"sparrow-tx-{core}"
    ).start()
    threading.Thread(
        target=_read, args=(conn, deliver, on_exit), daemon=True, name=f"sparrow-rx-{core}"
    ).start()


def _write(outbox: queue.SimpleQueue[Any], conn: Connection) -> None:
    while True:
        msg = outbox.get()
        if msg is None:
            return
        try:
            conn.send(msg)
        except (OSError, ValueError):
            return  # the worker is gone; the reader reports it


def _read(
    conn: Connection, deliver: Callable[[Report], object], on_exit: Callable[[], object]
) -> None:
    try:
        while True:
            deliver(conn.recv())
    except (EOFError, OSError):
        pass
    except RuntimeError:  # the event loop is closed: the server is gone
        return
    try:
        on_exit()
    except RuntimeError:
        pass


def join_process(proc: Any, conn: Connection | None, core: int, timeout: float) -> None:
    """Wait for the process to exit, kill it after `timeout`, close the pipe."""
    if proc is None:
        return
    proc.join(timeout)
    if proc.is_alive():
        logger.warning("worker for core %d did not stop in %.1f s; killing it", core, timeout)
        proc.kill()
        proc.join(1.0)
    if conn is not None:
        conn.close()


def slot_status(w: WorkerSlot) -> dict[str, Any]:
    """One worker's status, as the health and models routes report it."""
    return {
        "core": w.core,
        "state": w.state,
        "pid": w.pid,
        "us_per_sample": w.us_per_sample,
        "startup_us_per_sample": w.startup_us_per_sample,
        "kernel_us_per_sample": w.kernel_us_per_sample,
        "estimate_frames": w.estimate_frames,
        "core_share": w.core_share,
        "capacity": w.capacity,
        "measured_capacity": w.measured_capacity,
        "startup_capacity": w.startup_capacity,
        "streams": len(w.streams),
        "restarts": w.restarts,
        "error": w.error,
    }
