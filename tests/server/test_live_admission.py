"""Integration: streams started together, as `sparrow loadtest` starts them, on a core whose
capacity fits them, cost no capacity: their openings (the frames computed before the first audio)
are first audio, not late frames.

Each case gets its own real uvicorn + one worker on one core, and drives it with the loadtest's
own client.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from serverkit import LiveServer, metric_value

from server.loadtest.client import Plan, run_load
from server.loadtest.report import Progress

pytestmark = [pytest.mark.anyio, pytest.mark.live, pytest.mark.slow]
CORE = min(os.sched_getaffinity(0))
STREAMS = 4


def worker(live: LiveServer) -> dict[str, Any]:
    with live.client() as c:
        ready = c.get("/readyz").json()
        models = c.get("/v1/models").json()
    (status,) = ready["workers"]
    (card_status,) = models["data"][0]["workers"]
    assert card_status["capacity"] == status["capacity"]
    return status


@pytest.mark.parametrize(
    ("buffer_s", "frames"),
    [
        # No playback buffer and one-frame utterances: every frame is an opening, sent after its
        # input arrived; counted as late frames they would cut the capacity.
        (0.0, 1),
        # Whole utterances with a buffer: the frames after each opening keep real time.
        (0.5, 200),
    ],
)
async def test_streams_started_together_cost_no_capacity(
    server_with: Callable[..., LiveServer],
    make_mel: Callable[..., np.ndarray],
    buffer_s: float,
    frames: int,
) -> None:
    live = server_with(cores=[CORE], max_streams=STREAMS, initial_buffer_s=buffer_s)
    before = worker(live)
    assert before["capacity"] == STREAMS
    plan = Plan(
        url=live.url,
        streams=STREAMS,
        requests=STREAMS * 3,
        duration=None,
        http=False,
        mel=make_mel(frames),
        text=None,
        api_key=None,
        voice=None,
        buffer_s=buffer_s,
        timeout=60.0,
        chunk_frames=max(frames, 1),
    )
    results, _ = await run_load(plan, Progress(False, plan.requests, None))
    assert [(r.refused, r.error) for r in results if not r.ok] == []
    assert len(results) == STREAMS * 3 and all(r.samples == frames * 300 for r in results)
    assert sum(r.late_frames for r in results) == 0  # the clients' own count
    with live.client() as c:
        text = c.get("/metrics").text
    assert metric_value(text, "sparrow_late_frames_total") == 0
    after = worker(live)
    assert after["capacity"] == before["capacity"] == STREAMS
    assert metric_value(text, "sparrow_stream_capacity", {"core": str(CORE)}) == STREAMS
