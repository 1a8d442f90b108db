"""One sampling worker: a process pinned to one core that runs every stream assigned to it.

The worker loads the compiled vocoder once, measures its own µs/sample on its core (the pool turns
that into an admission capacity), then runs the frame loop (server/workers/scheduler.py) until
told to stop.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from models.vocoder.config import SynthesisConfig
from server.audio import float_to_pcm16
from server.workers.affinity import pin_to_core, single_threaded_env
from server.workers.messages import LoadError, WorkerReady
from server.workers.scheduler import Scheduler


def measure_step_us(runtime: Any, frames: int) -> float:
    """Median µs per sample of whole `step()` calls (plus PCM conversion) on a synthetic mel."""
    c = runtime.config
    rng = np.random.default_rng(0)
    mel = (-6.0 + np.cumsum(rng.normal(0.0, 0.1, (frames + 3, c.n_mels)), axis=0)).astype(
        np.float32
    )
    stream = runtime.open_stream(seed=0)
    stream.push(np.clip(mel, -11.0, 2.0))
    stream.finish()
    times = []
    while stream.pending():
        t0 = time.perf_counter()
        float_to_pcm16(stream.step())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / c.hop_length * 1e6


def worker_main(
    core: int,
    model_dir: str,
    cache_dir: str | None,
    initial_buffer_s: float,
    measure_frames: int,
    synthesis: dict[str, Any] | None,
    conn: Connection,
) -> None:
    """Process entry point: pin, load, measure, report, then serve streams until told to stop."""
    # The parent coordinates shutdown (drain on SIGTERM, Ctrl-C hits the whole process group):
    # workers leave when told to or when the parent's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    single_threaded_env()
    try:
        pin_to_core(core)
        from models.runtime import VocoderRuntime

        rt = VocoderRuntime.load(model_dir, cache_dir=cache_dir)
        if synthesis is not None:  # the server's settings in place of the voice's own
            rt = rt.with_synthesis(SynthesisConfig.from_dict(synthesis))
        kernel_us = float(rt.measure_us_per_sample(frames=measure_frames))
        step_us = measure_step_us(rt, measure_frames)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides (fail start-up or retry)
        conn.send(LoadError(f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(
        WorkerReady(
            core=core,
            pid=os.getpid(),
            us_per_sample=max(kernel_us, step_us),
            kernel_us_per_sample=kernel_us,
            isa=getattr(rt, "isa", None),
            name=getattr(rt, "name", None),
            manifest=getattr(rt, "manifest", {}),
            config=rt.config.to_dict(),
        )
    )
    try:
        Scheduler(rt, conn, initial_buffer_s).run()
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass  # the parent went away: nothing left to serve
