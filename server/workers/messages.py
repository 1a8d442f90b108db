"""What the pool and its workers say to each other over a worker's pipe: typed, frozen
dataclasses (pickled by multiprocessing), never positional tuples.

parent -> worker (Command):  OpenStream, PushMel, FinishUtterance, CloseStream, Stop
worker -> parent (Report):   WorkerReady, LoadError, FramesMade, UtteranceDone, StreamError
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

# --- parent -> worker ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A stream admitted to this worker; its playback clock starts at `admitted_at` (monotonic)."""

    sid: int
    seed: int
    admitted_at: float
    # Synthesis settings of this stream alone (models.vocoder.config.SynthesisConfig fields),
    # or None for the voice's own.
    synthesis: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PushMel:
    """Validated mel frames for the stream's current utterance: float32 [n, n_mels]."""

    sid: int
    mel: np.ndarray


@dataclass(frozen=True, slots=True)
class FinishUtterance:
    """End of the utterance: vocode the look-ahead tail, then report UtteranceDone."""

    sid: int


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Drop the stream's state (frames still in the pipe for it are discarded by the parent)."""

    sid: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Leave the frame loop and exit."""


Command = OpenStream | PushMel | FinishUtterance | CloseStream | Stop

# --- worker -> parent ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """The model loaded and the worker measured its cost per sample on its core."""

    core: int
    pid: int
    # What a stream really costs: the whole step (conditioning, the kernel call, the chain, PCM
    # conversion), never less than the kernel's best time. Admission capacity comes from it.
    us_per_sample: float
    kernel_us_per_sample: float
    isa: str | None
    name: str | None
    manifest: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def model_info(self) -> dict[str, Any]:
        """The model's description the server publishes (GET /v1/models)."""
        return {
            "isa": self.isa,
            "name": self.name,
            "manifest": self.manifest,
            "config": self.config,
        }


@dataclass(frozen=True, slots=True)
class LoadError:
    """The worker could not load or measure the model."""

    message: str


@dataclass(frozen=True, slots=True)
class FramesMade:
    """A burst of one stream's frames: s16le PCM, whole frames, with per-frame timings."""

    sid: int
    pcm: bytes
    compute_s: list[float]  # per frame: time in step()
    queue_wait_s: list[float]  # per frame: time ready but waiting for the core
    late: int  # frames sent after their playback deadline (an utterance's opening never is)
    redrawn: int  # draws thrown away because they reached full scale
    clipped: int  # frames sent at full scale after every redraw
    # Step times of the frames whose step made exactly one kernel frame (not an utterance's
    # opening, which makes the look-ahead too, nor its tail), and the CPU time the worker ran in
    # them (less when something else took the core meanwhile): the pool's rolling cost estimate.
    steady_s: list[float] = field(default_factory=list)
    steady_cpu_s: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UtteranceDone:
    """Every frame of the utterance has been sent; `samples` in it."""

    sid: int
    samples: int


@dataclass(frozen=True, slots=True)
class StreamError:
    """The worker dropped the stream: its input broke the mel contract, or computing it failed."""

    sid: int
    kind: Literal["input", "internal"]
    message: str


Report = WorkerReady | LoadError | FramesMade | UtteranceDone | StreamError
