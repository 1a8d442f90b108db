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
    capacity_after_late,
    capacity_after_quiet,
    pick_worker,
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
