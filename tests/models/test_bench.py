"""`sparrow bench` runs end to end and reports every engine (speed itself is never asserted)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from chainkit import with_shipped_chain

from models.compile import build_artifact
from models.vocoder.config import TINY
from models.vocoder.params import random_weights

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(
        random_weights(TINY, 0), TINY, tmp_path_factory.mktemp("b") / "tiny", isas=["avx2"]
    )


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    # A subprocess: bench pins its own process to one core.
    return subprocess.run(
        [sys.executable, "-m", "server", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bench_json_reports_all_engines(tiny_model: Path) -> None:
    proc = run_bench(
        "--model",
        str(tiny_model),
        "--frames",
        "2",
        "--repeats",
        "2",
        "--numpy-repeats",
        "1",
        "--torch-steps",
        "30",
        "--torch-repeats",
        "1",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    engines = [r["engine"] for r in report["results"]]
    assert engines[:2] == ["tvm avx2 kernel only", "tvm avx2 stream"]
    assert "numpy reference" in engines
    try:
        import torch  # noqa: F401

        assert "pytorch eager (dense)" in engines
    except ImportError:
        assert not any("pytorch" in e for e in engines)
    for r in report["results"]:
        assert 0 < r["min_us_per_sample"] <= r["median_us_per_sample"]
        assert r["budget_share"] == pytest.approx(r["min_us_per_sample"] / 40.0)
    assert report["config"]["hidden_size"] == TINY.hidden_size
    assert report["stream_frames_redrawn"] == 0  # clip_retries is off
    assert "benchmarking on core" in proc.stderr  # progress line


def test_bench_says_when_the_stream_redrew_frames(tmp_path: Path) -> None:
    """The tiny random model clips every frame; with clip_retries the stream rows include the
    redraws, and the report says how many."""
    config = dataclasses.replace(TINY, clip_retries=1)
    model = build_artifact(random_weights(TINY, 0), config, tmp_path / "guarded", isas=["avx2"])
    args = (
        "--model",
        str(model),
        "--frames",
        "2",
        "--repeats",
        "2",
        "--numpy-repeats",
        "1",
        "--no-torch",
    )
    proc = run_bench(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    redrawn = json.loads(proc.stdout)["stream_frames_redrawn"]
    assert 0 < redrawn <= 3 * 2  # a warm-up call and 2 timed ones, 2 frames each, 1 redraw at most
    proc = run_bench(*args)
    assert proc.returncode == 0 and "redrawn frames (clip_retries)" in proc.stdout


def test_bench_table_and_bad_core(tiny_model: Path) -> None:
    proc = run_bench(
        "--model",
        str(tiny_model),
        "--frames",
        "1",
        "--repeats",
        "1",
        "--numpy-repeats",
        "1",
        "--no-torch",
    )
    assert proc.returncode == 0, proc.stderr
    assert "min us/sample" in proc.stdout and "tvm avx2 stream" in proc.stdout
    proc = run_bench("--model", str(tiny_model), "--core", "4096")
    assert proc.returncode != 0 and "not available" in proc.stderr


def test_engines_are_timed_round_robin() -> None:
    from models.bench import Engine, time_interleaved

    calls: list[str] = []
    engines = [
        Engine(n, lambda n=n: calls.append(n), reps, 10)
        for n, reps in (("a", 3), ("b", 1), ("c", 2))
    ]
    ticks: list[int] = []
    time_interleaved(engines, lambda: ticks.append(1))
    # one warm-up call each, then rounds; an engine drops out once its repeats are done
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "c", "a"]
    assert [len(e.times) for e in engines] == [3, 1, 2] and len(ticks) == 6
    assert all(t >= 0 for e in engines for t in e.times)


def test_bench_stages_cover_the_whole_step(tmp_path: Path) -> None:
    """`--stages` on a tiny model with the shipped voice's post-kernel chain (LPC, postfilter,
    envelope passes with smoothing, redraws): every stage is reported, and with the glue (the
    whole step less the stages) their shares add up to the whole step."""
    config = with_shipped_chain(TINY)
    model = build_artifact(random_weights(config, 0), config, tmp_path / "tiny", isas=["avx2"])
    proc = run_bench("--model", str(model), "--stages", "--frames", "3", "--repeats", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    stages = {r["stage"]: r for r in report["stages"]}
    for name in (
        "kernel call",
        "LPC fit + pitch + source (batched)",
        "redraw check (+ state copy)",
        "pitch postfilter",
        "PCM16 conversion",
        "Python glue (whole step - stages)",
    ):
        assert name in stages
    assert [n for n in stages if n.startswith("envelope pass")] == [
        f"envelope pass {i + 1}" for i in range(config.envelope_passes)
    ]
    assert sum(r["share"] for r in report["stages"]) == pytest.approx(1.0)
    total = report["whole_step_us_per_sample"]
    assert sum(r["min_us_per_sample"] for r in report["stages"]) == pytest.approx(total)
    assert all(
        r["min_us_per_sample"] > 0 for r in report["stages"] if not r["stage"].startswith("Python")
    )
    envelope = sum(v["min_us_per_sample"] for n, v in stages.items() if n.startswith("envelope"))
    # the passes run the compiled frame (models/kernel/chain_load.py): no numpy breakdown
    assert report["envelope_compiled"] and report["envelope_breakdown"] == []
    assert envelope > 0
    assert report["budget_share"] == pytest.approx(total / 40.0)
    proc = run_bench("--model", str(model), "--stages", "--frames", "2", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert "whole step" in proc.stdout and "envelope pass 3" in proc.stdout


def test_bench_batch_times_the_kernel_per_stream_at_each_batch_size(tiny_model: Path) -> None:
    args = ("--model", str(tiny_model), "--frames", "1", "--repeats", "2", "--isa", "avx2")
    proc = run_bench(*args, "--batch", "8,2,4", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["isa"] == "avx2"
    # B = 1 always, the kernel alone and a worker's group step at each B, interleaved
    assert [r["batch"] for r in report["results"]] == [1, 2, 4, 8] * 2
    assert [r["engine"] for r in report["results"]] == [
        f"tvm avx2 {path} B={b}" for path in ("kernel", "stream path") for b in (1, 2, 4, 8)
    ]
    for path in ("kernel", "stream"):
        rows = [r for r in report["results"] if r["path"] == path]
        for r in rows:
            assert r["repeats"] == 2 and 0 < r["min_us_per_sample"] <= r["median_us_per_sample"]
            assert r["speedup_vs_b1"] == pytest.approx(
                rows[0]["min_us_per_sample"] / r["min_us_per_sample"]
            )
    assert report["pytorch_eager_us_per_sample"] > 0  # the same run's PyTorch eager
    proc = run_bench(*args, "--batch", "1,4", "--no-torch")
    assert proc.returncode == 0, proc.stderr
    assert "stream path" in proc.stdout and proc.stdout.count("x ") >= 4
    assert "pytorch" not in proc.stdout
    proc = run_bench(*args, "--batch", "3")
    assert proc.returncode != 0 and "no batched function for B = 3" in proc.stderr
    proc = run_bench(*args, "--batch", "0,x")
    assert proc.returncode != 0 and "--batch" in proc.stderr
