"""The worker's EDF frame loop, driven over a real pipe with the real tiny runtime (in a thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.runtime import VocoderRuntime
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
from server.workers.scheduler import Scheduler
from server.workers.stream_state import WorkerStream
from server.workers.worker import measure_step_us


@pytest.fixture(scope="module")
def runtime(tiny_model_dir: Path) -> VocoderRuntime:
    return VocoderRuntime.load(tiny_model_dir)


class Harness:
    def __init__(self, runtime: VocoderRuntime, buffer_s: float) -> None:
        self.conn, child = Pipe(duplex=True)
        self.scheduler = Scheduler(runtime, child, buffer_s)
        self.thread = threading.Thread(target=self.scheduler.run, daemon=True)

    def start(self) -> Harness:
        self.thread.start()
        return self

    def send(self, msg: Command) -> None:
        self.conn.send(msg)

    def recv(self, timeout: float = 20.0) -> Report:
        assert self.conn.poll(timeout), "worker sent nothing"
        return self.conn.recv()

    def until_flushed(self, sid: int) -> tuple[bytes, int, list[float]]:
        """PCM, late frames and compute times of `sid` up to its next flushed message."""
        pcm, late, computes = b"", 0, []
        while True:
            msg = self.recv()
            if isinstance(msg, FramesMade) and msg.sid == sid:
                pcm += msg.pcm
                computes += msg.compute_s
                late += msg.late
            elif isinstance(msg, UtteranceDone) and msg.sid == sid:
                assert msg.samples == len(pcm) // 2
                return pcm, late, computes
            elif isinstance(msg, StreamError):
                raise AssertionError(f"stream failed: {msg}")

    def stop(self) -> None:
        self.send(Stop())
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def harness(runtime: VocoderRuntime) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(buffer_s: float = 0.1) -> Harness:
        h = Harness(runtime, buffer_s)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.thread.is_alive():
            h.stop()


def reference_pcm(runtime: VocoderRuntime, mel: np.ndarray, seed: int) -> bytes:
    return b"".join(float_to_pcm16(f) for f in runtime.generate(mel, seed=seed))


def test_chunked_pushes_give_the_runtime_audio(
    runtime: VocoderRuntime, harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(37, seed=1)
    h = harness().start()
    h.send(OpenStream(1, 7, time.monotonic()))
    for a, b in [(0, 1), (1, 5), (5, 20), (20, 37)]:
        h.send(PushMel(1, mel[a:b]))
    h.send(FinishUtterance(1))
    pcm, _, computes = h.until_flushed(1)
    assert pcm == reference_pcm(runtime, mel, seed=7)
    assert len(computes) == 37 and all(c > 0 for c in computes)
    # a second utterance on the same stream starts afresh with the same seed
    h.send(PushMel(1, mel))
    h.send(FinishUtterance(1))
    assert h.until_flushed(1)[0] == pcm


def test_commands_after_finish_belong_to_the_next_utterance(
    runtime: VocoderRuntime, harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    a, b = make_mel(30, seed=1), make_mel(9, seed=2)
    h = harness().start()
    h.send(OpenStream(1, 3, time.monotonic()))
    # all sent at once: the second push arrives while the first utterance's tail is computing
    for msg in [
        PushMel(1, a),
        FinishUtterance(1),
        FinishUtterance(1),
        PushMel(1, b),
        FinishUtterance(1),
    ]:
        h.send(msg)
    assert h.until_flushed(1)[0] == reference_pcm(runtime, a, seed=3)
    assert h.until_flushed(1)[0] == b""
    assert h.until_flushed(1)[0] == reference_pcm(runtime, b, seed=3)


def test_interleaved_streams_are_independent(
    runtime: VocoderRuntime, harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    mels = {1: make_mel(30, seed=1), 2: make_mel(45, seed=2)}
    h = harness().start()
    now = time.monotonic()
    for sid, mel in mels.items():
        h.send(OpenStream(sid, sid, now))
        h.send(PushMel(sid, mel))
        h.send(FinishUtterance(sid))
    got: dict[int, bytes] = {1: b"", 2: b""}
    done: set[int] = set()
    while len(done) < 2:
        msg = h.recv()
        if isinstance(msg, FramesMade):
            got[msg.sid] += msg.pcm
        elif isinstance(msg, UtteranceDone):
            done.add(msg.sid)
    for sid, mel in mels.items():
        assert got[sid] == reference_pcm(runtime, mel, seed=sid)


def test_streams_drawn_in_groups_make_the_runtime_audio(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    # The module draws up to 8 streams' frames per call: the scheduler groups the steady frames
    # of the streams it has, each stream's audio is still what the runtime makes alone.
    assert max(runtime.batch_sizes) == 8
    mels = {sid: make_mel(n, seed=sid) for sid, n in [(1, 30), (2, 45), (3, 12), (4, 20)]}
    h = Harness(runtime, 0.1).start()
    now = time.monotonic()
    for sid, mel in mels.items():
        h.send(OpenStream(sid, sid, now))
        h.send(PushMel(sid, mel))
        h.send(FinishUtterance(sid))
    got = dict.fromkeys(mels, b"")
    done: set[int] = set()
    while len(done) < len(mels):
        msg = h.recv()
        if isinstance(msg, FramesMade):
            got[msg.sid] += msg.pcm
        elif isinstance(msg, UtteranceDone):
            done.add(msg.sid)
    h.send(Stop())
    assert h.scheduler.grouped >= 40
    for sid, mel in mels.items():
        assert got[sid] == reference_pcm(runtime, mel, seed=sid)


def test_streams_that_start_together_open_in_one_group(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    s, reports = driven(runtime, 0.1)
    now = time.monotonic()
    mels = {sid: make_mel(20, seed=sid) for sid in (1, 2, 3)}
    for sid, mel in mels.items():
        s._handle(OpenStream(sid, sid, now))
        s._handle(PushMel(sid, mel))
        s._handle(FinishUtterance(sid))
    group = s.group(s.pick())
    assert sorted(st.sid for st in group) == [1, 2, 3] and all(st.eager for st in group)
    s._step_group(group)
    firsts = {}
    for _ in mels:  # each opening is sent at once, as first audio, never late
        msg = reports.recv()
        assert isinstance(msg, FramesMade) and msg.late == 0
        firsts[msg.sid] = msg.pcm
    group = s.group(s.pick())  # then their steady frames group together
    assert len(group) == 3 and not any(st.eager for st in group)
    for sid, mel in mels.items():
        alone = reference_pcm(runtime, mel, seed=sid)
        assert firsts[sid] == alone[: len(firsts[sid])] and len(firsts[sid]) == 600


def test_edf_picks_the_earliest_deadline(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    a_conn, _ = Pipe()
    s = Scheduler(runtime, a_conn, initial_buffer_s=0.1)
    now = time.monotonic()
    for sid, base in [(1, now + 0.050), (2, now), (3, now - 1.0)]:
        st = WorkerStream(sid=sid, seed=0, base_t=base)
        st.vs = runtime.open_stream(seed=0)
        st.vs.push(make_mel(10))
        s.streams[sid] = st
    s.streams[3].vs = None  # nothing to compute: never picked, however early its deadline
    assert s.pick().sid == 2
    # stream 2 is 4 frames (50 ms) ahead of stream 1: after 4 of its frames, stream 1 is due first
    s.streams[2].frames = 5
    assert s.pick().sid == 1


def test_a_steady_frame_due_soon_goes_before_an_earlier_opening(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    # Stream 1 has opened and plays; stream 2 was admitted earlier but has not opened yet. EDF
    # alone would open stream 2 first (its clock is older); once stream 1's next frame is due
    # within the urgent window it goes first, as a missed steady frame is a gap the listener hears.
    a_conn, _ = Pipe()
    s = Scheduler(runtime, a_conn, initial_buffer_s=0.1)
    now = time.monotonic()
    for sid, base, eager in [(1, now, False), (2, now - 0.5, True)]:
        st = WorkerStream(sid=sid, seed=0, base_t=base, eager=eager)
        st.vs = runtime.open_stream(seed=0)
        st.vs.push(make_mel(30))
        s.streams[sid] = st
    s.streams[1].frames = 40  # its frame 40 is due 0.6 s from now: far, so the opening goes first
    assert s.pick().sid == 2
    s.streams[1].frames = 2  # due in 0.125 s, past the 50 ms window: still the opening
    assert s.urgent_s == 0.05
    assert s.pick().sid == 2
    s.streams[1].base_t = now - 0.09  # due in 35 ms: inside the window
    assert s.pick().sid == 1
    s.streams[1].eager = True  # an opening itself: plain EDF again, the older clock first
    assert s.pick().sid == 2


def test_an_opening_is_first_audio_not_a_late_frame(
    harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    # No playback buffer, streams started together, utterances of one frame: every frame is an
    # opening, sent after its input arrived. Judged as first audio, none is late.
    h = harness(buffer_s=0.0).start()
    for sid in range(1, 5):
        h.send(OpenStream(sid, 0, time.monotonic()))
        h.send(PushMel(sid, make_mel(1, seed=sid)))
        h.send(FinishUtterance(sid))
    for sid in range(1, 5):
        pcm, late, _ = h.until_flushed(sid)
        assert len(pcm) == 300 * 2 and late == 0


def driven(runtime: VocoderRuntime, buffer_s: float) -> tuple[Scheduler, Any]:
    """A scheduler stepped by the test itself (no thread), and the end its reports go to."""
    parent, child = Pipe()
    return Scheduler(runtime, child, initial_buffer_s=buffer_s), parent


def test_frames_after_the_opening_are_due_from_the_first_audio(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    for buffer_s, expected_late in [(0.0, 2), (5.0, 0)]:
        s, reports = driven(runtime, buffer_s)
        s._handle(OpenStream(1, 0, time.monotonic() - 60.0))  # admitted long ago
        s._handle(PushMel(1, make_mel(10)))
        s._handle(FinishUtterance(1))
        st = s.streams[1]
        s._step(st)  # the opening: sent at once, never late, and playback starts from it
        opening = reports.recv()
        assert isinstance(opening, FramesMade) and opening.late == 0
        assert st.base_f == 0 and time.monotonic() - st.base_t < 30.0
        # The core is taken away for 50 ms: frames 1 and 2 (due 12.5 and 25 ms after the first
        # audio, plus the buffer) are late without a buffer and on time with one.
        time.sleep(0.05)
        s._step(st)
        s._step(st)
        s._flush(st)
        burst = reports.recv()
        assert isinstance(burst, FramesMade) and len(burst.compute_s) == 2
        assert burst.late == expected_late


def test_an_opening_during_playback_keeps_the_clock(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    # The next utterance of a stream whose earlier audio still plays (40 frames: 0.5 s, with a
    # 1 s buffer) is heard after it: its opening does not restart the playback clock.
    s, reports = driven(runtime, 1.0)
    s._handle(OpenStream(1, 0, time.monotonic()))
    s._handle(PushMel(1, make_mel(40)))
    s._handle(FinishUtterance(1))
    st = s.streams[1]
    while st.vs is not None:
        s._step(st)
    clock = (st.base_t, st.base_f)
    s._handle(PushMel(1, make_mel(5, seed=1)))
    s._handle(FinishUtterance(1))
    s._step(st)
    assert (st.base_t, st.base_f) == clock
    while st.vs is not None:
        s._step(st)
    late = 0
    while reports.poll(0):
        msg = reports.recv()
        late += msg.late if isinstance(msg, FramesMade) else 0
    assert late == 0


def test_steady_step_times_leave_out_the_opening_and_the_tail(
    harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    # output_advance: the kernel runs one frame ahead of the output, so the opening makes two
    # kernel frames and the last step none; the other 18 steps make one each.
    h = harness().start()
    h.send(OpenStream(1, 0, time.monotonic(), SynthesisConfig(output_advance=150).to_dict()))
    h.send(PushMel(1, make_mel(20)))
    h.send(FinishUtterance(1))
    steady: list[float] = []
    cpu: list[float] = []
    frames = 0
    while True:
        msg = h.recv()
        if isinstance(msg, FramesMade):
            steady += msg.steady_s
            cpu += msg.steady_cpu_s
            frames += len(msg.compute_s)
        elif isinstance(msg, UtteranceDone):
            break
    assert frames == 20 and len(steady) == len(cpu) == 18
    assert all(t > 0 for t in steady) and all(t > 0 for t in cpu)


def test_close_drops_the_stream_at_once(
    harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    h = harness().start()
    h.send(OpenStream(1, 0, time.monotonic()))
    h.send(PushMel(1, make_mel(3000)))  # far more than the worker computes before the close
    h.send(FinishUtterance(1))
    first = h.recv()
    assert isinstance(first, FramesMade) and first.sid == 1
    h.send(CloseStream(1))
    h.send(OpenStream(2, 0, time.monotonic()))
    h.send(FinishUtterance(2))  # an empty utterance: answered at once, after the close was applied
    frames_of_1 = len(first.compute_s)
    while True:
        msg = h.recv()
        if isinstance(msg, FramesMade) and msg.sid == 1:
            frames_of_1 += len(msg.compute_s)
        if isinstance(msg, UtteranceDone):
            assert msg.sid == 2 and msg.samples == 0
            break
    assert frames_of_1 < 3000
    assert not h.conn.poll(0.2), "frames kept coming after close"
    assert 1 not in h.scheduler.streams


def test_bad_mel_fails_only_that_stream(
    harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    h = harness().start()
    h.send(OpenStream(1, 0, time.monotonic()))
    h.send(PushMel(1, np.full((4, 80), np.nan, np.float32)))
    msg = h.recv()
    assert isinstance(msg, StreamError) and (msg.sid, msg.kind) == (1, "input")
    assert "non-finite" in msg.message
    h.send(OpenStream(2, 0, time.monotonic()))
    h.send(PushMel(2, make_mel(5)))
    h.send(FinishUtterance(2))
    assert len(h.until_flushed(2)[0]) == 5 * 300 * 2


def test_worker_exits_when_the_parent_goes(harness: Callable[..., Harness]) -> None:
    h = harness().start()
    h.conn.close()
    h.thread.join(10)
    assert not h.thread.is_alive()


def test_step_measurement_is_positive(runtime: VocoderRuntime) -> None:
    us = measure_step_us(runtime, frames=5)
    assert 0 < us < 1000


def test_a_stream_brings_its_own_synthesis_settings(
    runtime: VocoderRuntime, harness: Callable[..., Harness], make_mel: Callable[..., np.ndarray]
) -> None:
    """OpenStream's synthesis settings reach that stream's runtime stream alone."""
    mel = make_mel(12, seed=3)
    settings = SynthesisConfig(pitch_postfilter=0.5, output_advance=40)
    h = harness().start()
    h.send(OpenStream(1, 5, time.monotonic(), settings.to_dict()))
    h.send(PushMel(1, mel))
    h.send(FinishUtterance(1))
    own = h.until_flushed(1)[0]
    h.send(OpenStream(2, 5, time.monotonic()))
    h.send(PushMel(2, mel))
    h.send(FinishUtterance(2))
    plain = h.until_flushed(2)[0]
    expected = b"".join(
        float_to_pcm16(f) for f in runtime.generate(mel, seed=5, synthesis=settings)
    )
    assert own == expected and plain == reference_pcm(runtime, mel, seed=5) and own != plain


def test_an_opening_is_drawn_in_slices_with_urgent_steady_frames_between(
    runtime: VocoderRuntime, make_mel: Callable[..., np.ndarray]
) -> None:
    """An opening's kernel frames are drawn a slice at a time (here one batched round per turn);
    a playing stream's frame that comes due meanwhile is stepped between two slices, and both
    streams' audio is what the runtime makes alone."""
    settings = SynthesisConfig(output_advance=150, envelope_passes=1)
    s, reports = driven(runtime, 0.1)
    s.opening_slice_s = 0.0
    mels = {1: make_mel(30, seed=1), 2: make_mel(30, seed=2)}

    def open_stream(sid: int) -> WorkerStream:
        s._handle(OpenStream(sid, sid, time.monotonic(), settings.to_dict()))
        s._handle(PushMel(sid, mels[sid]))
        s._handle(FinishUtterance(sid))
        return s.streams[sid]

    def due_in(st: WorkerStream, seconds: float) -> None:
        # move the stream's playback clock so its next frame is due `seconds` from now
        st.base_t = time.monotonic() + seconds - s.buffer_s - (st.frames - st.base_f) * s.frame_s

    second = open_stream(2)
    turns = 0
    while second.eager:  # stream 2 opens, a round of kernel frames per turn
        kernel = second.vs.kernel_frames
        s.turn()
        turns += 1
        assert second.vs.kernel_frames == kernel + 1
    assert turns >= 5 and second.frames == 1
    first = open_stream(1)
    due_in(second, 10.0)
    s.turn()  # stream 1's opening begins
    assert first.eager and first.vs.kernel_frames == 1
    due_in(second, 0.01)  # inside the urgent window: stream 2 goes before the opening's next slice
    frames, kernel = second.frames, first.vs.kernel_frames
    s.turn()
    assert second.frames == frames + 1 and first.vs.kernel_frames == kernel
    due_in(second, 10.0)
    s.turn()
    assert first.vs.kernel_frames == kernel + 1
    while any(st.vs is not None for st in s.streams.values()):
        s.turn()
    got = dict.fromkeys(mels, b"")
    computes: list[float] = []
    while reports.poll(0):
        msg = reports.recv()
        if isinstance(msg, FramesMade):
            got[msg.sid] += msg.pcm
            computes += msg.compute_s
    for sid, mel in mels.items():
        expected = b"".join(
            float_to_pcm16(f) for f in runtime.generate(mel, seed=sid, synthesis=settings)
        )
        assert got[sid] == expected
    # the openings' slices are booked with their first frames: no frame's compute is lost
    assert len(computes) == 60 and all(c > 0 for c in computes)
