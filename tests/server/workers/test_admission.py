"""Admission decisions on plain worker records: where a stream goes, when it is refused, and how
capacity follows late frames."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from server.errors import NoCapacity, NotReady
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


@dataclass
class Slot:
    core: int
    capacity: int
    held: int = 0
    state: str = "ready"
    measured_capacity: int = 0
    changed_at: float = 0.0
    cut_at: float = -math.inf
    streams: dict[int, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.streams = {i: None for i in range(self.held)}
        self.measured_capacity = self.measured_capacity or self.capacity


def test_the_least_loaded_worker_with_room_gets_the_stream() -> None:
    workers = [
        Slot(0, capacity=4, held=2),
        Slot(1, capacity=2, held=0),
        Slot(2, capacity=1, held=1),
    ]
    assert pick_worker(workers, closing=False, fatal_error=None).core == 1
    workers[1].streams = {0: None, 1: None}  # now full
    assert pick_worker(workers, closing=False, fatal_error=None).core == 0


@pytest.mark.parametrize(
    ("workers", "closing", "reason", "error"),
    [
        ([Slot(0, 2)], True, "draining", NotReady),
        ([Slot(0, 2, state="starting")], False, "not_ready", NotReady),
        ([Slot(0, 1, held=1), Slot(1, 2, held=2)], False, "capacity", NoCapacity),
    ],
)
def test_refusals_say_why(workers: list[Slot], closing: bool, reason: str, error: type) -> None:
    with pytest.raises(Refused) as refused:
        pick_worker(workers, closing=closing, fatal_error=None)
    assert refused.value.reason == reason and isinstance(refused.value.error, error)


def test_late_frames_cut_one_stream_at_a_time_and_quiet_brings_it_back() -> None:
    w = Slot(0, capacity=4)
    assert capacity_after_late(w, 100.0, adaptive=True, recovery_s=60.0) == 3
    w.capacity = 3
    # within recovery_s / 6 of the last cut: the late report trails that cut, no second cut
    assert capacity_after_late(w, 105.0, adaptive=True, recovery_s=60.0) is None
    assert capacity_after_late(w, 111.0, adaptive=True, recovery_s=60.0) == 2
    assert capacity_after_late(Slot(1, capacity=1), 0.0, adaptive=True, recovery_s=60.0) is None
    assert capacity_after_late(Slot(2, capacity=4), 0.0, adaptive=False, recovery_s=60.0) is None
    w.capacity = 2
    assert capacity_after_quiet(w, 111.0 + 59.0, recovery_s=60.0) is None
    assert capacity_after_quiet(w, 111.0 + 60.0, recovery_s=60.0) == 3
    w.capacity = 4
    assert capacity_after_quiet(w, 1e9, recovery_s=60.0) is None  # never above the measured


def test_the_rolling_estimate_is_the_core_speed_over_the_share_it_gets() -> None:
    # 300-sample frames: 1.5 ms of CPU a step is 5 µs a sample.
    own = [0.0015] * 100
    assert rolling_us_per_sample(own, own, 300, min_frames=50, quantile=0.2) == pytest.approx(
        (5.0, 1.0)
    )
    # Page faults and cache misses add CPU time to some steps: the low quantile ignores them.
    faulty = [0.0015] * 70 + [0.003] * 30
    us, share = rolling_us_per_sample(faulty, faulty, 300, min_frames=50, quantile=0.2)
    assert (us, share) == pytest.approx((5.0, 1.0))
    # ... until most steps cost more: then the core is slower, and the estimate says so
    slow = [0.0015] * 10 + [0.006] * 90
    assert rolling_us_per_sample(slow, slow, 300, min_frames=50, quantile=0.2)[0] == (
        pytest.approx(20.0)
    )
    # A neighbour that takes the core in slices: 80 steps untouched, 20 stalled 6 ms each. The
    # steps ran 150 ms of 270 ms; the worker gets 5/9 of the core, so a sample costs 9 µs of it.
    wall = [0.0015] * 80 + [0.0075] * 20
    us, share = rolling_us_per_sample(wall, own, 300, min_frames=50, quantile=0.2)
    assert (us, share) == pytest.approx((9.0, 5 / 9))
    # too few frames, or times that do not pair up: no estimate (the start-up figure stands)
    assert rolling_us_per_sample(own[:49], own[:49], 300, min_frames=50, quantile=0.2) is None
    assert rolling_us_per_sample(own, own[:60], 300, min_frames=50, quantile=0.2) is None
    assert rolling_us_per_sample([], [], 300, min_frames=0, quantile=0.2) is None
    # the quantile is a step that really happened (no interpolation), at either end
    ramp = [i * 3e-4 for i in range(1, 11)]  # 1..10 µs per sample
    for quantile, expected in [(0.2, 2.0), (0.0, 1.0), (1.0, 10.0)]:
        us, _ = rolling_us_per_sample(ramp, ramp, 300, min_frames=1, quantile=quantile)
        assert us == pytest.approx(expected)


def test_an_estimate_raises_capacity_above_the_start_up_figure_after_a_quiet_spell() -> None:
    # Started beside a noisy neighbour: 64.5 µs at start-up -> 1 stream; real steps show 8.2 µs.
    w = Slot(0, capacity=capacity_for(64.5, 0.8, None), changed_at=0.0)
    assert w.capacity == w.measured_capacity == 1
    estimated = capacity_for(8.2, 0.8, None)
    assert estimated == 3
    assert capacity_after_estimate(w, estimated, 10.0, recovery_s=30.0) is None  # not yet quiet
    assert capacity_after_estimate(w, estimated, 30.0, recovery_s=30.0) == 3
    # capped by max_streams through capacity_for
    assert capacity_for(8.2, 0.8, 2) == 2


def test_an_estimate_lowers_capacity_at_once() -> None:
    w = Slot(0, capacity=6, changed_at=100.0)
    assert capacity_after_estimate(w, 4, 100.0, recovery_s=30.0) == 4
    assert capacity_after_estimate(w, 6, 100.0, recovery_s=30.0) is None  # unchanged
    assert capacity_after_estimate(Slot(1, 6, state="starting"), 2, 0.0, recovery_s=30.0) is None


def test_an_estimate_moves_capacity_by_a_stream_and_five_percent() -> None:
    # at a few streams per core every stream counts, up or down
    assert estimate_moves(4, 3) and estimate_moves(4, 5) and estimate_moves(20, 19)
    assert not estimate_moves(4, 4)
    # at dozens, an estimate wandering by a stream (1.02-1.07 µs/sample: 37-39 streams) does not
    assert [capacity_for(us, 1.0, None) for us in (1.02, 1.05, 1.07)] == [39, 38, 37]
    assert not estimate_moves(38, 37) and not estimate_moves(38, 39)
    assert estimate_moves(38, 36) and estimate_moves(38, 40)
    # a core slowed by a neighbour still moves it at once
    assert estimate_moves(38, capacity_for(2.1, 1.0, None))


def test_a_worker_cut_by_late_frames_climbs_back_one_stream_at_a_time() -> None:
    # Cut from 6 to 4 by late frames: a higher estimate raises the ceiling, not the capacity;
    # the quiet rule then gives back one stream per recovery_s, up to the new ceiling.
    w = Slot(0, capacity=4, measured_capacity=6, changed_at=0.0)
    assert capacity_after_estimate(w, 8, 100.0, recovery_s=30.0) is None
    w.measured_capacity = 8
    assert capacity_after_quiet(w, 100.0, recovery_s=30.0) == 5
    # a late frame restarts the wait
    w.capacity = 5
    assert capacity_after_late(w, 101.0, adaptive=True, recovery_s=30.0) == 4
    w.capacity = 4
    assert capacity_after_quiet(w, 120.0, recovery_s=30.0) is None
    assert capacity_after_estimate(w, 8, 120.0, recovery_s=30.0) is None
    assert capacity_after_quiet(w, 131.0, recovery_s=30.0) == 5
