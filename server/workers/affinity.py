"""Pinning a process to one core, and the thread settings that keep it there."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# Runtimes that start their own thread pools would spread one worker over every core and
# defeat per-core admission; each worker computes on exactly one thread.
SINGLE_THREAD_ENV = {
    "TVM_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def pin_to_core(core: int) -> None:
    """Restrict the calling process (and threads it starts later) to `core`."""
    os.sched_setaffinity(0, {core})
    got = os.sched_getaffinity(0)
    if got != {core}:
        raise RuntimeError(f"pinning to core {core} left affinity {sorted(got)}")


def single_threaded_env() -> None:
    """Set thread-count variables before numpy/TVM read them (they read them once)."""
    for key, value in SINGLE_THREAD_ENV.items():
        os.environ[key] = value
