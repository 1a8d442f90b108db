"""The worker pool with real pinned processes: audio over IPC, admission, death and restart,
drain."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.dsp.features import MelInputError
from models.runtime import VocoderRuntime
from models.vocoder.config import SynthesisConfig
from server.audio import float_to_pcm16
from server.errors import NoCapacity, NotReady, WorkerDied, map_error
from server.metrics import Metrics
from server.workers.admission import capacity_for
from server.workers.pool import Flushed, StreamHandle, WorkerPool

pytestmark = pytest.mark.anyio
CORES = sorted(os.sched_getaffinity(0))


async def read_utterance(h: StreamHandle) -> bytes:
    out = b""
    while True:
        ev = await asyncio.wait_for(h.read(), 30)
        if isinstance(ev, Flushed):
            assert ev.samples * 2 == len(out)
            return out
        out += ev


def make_pool(model_dir: Path, cores: list[int] | None = None, **kw: Any) -> WorkerPool:
    return WorkerPool(model_dir, cores or CORES, Metrics(), **kw)


async def started(pool: WorkerPool) -> WorkerPool:
    await pool.start()
    await pool.wait_ready(60)
    return pool


@pytest.fixture
async def pool(tiny_model_dir: Path) -> AsyncIterator[WorkerPool]:
    p = await started(make_pool(tiny_model_dir))
    yield p
    await p.stop()


def test_capacity_formula() -> None:
    assert capacity_for(5.0, 0.8, None) == 6  # floor(0.8 * 40 / 5)
    assert capacity_for(5.0, 0.8, 2) == 2
    assert capacity_for(100.0, 0.8, None) == 1  # slower than real time: still one stream


async def test_pool_audio_matches_the_runtime(
    pool: WorkerPool, tiny_model_dir: Path, make_mel: Callable[..., np.ndarray]
) -> None:
    mel = make_mel(33, seed=4)
    rt = VocoderRuntime.load(tiny_model_dir)
    expected = b"".join(float_to_pcm16(f) for f in rt.generate(mel, seed=11))
    whole = pool.open_stream(seed=11)
    whole.push(mel)
    whole.finish()
    chunked = pool.open_stream(seed=11)
    for i in range(0, 33, 4):
        chunked.push(mel[i : i + 4])
    chunked.finish()
    try:
        assert await read_utterance(whole) == expected
        assert await read_utterance(chunked) == expected
        assert whole.first_audio_at is not None and whole.compute_s > 0
        assert 0 < whole.real_time_factor < 5
    finally:
        whole.close()
        chunked.close()
    assert pool.streams_in_flight == 0
    status = pool.worker_status()
    assert all(
        w["state"] == "ready" and w["us_per_sample"] > 0 and w["capacity"] >= 1 for w in status
    )
    assert {w["core"] for w in status} == set(CORES)
    assert pool.model_info["name"] == tiny_model_dir.name


async def test_admission_and_least_loaded_placement(tiny_model_dir: Path) -> None:
    pool = await started(make_pool(tiny_model_dir, max_streams=1))
    try:
        handles = [pool.open_stream() for _ in CORES]
        assert sorted(h.core for h in handles) == CORES  # one per worker, not two on one
        with pytest.raises(NoCapacity, match="at capacity"):
            pool.open_stream()
        handles.pop().close()
        pool.open_stream().close()  # the freed slot is usable again
        text = pool.metrics.render().decode()
        assert 'sparrow_streams_refused_total{reason="capacity"} 1.0' in text
    finally:
        await pool.stop()


def core_metric(pool: WorkerPool, name: str, core: int) -> float:
    """The value of sample `name`{core=...} in the pool's exposition, via the official parser."""
    families = text_string_to_metric_families(pool.metrics.render().decode())
    return next(
        s.value
        for f in families
        for s in f.samples
        if s.name == name and s.labels == {"core": str(core)}
    )


LATE_BUFFER_S = -1.0
"""A playback buffer that makes every frame after an utterance's opening due before its stream's
first audio: the overload these tests need, without loading the machine (an opening itself is
first audio and never late)."""


async def late_utterances(pool: WorkerPool, n: int, make_mel: Callable[..., np.ndarray]) -> list:
    """Open n streams and vocode a 4-frame utterance on each; with a negative playback buffer
    (LATE_BUFFER_S) the three frames after each opening are late."""
    handles = [pool.open_stream(seed=i) for i in range(n)]
    for h in handles:
        h.push(make_mel(4))
        h.finish()
    for h in handles:
        await read_utterance(h)
    return handles


async def test_late_frames_lower_capacity_until_a_quiet_spell(
    tiny_model_dir: Path, make_mel: Callable[..., np.ndarray]
) -> None:
    # recovery_s=6: one cut per second at most, one stream back per 6 quiet seconds.
    pool = await started(
        make_pool(
            tiny_model_dir,
            cores=CORES[:1],
            max_streams=4,
            initial_buffer_s=LATE_BUFFER_S,
            recovery_s=6.0,
        )
    )
    w = pool.workers[0]
    try:
        assert w.capacity == w.measured_capacity == 4
        handles = await late_utterances(pool, 3, make_mel)
        assert core_metric(pool, "sparrow_late_frames_total", w.core) == 9
        # Three streams' late reports in one burst cost one stream of capacity, not three.
        assert w.capacity == 3
        assert core_metric(pool, "sparrow_stream_capacity", w.core) == 3
        with pytest.raises(NoCapacity):  # the measured figure (4) would have let a 4th in
            pool.open_stream()
        status = pool.worker_status()[0]
        assert (status["capacity"], status["measured_capacity"]) == (3, 4)
        for h in handles:
            h.close()
        # Back to the measured capacity after a quiet spell, and no further.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while w.capacity < 4 and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert w.capacity == 4 and core_metric(pool, "sparrow_stream_capacity", w.core) == 4
        await asyncio.sleep(2.0)
        assert w.capacity == 4
        pool.open_stream().close()
    finally:
        await pool.stop()


async def test_capacity_stays_as_measured_without_adaptation(
    tiny_model_dir: Path, make_mel: Callable[..., np.ndarray]
) -> None:
    pool = await started(
        make_pool(
            tiny_model_dir,
            cores=CORES[:1],
            max_streams=4,
            initial_buffer_s=LATE_BUFFER_S,
            adaptive=False,
        )
    )
    try:
        handles = await late_utterances(pool, 3, make_mel)
        assert core_metric(pool, "sparrow_late_frames_total", CORES[0]) == 9
        assert pool.workers[0].capacity == 4
        pool.open_stream().close()
        for h in handles:
            h.close()
    finally:
        await pool.stop()


async def test_killed_worker_fails_its_streams_and_comes_back(
    tiny_model_dir: Path, make_mel: Callable[..., np.ndarray]
) -> None:
    pool = await started(make_pool(tiny_model_dir, cores=CORES[:1]))
    try:
        victim = pool.open_stream()
        victim.push(make_mel(4000))  # long enough to be mid-stream when the worker dies
        await asyncio.wait_for(victim.read(), 30)
        os.kill(pool.workers[0].pid, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            while True:
                await asyncio.wait_for(victim.read(), 30)
        with pytest.raises(WorkerDied):  # a failed stream stays failed
            victim.push(make_mel(3))
        victim.close()
        assert pool.streams_in_flight == 0
        await pool.wait_ready(60)
        assert pool.workers[0].restarts == 1
        assert (
            f'sparrow_worker_restarts_total{{core="{CORES[0]}"}} 1.0'
            in pool.metrics.render().decode()
        )
        again = pool.open_stream(seed=1)
        again.push(make_mel(5))
        again.finish()
        assert len(await read_utterance(again)) == 5 * 300 * 2
        again.close()
    finally:
        await pool.stop()


async def test_a_mel_the_worker_rejects_is_an_input_error_not_a_crash(
    pool: WorkerPool, make_mel: Callable[..., np.ndarray]
) -> None:
    # The routes validate mels first; the worker checks again, and its refusal must still reach
    # the client as the bad input it is (422 invalid_mel), with the worker left serving.
    bad = make_mel(6)
    bad[2, 5] = np.nan
    h = pool.open_stream()
    h.push(bad)
    with pytest.raises(MelInputError, match="non-finite"):
        await asyncio.wait_for(h.read(), 30)
    h.close()
    assert map_error(MelInputError("x")).status == 422
    again = pool.open_stream(seed=2)
    again.push(make_mel(3))
    again.finish()
    assert len(await read_utterance(again)) == 3 * 300 * 2
    again.close()
    assert all(w.restarts == 0 for w in pool.workers)


async def test_a_model_that_does_not_load_is_fatal(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "weights.npz").write_bytes(b"not a zip")  # sha256 no longer matches the manifest
    pool = make_pool(broken, cores=CORES[:1])
    fatal: list[str] = []
    pool.on_fatal = fatal.append
    await pool.start()
    try:
        with pytest.raises(RuntimeError, match="corrupt"):
            await pool.wait_ready(60)
        assert fatal and "weights.npz" in fatal[0]
        assert not pool.ready
        with pytest.raises(NotReady, match="could not load"):
            pool.open_stream()
    finally:
        await pool.stop()


async def test_drain_refuses_new_streams_and_waits_for_open_ones(
    pool: WorkerPool, make_mel: Callable[..., np.ndarray]
) -> None:
    h = pool.open_stream()
    h.push(make_mel(10))
    h.finish()
    drain = asyncio.ensure_future(pool.drain(timeout=30))
    await asyncio.sleep(0.05)
    assert not pool.ready and not drain.done()
    with pytest.raises(NotReady, match="shutting down"):
        pool.open_stream()
    await read_utterance(h)
    h.close()
    assert await asyncio.wait_for(drain, 10) is True


async def test_drain_gives_up_after_its_timeout(pool: WorkerPool) -> None:
    h = pool.open_stream()
    assert await pool.drain(timeout=0.2) is False
    h.close()


async def test_server_and_stream_synthesis_settings_need_no_recompiling(
    tiny_model_dir: Path, make_mel: Callable[..., np.ndarray]
) -> None:
    """A pool given synthesis settings runs its workers with them (the artefact untouched), and
    a stream may bring its own on top."""
    server_wide = SynthesisConfig(pitch_postfilter=0.5, output_advance=40)
    own = SynthesisConfig(envelope_passes=1)
    mel = make_mel(12, seed=2)
    rt = VocoderRuntime.load(tiny_model_dir)

    def expected(s: SynthesisConfig | None) -> bytes:
        return b"".join(float_to_pcm16(f) for f in rt.generate(mel, seed=3, synthesis=s))

    pool = await started(make_pool(tiny_model_dir, cores=CORES[:1], synthesis=server_wide))
    try:
        assert pool.model_info["config"]["pitch_postfilter"] == 0.5
        handles = [pool.open_stream(seed=3), pool.open_stream(seed=3, synthesis=own)]
        for h in handles:
            h.push(mel)
            h.finish()
        got = [await read_utterance(h) for h in handles]
        for h in handles:
            h.close()
    finally:
        await pool.stop()
    assert got == [expected(server_wide), expected(own)] and got[0] != expected(None)


async def test_capacity_follows_the_rolling_estimate_above_the_start_up_figure(
    tiny_model_dir: Path, make_mel: Callable[..., np.ndarray]
) -> None:
    pool = await started(
        make_pool(
            tiny_model_dir,
            cores=CORES[:1],
            max_streams=4,
            recovery_s=1.0,
            estimate_s=0.05,
            estimate_min_frames=64,
        )
    )
    w = pool.workers[0]
    try:
        status = pool.worker_status()[0]
        assert status["estimate_frames"] == 0 and status["core_share"] is None
        assert status["us_per_sample"] == status["startup_us_per_sample"] > 0
        assert status["capacity"] == status["measured_capacity"] == status["startup_capacity"]
        # As if the start-up measurement had run beside a noisy neighbour: one stream.
        w.capacity = w.measured_capacity = w.startup_capacity = 1
        h = pool.open_stream()
        with pytest.raises(NoCapacity):
            pool.open_stream()
        h.push(make_mel(200))
        h.finish()
        await read_utterance(h)
        h.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while w.capacity < 4 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        status = pool.worker_status()[0]
        # The tiny model's real steps allow far more than max_streams: capped there.
        assert capacity_for(status["us_per_sample"], pool.headroom, None) > 4
        assert (status["capacity"], status["measured_capacity"], status["startup_capacity"]) == (
            4,
            4,
            1,
        )
        assert status["estimate_frames"] >= 64 and 0 < status["core_share"] <= 1
        assert core_metric(pool, "sparrow_stream_capacity", w.core) == 4
        assert core_metric(pool, "sparrow_measured_sample_seconds", w.core) == pytest.approx(
            status["us_per_sample"] * 1e-6
        )
        handles = [pool.open_stream() for _ in range(4)]
        for h in handles:
            h.close()
    finally:
        await pool.stop()
