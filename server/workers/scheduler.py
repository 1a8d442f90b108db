"""A worker's frame loop: read commands from the parent, pick the runnable stream whose next frame
has the earliest deadline (EDF), compute that frame (with the steady frames of a few more streams
when the kernel draws several at once), repeat. Frames are sent to the parent as s16le PCM
together with their compute and queue-wait times; the parent records the metrics (workers never
touch prometheus_client).

Deadlines model a client playing the audio in real time, as `sparrow loadtest` listens: playback
starts `initial_buffer` after the first audio, so frame f of a stream is due at
`base_t + initial_buffer + (f - base_f) * frame_seconds`. An utterance's first step (its opening:
the conditioning look-ahead and the frames the synthesis chain runs ahead, computed at once before
the first audio) is judged as time to first audio, not against a playback deadline: the clock
(base_t, base_f) restarts at that first audio unless the client is still playing earlier audio of
the stream. It also restarts whenever the client's own input arrives after the audio already
produced has played out, so a client that feeds mel slowly is not blamed on the server. Until its
opening, a stream is scheduled by the clock started at admission (or at its input's arrival).

IPC: a multiprocessing Connection carrying the typed messages of server/workers/messages.py.
"""

from __future__ import annotations

import logging
import math
import time
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np

from models.batching import StreamStepError, draw_ahead, step_streams
from models.vocoder.config import SynthesisConfig
from server.audio import float_to_pcm16
from server.workers.messages import (
    CloseStream,
    Command,
    FinishUtterance,
    FramesMade,
    OpenStream,
    PushMel,
    Report,
    Stop,
    StreamError,
    UtteranceDone,
)
from server.workers.stream_state import WorkerStream

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.02
"""Frames are batched per stream: one pipe message (and one websocket message) per burst
instead of one per frame, since per-message costs in the server process (unpickling, the event
loop, websocket framing) exceed a frame's compute with small models. A batch is sent when the
stream has nothing more to compute (its burst ended), when it completes an utterance, and at
least every 20 ms (far below any playback buffer; lateness is judged when frames are sent).
The first frame of every utterance is sent at once so time-to-first-audio never waits."""


class Scheduler:
    """Earliest-deadline-first frame loop over the streams of one worker."""

    def __init__(self, runtime: Any, conn: Connection, initial_buffer_s: float) -> None:
        self.rt = runtime
        self.conn = conn
        self.buffer_s = initial_buffer_s
        self.frame_s = runtime.config.hop_length / runtime.config.sample_rate
        self.streams: dict[int, WorkerStream] = {}
        self.last_flush = time.monotonic()
        self.grouped = 0  # frames made in a group step (_step_group)
        # Half the playback buffer: room for the frame's own flush (FLUSH_INTERVAL_S) and the
        # server's delivery after it, yet openings still run whenever steady frames can wait.
        self.urgent_s = max(initial_buffer_s / 2, 2 * FLUSH_INTERVAL_S)
        # An opening draws its ~15 kernel frames in slices of this long (at least a batched round
        # each), the urgent steady frames stepped between them: drawn at once, 8 streams'
        # openings took ~40 ms on a Zen 5 core, about the urgent window, and the streams
        # already playing ran dry behind them (late frames at 20-24 streams per core).
        self.opening_slice_s = self.urgent_s / 4

    # --- commands ----------------------------------------------------------------------------

    def _handle(self, msg: Command) -> bool:
        """Apply one command; False means stop the worker."""
        if isinstance(msg, Stop):
            return False
        if isinstance(msg, OpenStream):
            synthesis = SynthesisConfig.from_dict(msg.synthesis) if msg.synthesis else None
            self.streams[msg.sid] = WorkerStream(
                sid=msg.sid, seed=int(msg.seed), base_t=float(msg.admitted_at), synthesis=synthesis
            )
            return True
        if not isinstance(msg, (PushMel, FinishUtterance, CloseStream)):
            raise TypeError(f"unknown worker command {msg!r}")
        s = self.streams.get(msg.sid)
        if s is None:
            return True  # closed meanwhile: late commands for it are dropped
        if isinstance(msg, CloseStream):
            del self.streams[s.sid]
        elif s.finishing:
            s.backlog.append(msg)  # belongs to the next utterance
        else:
            self._apply(s, msg)
        return True

    def _apply(self, s: WorkerStream, msg: PushMel | FinishUtterance) -> None:
        if isinstance(msg, PushMel):
            self._push(s, msg.mel)
        else:
            self._finish(s)

    def _input_arrived(self, s: WorkerStream, was_pending: int) -> None:
        now = time.monotonic()
        if was_pending == 0 and s.pending() > 0:
            s.ready_since = now
            if now > self._due(s):
                # The client's input came after the audio made so far had played out: the client,
                # not this worker, stalled playback, so the real-time clock starts afresh.
                s.base_t, s.base_f = now, s.frames

    def _push(self, s: WorkerStream, mel: Any) -> None:
        try:
            if s.vs is None:
                s.vs = self.rt.open_stream(seed=s.seed, synthesis=s.synthesis)
                s.eager = True
            was = s.pending()
            s.vs.push(mel)
        except ValueError as exc:  # MelInputError: the parent validates first, so this is rare
            self._fail(s, "input", str(exc))
            return
        self._input_arrived(s, was)

    def _finish(self, s: WorkerStream) -> None:
        if s.vs is None:  # nothing pushed since the last flush: the utterance is already complete
            self._send(UtteranceDone(s.sid, 0))
            return
        was = s.pending()
        s.vs.finish()
        s.finishing = True
        self._input_arrived(s, was)
        if s.vs.finished:
            self._complete(s)

    def _fail(self, s: WorkerStream, kind: Literal["input", "internal"], message: str) -> None:
        self.streams.pop(s.sid, None)
        self._send(StreamError(s.sid, kind, message))

    # --- output ------------------------------------------------------------------------------

    def _send(self, msg: Report) -> None:
        self.conn.send(msg)

    def _flush(self, s: WorkerStream) -> None:
        if not s.out:
            return
        now = time.monotonic()
        late = sum(1 for o in s.out if now > o[3])
        pcm = b"".join(o[0] for o in s.out)
        computes, waits = [o[1] for o in s.out], [o[2] for o in s.out]
        steady = [o for o in s.out if o[5]]
        self._send(
            FramesMade(
                s.sid,
                pcm,
                computes,
                waits,
                late,
                s.redrawn,
                s.clipped,
                steady_s=[o[1] for o in steady],
                steady_cpu_s=[o[4] for o in steady],
            )
        )
        s.out.clear()
        s.redrawn = s.clipped = 0

    def _flush_all(self) -> None:
        for s in list(self.streams.values()):
            self._flush(s)
        self.last_flush = time.monotonic()

    def _complete(self, s: WorkerStream) -> None:
        self._flush(s)
        self._send(UtteranceDone(s.sid, s.utt_samples))
        s.vs, s.utt_samples, s.eager, s.finishing = None, 0, True, False
        while s.backlog and not s.finishing and s.sid in self.streams:
            self._apply(s, s.backlog.popleft())

    # --- compute -----------------------------------------------------------------------------

    def turn(self) -> None:
        """One pass of the loop: the EDF pick and its group make a frame each, or, for openings,
        a slice of their kernel frames (the frame itself once none is left to draw)."""
        s = self.pick()
        if s is None:
            return
        group = self.group(s)
        if s.eager and not self._draw_openings(group):
            return
        if len(group) > 1:
            self._step_group(group)
        else:
            self._step(s)

    def _draw_openings(self, group: list[WorkerStream]) -> bool:
        """Draw the kernel frames the openings of `group` need, a batched round at a time, for
        up to opening_slice_s; True when none is left (their first frames can be stepped). The
        time, and the draws redone or left at full scale meanwhile, are booked with those first
        frames."""
        t0, c0 = time.monotonic(), time.thread_time()
        counts = [(st, st.vs.frames_redrawn, st.vs.frames_clipped) for st in group]
        done = False
        try:
            while not (done := draw_ahead([st.vs for st in group], 1)):
                if time.monotonic() - t0 >= self.opening_slice_s:
                    break
        except StreamStepError as exc:  # one stream's failure costs that stream alone
            for vs, err in exc.failures:
                st = next(x for x in group if x.vs is vs)
                logger.error("stream %d failed drawing its opening: %r", st.sid, err)
                self._fail(st, "internal", f"{type(err).__name__}: {err}")
        except Exception as exc:  # the batched call itself: nothing tells the streams apart
            logger.exception("a grouped kernel call failed")
            for st in group:
                self._fail(st, "internal", f"{type(exc).__name__}: {exc}")
            return False
        elapsed, cpu = time.monotonic() - t0, time.thread_time() - c0
        for st, redrawn, clipped in counts:
            if self.streams.get(st.sid) is not st:
                continue  # failed above
            st.redrawn += st.vs.frames_redrawn - redrawn
            st.clipped += st.vs.frames_clipped - clipped
            st.carried_s += elapsed / len(group)
            st.carried_cpu_s += cpu / len(group)
            st.sliced_s += elapsed
        return done and all(self.streams.get(st.sid) is st for st in group)

    def _step(self, s: WorkerStream) -> None:
        t0, c0 = time.monotonic(), time.thread_time()
        opening = s.eager
        redrawn, clipped = s.vs.frames_redrawn, s.vs.frames_clipped
        kernel = s.vs.kernel_frames
        try:
            pcm = float_to_pcm16(s.vs.step())
        except Exception as exc:  # a runtime bug must cost one stream, not the worker
            logger.exception("stream %d failed in step()", s.sid)
            self._fail(s, "internal", f"{type(exc).__name__}: {exc}")
            return
        t1, c1 = time.monotonic(), time.thread_time()
        self._record(s, pcm, t0, t1, t1 - t0, c1 - c0, opening, kernel, redrawn, clipped)

    def _step_group(self, group: list[WorkerStream]) -> None:
        """One frame of each stream in `group`, the kernel frames their steps need drawn B at a
        time (models.batching.step_streams: each weight block loaded once for all of them, the
        audio that of each stream alone). The group's time is shared out evenly among its
        frames."""
        befores = [
            (s.eager, s.vs.kernel_frames, s.vs.frames_redrawn, s.vs.frames_clipped) for s in group
        ]
        t0, c0 = time.monotonic(), time.thread_time()
        try:
            outs: list[np.ndarray | None] = list(step_streams([s.vs for s in group]))
            failures: list[tuple[Any, Exception]] = []
        except StreamStepError as exc:  # one stream's failure costs that stream alone
            outs, failures = exc.results, exc.failures
        except Exception as exc:  # the batched call itself: nothing tells the streams apart
            logger.exception("a grouped kernel call failed")
            for s in group:
                self._fail(s, "internal", f"{type(exc).__name__}: {exc}")
            return
        t1, c1 = time.monotonic(), time.thread_time()
        self.grouped += len(group)
        for vs, err in failures:
            s = next(st for st in group if st.vs is vs)
            logger.error("stream %d failed in a grouped step: %r", s.sid, err)
            self._fail(s, "internal", f"{type(err).__name__}: {err}")
        n = len(group)
        for s, out, (opening, kernel, redrawn, clipped) in zip(group, outs, befores):
            if out is not None:
                pcm = float_to_pcm16(out)
                self._record(s, pcm, t0, t1, (t1 - t0) / n, (c1 - c0) / n, opening, kernel,
                             redrawn, clipped)  # fmt: skip

    def _record(
        self,
        s: WorkerStream,
        pcm: bytes,
        t0: float,
        t1: float,
        compute_s: float,
        cpu_s: float,
        opening: bool,
        kernel: int,
        redrawn: int,
        clipped: int,
    ) -> None:
        """Book a frame step() made between t0 and t1 (its share: compute_s, cpu_s); kernel,
        redrawn, clipped: the stream's counters before the step."""
        if opening:
            # The opening is time to first audio; playback (and every later deadline) starts
            # `buffer_s` after this first audio, unless earlier audio of the stream still plays.
            deadline = math.inf
            first_play = self._due(s)
            if t1 + self.buffer_s > first_play:
                s.base_t, s.base_f = t1, s.frames
        else:
            deadline = self._due(s)
        # One kernel frame per returned frame is the steady cost the pool's rolling capacity
        # estimate reads (an opening makes the look-ahead frames too; an utterance's tail none).
        steady = not opening and s.vs.kernel_frames - kernel == 1
        compute_s, cpu_s = compute_s + s.carried_s, cpu_s + s.carried_cpu_s
        wait = max(0.0, t0 - s.ready_since - s.sliced_s)
        s.carried_s = s.carried_cpu_s = s.sliced_s = 0.0
        s.redrawn += s.vs.frames_redrawn - redrawn
        s.clipped += s.vs.frames_clipped - clipped
        s.out.append((pcm, compute_s, wait, deadline, cpu_s, steady))
        s.frames += 1
        s.utt_samples += len(pcm) // 2
        s.ready_since = t1
        if s.vs.finished:
            self._complete(s)
        elif s.eager or s.vs.pending() == 0:
            self._flush(s)
            s.eager = False

    def group(self, first: WorkerStream) -> list[WorkerStream]:
        """`first` (the EDF pick) and up to B - 1 more streams with a frame of the same kind to
        make (B: the largest batch the module's kernel draws in one call), earliest deadlines
        first: their frames are made ahead of need, as B streams' frames cost less than B
        single ones (`sparrow bench --batch`)."""
        limit = max(self.rt.batch_sizes)
        if limit <= 1:
            return [first]
        # Openings group with openings (streams that start together open at once, each ~15
        # kernel frames drawn B at a time), steady frames with steady frames. An opening drawn
        # in slices goes on with the openings it started with: streams admitted meanwhile wait
        # for the next group rather than make its rounds dearer (in a load test, groups grew to
        # 8 that way and doubled the time to first audio).
        others = [
            s
            for s in self.streams.values()
            if s is not first
            and s.eager == first.eager
            and s.pending() > 0
            and (s.sliced_s > 0) == (first.sliced_s > 0)
        ]
        others.sort(key=self._edf_key)
        return [first, *others[: limit - 1]]

    def pick(self) -> WorkerStream | None:
        """The runnable stream whose next frame is due first (EDF), or None.

        Steady frames cost the same, so earliest-deadline-first meets all their deadlines whenever
        any order can; ties go to the older stream (lower id) for a stable order. An opening costs
        ~15 frames at once and is judged as time to first audio, a soft target, while a steady
        frame missed is a gap the listener hears: so a steady frame due within `urgent_s` goes
        before any opening. Without this, streams that start together open one after another
        while the first opened ones, holding one frame beyond their playback buffer, run dry.
        """
        runnable = [s for s in self.streams.values() if s.pending() > 0]
        if not runnable:
            return None
        soon = time.monotonic() + self.urgent_s
        urgent = [s for s in runnable if not s.eager and self._due(s) < soon]
        return min(urgent or runnable, key=self._edf_key)

    def _due(self, s: WorkerStream) -> float:
        """When the stream's next frame is due (its deadline, see WorkerStream.deadline)."""
        return s.deadline(s.frames, self.buffer_s, self.frame_s)

    def _edf_key(self, s: WorkerStream) -> tuple[float, int]:
        """EDF order: the next frame's deadline, ties to the older stream."""
        return self._due(s), s.sid

    def _read(self, block: bool) -> bool:
        """Apply every waiting command (waiting for one if `block`); False: stop or parent gone."""
        timeout = None if block else 0.0
        try:
            while self.conn.poll(timeout):
                if not self._handle(self.conn.recv()):
                    return False
                timeout = 0.0
        except (EOFError, OSError):
            return False
        return True

    def run(self) -> None:
        while True:
            if not any(s.pending() for s in self.streams.values()):
                self._flush_all()
                if not self._read(block=True):
                    break
                continue
            if not self._read(block=False):
                break
            self.turn()
            if time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
                self._flush_all()
        try:
            self._flush_all()
        except (OSError, EOFError):
            pass
