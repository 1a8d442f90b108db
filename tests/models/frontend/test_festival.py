"""Warm Festival processes and their pool, against the real Festival installation."""

from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from models.frontend import festival_pool
from models.frontend.festival import FestivalFailed, FestivalProcess
from models.frontend.festival_pool import FestivalBusy, FestivalPool

pytestmark = pytest.mark.festival

VOICE = "cmu_us_slt_arctic_hts"


@pytest.fixture(scope="module")
def binary() -> str:
    path = shutil.which("festival")
    assert path, "Festival must be installed for these tests"
    return path


def test_process_speaks_at_festivals_rate(binary: str) -> None:
    proc = FestivalProcess(binary)
    try:
        audio, sr = proc.speak("Hello there.", VOICE, 1.0, timeout_s=30.0)
        assert sr == 32_000 and audio.dtype == np.float32 and 0.5 < audio.size / sr < 3.0
        slow, _ = proc.speak("Hello there.", VOICE, 0.5, timeout_s=30.0)
        again, _ = proc.speak("Hello there.", VOICE, 1.0, timeout_s=30.0)
        assert slow.size > 1.6 * audio.size
        np.testing.assert_array_equal(again, audio)  # the speed did not stick
        assert proc.uses == 3 and proc.alive()
    finally:
        proc.close()
    assert not proc.alive()


def test_voice_names_never_carry_scheme(binary: str) -> None:
    proc = FestivalProcess(binary)
    try:
        with pytest.raises(ValueError, match="voice name"):
            proc.speak("Hello.", '(system "true")', 1.0, timeout_s=30.0)
    finally:
        proc.close()


def test_busy_pool_waits_then_refuses(binary: str) -> None:
    pool = FestivalPool(binary, size=1)
    try:
        with (
            pool.process(5.0) as held,
            pytest.raises(FestivalBusy, match="all 1 Festival processes"),
            pool.process(0.3),
        ):
            pass
        with pool.process(0.3) as again:  # free again, and the same warm process
            assert again is held
        assert pool.started == 1
    finally:
        pool.close()


def test_a_process_that_failed_is_not_reused(binary: str) -> None:
    pool = FestivalPool(binary, size=1)
    try:
        with pytest.raises(RuntimeError), pool.process(5.0) as first:
            raise RuntimeError("the sentence failed")
        assert not first.alive()
        with pool.process(5.0) as second:
            assert second is not first and second.alive()
        assert pool.started == 2
    finally:
        pool.close()


def test_processes_retire_after_max_uses(binary: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(festival_pool, "MAX_USES", 2)
    pool = FestivalPool(binary, size=1)
    try:
        procs = []
        for _ in range(3):
            with pool.process(5.0) as proc:
                proc.speak("Hi.", VOICE, 1.0, timeout_s=30.0)
                procs.append(proc)
        assert procs[0] is procs[1] and procs[2] is not procs[1] and not procs[1].alive()
    finally:
        pool.close()


def test_a_retired_process_is_replaced_in_advance(
    binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(festival_pool, "MAX_USES", 1)
    pool = FestivalPool(binary, size=1)
    try:
        with pool.process(5.0) as first:
            first.speak("Hi.", VOICE, 1.0, timeout_s=30.0)
        # its successor starts at once, voice loaded, before any text asks for it
        deadline = time.monotonic() + 60.0
        while pool.counts() != (0, 1):
            assert time.monotonic() < deadline, pool.counts()
            time.sleep(0.05)
        assert not first.alive() and pool.started == 2
        with pool.process(5.0) as successor:
            assert successor is not first and successor.voice == VOICE and successor.uses == 0
    finally:
        pool.close()


def test_warm_and_close(binary: str) -> None:
    pool = FestivalPool(binary, size=2)
    pool.warm(3)  # no more than the pool's size
    assert pool.started == 2
    with pool.process(1.0) as proc:
        assert proc.alive()
    pool.close()
    assert not proc.alive()
    with pytest.raises(FestivalFailed, match="closed"), pool.process(1.0):
        pass


def test_warm_loads_the_voice(binary: str) -> None:
    pool = FestivalPool(binary, size=1)
    try:
        pool.warm(1, VOICE)
        with pool.process(1.0) as proc:
            assert proc.voice == VOICE  # the first sentence does not wait for the voice
            audio, _ = proc.speak("Hi.", VOICE, 1.0, timeout_s=30.0)
            assert audio.size > 0
        with pytest.raises(ValueError, match="not a Festival voice"):
            proc.use_voice("voice_x) (system", 1.0)
    finally:
        pool.close()


def test_a_festival_that_cannot_start(tmp_path: Path) -> None:
    dead = tmp_path / "dead-festival"
    dead.write_text("#!/bin/sh\necho 'no voices here' >&2\nexit 2\n")
    dead.chmod(dead.stat().st_mode | stat.S_IXUSR)
    pool = FestivalPool(str(dead), size=1)
    for _ in range(2):  # its place in the pool is given back each time
        with pytest.raises(FestivalFailed, match="no voices here"), pool.process(1.0):
            pass
    with pytest.raises(ValueError, match="at least one"):
        FestivalPool(str(dead), size=0)
