"""Admission control: how many real-time streams each core takes, which core a stream goes to,
and how that capacity follows the core's measured cost and late frames.

A stream is admitted to the least-loaded worker below its capacity
(`floor(headroom * US_PER_SAMPLE_BUDGET / measured µs per sample)`, capped by `max_streams`) and
stays there, since its recurrent state lives in that process.

The measured µs per sample starts as the worker's start-up measurement and is then re-estimated
from the frames it really computes (`rolling_us_per_sample`): the core's own speed (a low
quantile of the CPU time of a window of recent steady frame steps) over the share of the core
the worker got in them (their CPU time over their wall time). The capacity that figure allows
(`measured_capacity`) may rise above the start-up one or fall below it; it moves only when the
estimate moves it by a stream and 5% (`estimate_moves`), so a core serving dozens of streams does
not flap between neighbouring counts on a percent of noise. A fall applies at once; a rise applies to a worker not cut by late frames once it has gone
`recovery_s` without them (`capacity_after_estimate`).

The measurement cannot see everything serving costs (the server's own I/O, a neighbour taking the
core in bursts), so capacity also follows the outcome that matters: when a worker's frames go
late, its capacity drops by one stream (at most once per `recovery_s / 6`, since frames already
queued were computed under the old load; admitted streams go on, new ones go elsewhere or are
refused), and after `recovery_s` without late frames it climbs back by one stream per
`recovery_s`, never above the measured figure.

Pure decisions over the pool's worker records; the pool applies them (metrics, logs, waking
waiters).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from models.dsp.features import US_PER_SAMPLE_BUDGET
from server.errors import NoCapacity, NotReady

logger = logging.getLogger(__name__)


class Slot(Protocol):
    """What admission reads of a worker (server/workers/pool.py's record)."""

    core: int
    state: str
    capacity: int
    measured_capacity: int
    changed_at: float
    cut_at: float
    streams: dict[int, Any]


S = TypeVar("S", bound=Slot)


class Refused(Exception):
    """A stream not admitted: `reason` labels the refusal metric, `error` goes to the client."""

    def __init__(self, reason: str, error: Exception) -> None:
        super().__init__(str(error))
        self.reason = reason
        self.error = error


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


def pick_worker(workers: Sequence[S], *, closing: bool, fatal_error: str | None) -> S:
    """The least-loaded ready worker with room; Refused (NotReady / NoCapacity) otherwise."""
    if closing:
        raise Refused("draining", NotReady("the server is shutting down and takes no new streams"))
    ready = [w for w in workers if w.state == "ready"]
    if not ready:
        raise Refused(
            "not_ready", NotReady(fatal_error or "workers are still starting; retry shortly")
        )
    open_ = [w for w in ready if len(w.streams) < w.capacity]
    if not open_:
        total = sum(w.capacity for w in ready)
        raise Refused(
            "capacity",
            NoCapacity(
                f"all {len(ready)} workers are at capacity ({total} real-time streams); retry later"
            ),
        )
    return min(open_, key=lambda x: (len(x.streams) / x.capacity, len(x.streams)))


def capacity_after_late(w: Slot, now: float, *, adaptive: bool, recovery_s: float) -> int | None:
    """The capacity a worker whose frames just went late drops to, or None to keep it. Records
    the late frame (recovery waits from it) and the cut."""
    w.changed_at = now
    if not adaptive or w.state != "ready" or now - w.cut_at < recovery_s / 6:
        return None
    # One stream at a time: late reports trail the load that caused them (a backlog drains
    # slowly, and streams ending together report at once), so cutting to "streams held - 1"
    # collapses capacity to 1 in a load test. Not below one: a lone late stream is the core's
    # speed, not its load (capacity_for warns about that).
    if w.capacity <= 1:
        return None
    w.cut_at = now
    return w.capacity - 1


def capacity_after_quiet(w: Slot, now: float, *, recovery_s: float) -> int | None:
    """One stream more for a worker cut below its measured capacity that has gone `recovery_s`
    without late frames, or None."""
    if w.state == "ready" and w.capacity < w.measured_capacity and now - w.changed_at >= recovery_s:
        return w.capacity + 1
    return None


def rolling_us_per_sample(
    step_s: Sequence[float],
    cpu_s: Sequence[float],
    hop_length: int,
    *,
    min_frames: int,
    quantile: float,
) -> tuple[float, float] | None:
    """(µs per sample, core share) of a worker from its recent steady frames: their step times
    (wall clock, seconds) and the CPU time it ran in them; None with fewer than `min_frames`.

    The core's own speed is the `quantile` (a low one) of the CPU times: a page fault or cache
    pressure only ever adds to a step. What it gets of the core is the share of the steps' wall
    time it ran (CPU / wall over the window): a neighbour taking the core in slices leaves most
    steps untouched and stalls a few for a whole slice, so no quantile of step times sees it,
    while their sum does. The figure is the own speed over that share."""
    n = len(step_s)
    if n < max(min_frames, 1) or len(cpu_s) != n:
        return None
    wall, cpu = math.fsum(step_s), math.fsum(cpu_s)
    if wall <= 0.0 or cpu <= 0.0:
        return None
    share = min(1.0, cpu / wall)
    ordered = sorted(cpu_s)
    # The lower of the two order statistics around the quantile (no interpolation): a figure
    # some step really took.
    at = min(n - 1, max(0, math.ceil(quantile * n) - 1))
    return ordered[at] / share / hop_length * 1e6, share


ESTIMATE_DEADBAND = 0.05
"""Share of a worker's measured capacity a new estimate must move it by (and at least one
stream): the rolling estimate wanders by 1-4% on an idle core (1.02-1.07 µs/sample a stream,
37-39 streams, on a Zen 5 core serving 16-28), which moved the capacity and logged it every few
seconds; below 20 streams a single stream is 5% or more, so every move counts there."""


def estimate_moves(measured: int, estimated: int) -> bool:
    """Whether an estimate allowing `estimated` streams moves a measured capacity of `measured`
    (ESTIMATE_DEADBAND)."""
    return abs(estimated - measured) >= max(1, math.ceil(ESTIMATE_DEADBAND * measured))


def capacity_after_estimate(
    w: Slot, estimated: int, now: float, *, recovery_s: float
) -> int | None:
    """The capacity a worker moves to when its rolling estimate allows `estimated` streams
    (`w.measured_capacity` is what the previous estimate allowed), or None to keep it.

    Down to the estimate at once. Up to it only for a worker not cut below its previous estimate
    by late frames and without any for `recovery_s` (a cut worker climbs one stream at a time,
    `capacity_after_quiet`)."""
    if w.state != "ready":
        return None
    if estimated < w.capacity:
        return estimated
    if (
        estimated > w.capacity
        and w.capacity >= w.measured_capacity
        and now - w.changed_at >= recovery_s
    ):
        return estimated
    return None
