"""A worker's record of one stream (server/workers/scheduler.py's frame loop keeps one per
stream): the playback clock its deadlines run on, the utterance being vocoded, and the frames
made but not yet sent."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from models.vocoder.config import SynthesisConfig
from server.workers.messages import FinishUtterance, PushMel


@dataclass
class WorkerStream:
    """A worker's record of one stream: its playback clock, the utterance being vocoded and the
    frames made but not yet sent (server/workers/scheduler.py steps it)."""

    sid: int
    seed: int
    base_t: float  # monotonic time the playback clock (re)started
    synthesis: SynthesisConfig | None = None  # the stream's own settings, else the voice's
    base_f: int = 0  # frame index at that time
    frames: int = 0  # frames produced over all utterances of this stream
    utt_samples: int = 0
    vs: Any = None  # models.runtime.VocoderStream of the current utterance (None between them)
    ready_since: float = 0.0  # when the next frame became computable (for queue-wait)
    # pcm, compute, wait, deadline, CPU time of the step, steady (it made exactly one kernel frame)
    out: list[tuple[bytes, float, float, float, float, bool]] = field(default_factory=list)
    # draws thrown away and frames sent at full scale since the last flush (VocoderStream's
    # frames_redrawn / frames_clipped, see SynthesisConfig.clip_retries)
    redrawn: int = 0
    clipped: int = 0
    eager: bool = True  # the next step opens an utterance: sent at once, judged as first audio
    # time spent drawing the opening's kernel frames ahead of the step that returns its first
    # frame (Scheduler._draw_openings): its share, booked with that frame as compute, and the
    # slices' whole length, which is not queue wait
    carried_s: float = 0.0
    carried_cpu_s: float = 0.0
    sliced_s: float = 0.0
    finishing: bool = False  # finish() was called on `vs`; its tail is still being computed
    # Commands for the next utterance that arrived while this one was finishing, in order.
    backlog: collections.deque[PushMel | FinishUtterance] = field(default_factory=collections.deque)

    def deadline(self, frame: int, buffer_s: float, frame_s: float) -> float:
        return self.base_t + buffer_s + (frame - self.base_f) * frame_s

    def pending(self) -> int:
        return 0 if self.vs is None else int(self.vs.pending())
