"""Streams stepped together (models.batching): batched kernel calls give every stream the output
it gets alone, bit for bit; artefacts without the batched functions still run, one by one."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from chainkit import with_shipped_chain

from models.artifact import sha256_file
from models.batching import FrameCall, draw_ahead, split_batches, step_streams
from models.compile import build_artifact
from models.kernel.build import build
from models.kernel.packing import pack_weights
from models.runtime import VocoderRuntime
from models.stream import VocoderStream
from models.vocoder.config import TINY, SynthesisConfig
from models.vocoder.params import random_weights

pytestmark = pytest.mark.slow

# TINY with the shipped voice's whole chain (tests/models/chainkit.py)
CHAIN = with_shipped_chain(TINY)


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(
        random_weights(CHAIN, 0), CHAIN, tmp_path_factory.mktemp("batching") / "chain"
    )


@pytest.fixture(scope="module")
def runtime(chain_dir: Path) -> VocoderRuntime:
    return VocoderRuntime.load(chain_dir)


def open_streams(rt: VocoderRuntime, make_mel, n: int) -> list[VocoderStream]:
    """n streams of different lengths, seeds and mels; one with its own synthesis settings (it
    shares the module, so it batches with the others); every other one finished."""
    streams = []
    for i in range(n):
        synthesis = SynthesisConfig(clip_retries=1) if i == 1 else None
        s = rt.open_stream(seed=100 + i, synthesis=synthesis)
        s.push(make_mel(14 + 3 * i, seed=i))
        if i % 2 == 0:
            s.finish()
        streams.append(s)
    return streams


def run_alone(streams: list[VocoderStream]) -> list[list[np.ndarray]]:
    return [[s.step() for _ in range(s.pending())] for s in streams]


def run_together(streams: list[VocoderStream]) -> list[list[np.ndarray]]:
    outs: list[list[np.ndarray]] = [[] for _ in streams]
    while True:
        ready = [i for i, s in enumerate(streams) if s.pending()]
        if not ready:
            return outs
        for i, pcm in zip(ready, step_streams([streams[i] for i in ready]), strict=True):
            outs[i].append(pcm.copy())


def test_split_batches() -> None:
    assert split_batches(7, (1, 2, 4, 8)) == [4, 2, 1]
    assert split_batches(19, (1, 2, 4, 8)) == [8, 8, 2, 1]
    assert split_batches(3, (1,)) == [1, 1, 1]
    assert split_batches(0, (1, 2)) == []


@pytest.mark.parametrize("n", [1, 3, 8])
def test_streams_stepped_together_equal_streams_stepped_alone(
    runtime: VocoderRuntime, make_mel, n: int
) -> None:
    assert runtime.batch_sizes == (1, 2, 4, 8)
    alone = run_alone(open_streams(runtime, make_mel, n))
    streams = open_streams(runtime, make_mel, n)
    together = run_together(streams)
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert len(a) == len(b) > 0
        assert np.array_equal(np.concatenate(a), np.concatenate(b)), f"stream {i} differs"
    # the chain's redraws ran (each a stream's own kernel call after the batched draw)
    assert sum(s.frames_redrawn for s in streams) > 0
    # the streams then go on as usual: finishing and stepping alone continues them exactly
    for s in streams:
        s.finish()
    rest = run_alone(streams)
    again = open_streams(runtime, make_mel, n)
    run_together(again)
    for s in again:
        s.finish()
    for a, b in zip(rest, run_together(again), strict=True):
        assert len(a) == len(b)
        if a:
            assert np.array_equal(np.concatenate(a), np.concatenate(b))


def test_openings_drawn_ahead_in_slices_make_the_same_audio(
    runtime: VocoderRuntime, make_mel
) -> None:
    """draw_ahead makes an opening's kernel frames a round at a time without stepping; the
    streams' audio is what they make alone, and their first step then draws nothing."""
    alone = run_alone(open_streams(runtime, make_mel, 3))
    streams = open_streams(runtime, make_mel, 3)
    kernel0 = [s.kernel_frames for s in streams]
    slices = 0
    while not draw_ahead(streams, 1):
        slices += 1
        assert any(s.kernel_frame_due() for s in streams)
    # an opening of the shipped chain needs many kernel frames: one round per slice
    assert slices >= 5
    drawn = [s.kernel_frames - k for s, k in zip(streams, kernel0, strict=True)]
    assert max(drawn) == slices + 1  # the longest opening: a round per call, the last one too
    assert draw_ahead(streams, 1)  # nothing more to draw: done at once
    firsts = step_streams(streams)
    assert [s.kernel_frames - k for s, k in zip(streams, kernel0, strict=True)] == drawn
    outs = [[f.copy()] for f in firsts]
    for out, more in zip(outs, run_together(streams), strict=True):
        out.extend(more)
    for i, (a, b) in enumerate(zip(alone, outs, strict=True)):
        assert np.array_equal(np.concatenate(a), np.concatenate(b)), f"stream {i} differs"


def test_run_frames_uses_the_batch_sizes_and_equals_run_frame(runtime: VocoderRuntime) -> None:
    """7 streams: one call of 4, one of 2 and one alone (with its own logit scale)."""
    c, hop = runtime.config, runtime.config.hop_length
    rng = np.random.default_rng(5)

    def call(i: int) -> FrameCall:
        return FrameCall(
            cond=rng.uniform(-1, 1, (2, c.cond_size)).astype(np.float32),
            lpc=rng.uniform(-0.1, 0.1, c.lpc_order).astype(np.float32),
            src=rng.uniform(-1, 1, (hop, 2)).astype(np.float32),
            uniforms=rng.random(hop, dtype=np.float32),
            h=rng.uniform(-0.9, 0.9, c.hidden_size).astype(np.float32),
            x=rng.uniform(-0.5, 0.5, 3 + c.lpc_order).astype(np.float32),
            out=np.zeros(hop, np.int32),
            pcm=np.zeros(hop, np.float32),
            logit_scale=(1.0, 0.75, 1.2)[i % 3],
        )

    calls = [call(i) for i in range(7)]
    alone = [dataclasses.replace(k, h=k.h.copy(), x=k.x.copy(), out=k.out.copy()) for k in calls]
    alone = [dataclasses.replace(k, pcm=k.pcm.copy()) for k in alone]
    assert runtime.run_frames(calls) == [4, 2, 1]
    for k in alone:
        assert runtime.run_frames([k]) == [1]  # "main", alone
    for a, b in zip(alone, calls, strict=True):
        for field in ("h", "x", "out", "pcm"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert len({k.out.tobytes() for k in calls}) == 7


def test_artefact_without_batched_functions_runs_streams_one_by_one(
    chain_dir: Path, tmp_path: Path, make_mel
) -> None:
    """An artefact compiled for kernel ABI 9 (before the batched functions) still loads: its
    runtime says it cannot batch, and step_streams runs each stream's frames alone."""
    old = Path(shutil.copytree(chain_dir, tmp_path / "old"))
    manifest = json.loads((old / "manifest.json").read_text())
    shape, _ = pack_weights(random_weights(CHAIN, 0), CHAIN)
    for isa, info in manifest["isas"].items():
        build(shape, isa, batches=()).export_library(str(old / info["file"]))
        manifest["files"][info["file"]] = sha256_file(old / info["file"])
    manifest["kernel_abi"] = 9
    (old / "manifest.json").write_text(json.dumps(manifest))
    rt = VocoderRuntime.load(old)
    assert rt.batch_sizes == (1,)
    alone = run_alone(open_streams(VocoderRuntime.load(chain_dir), make_mel, 3))
    together = run_together(open_streams(rt, make_mel, 3))
    for a, b in zip(alone, together, strict=True):
        assert np.array_equal(np.concatenate(a), np.concatenate(b))


def test_step_streams_refuses_what_step_refuses(runtime: VocoderRuntime, make_mel) -> None:
    s = runtime.open_stream()
    with pytest.raises(RuntimeError, match="no frame ready"):
        step_streams([s])
    s.push(make_mel(12))
    s.finish()
    with pytest.raises(ValueError, match="twice"):
        step_streams([s, s])
    with pytest.raises(RuntimeError, match="no kernel frame due|without begin_frame"):
        s.end_frame()
