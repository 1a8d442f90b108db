"""Streams run the compiled envelope frame, built once into the cache directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.bench import speech_mel
from models.runtime import VocoderRuntime
from models.vocoder.config import TINY
from models.vocoder.reference import vocode

SETTINGS = dataclasses.replace(
    TINY, envelope_passes=2, envelope_clip=1.5, envelope_smoothing=1.0, envelope_smoothing_hz=3500
).synthesis


def test_streams_use_the_cached_compiled_frame_with_the_reference_audio(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rt = VocoderRuntime.load(tiny_model_dir, cache_dir=tmp_path).with_synthesis(SETTINGS)
    mel = speech_mel(24)
    passes = rt.open_stream(seed=0)._chain.envelope
    assert len(passes) == 2 and all(p.kernel is not None for p in passes)
    compiled = np.concatenate(list(rt.generate(mel, seed=1)))
    (cached,) = (tmp_path / "envelope").glob(f"{rt.isa}-3500hz-float64-*.so")
    assert np.array_equal(compiled, vocode(rt.weights, rt.config, mel, seed=1))
    rt.compiled_chain = False
    assert np.array_equal(compiled, np.concatenate(list(rt.generate(mel, seed=1))))
    # another runtime on the same cache loads the frame built above
    again = VocoderRuntime.load(tiny_model_dir, cache_dir=tmp_path).with_synthesis(SETTINGS)
    stamp = cached.stat().st_mtime_ns
    assert np.array_equal(compiled, np.concatenate(list(again.generate(mel, seed=1))))
    assert cached.stat().st_mtime_ns == stamp


def test_a_cache_that_cannot_be_written_still_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    rt = VocoderRuntime.load(tiny_model_dir, cache_dir=blocked).with_synthesis(SETTINGS)
    mel = speech_mel(12)
    assert rt.envelope_kernel(rt.config) is not None  # built in memory
    assert np.array_equal(
        np.concatenate(list(rt.generate(mel, seed=2))), vocode(rt.weights, rt.config, mel, seed=2)
    )


def test_prebuild_fills_the_cache_for_every_shipped_isa(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from models.kernel.chain_load import prebuild

    voice = tmp_path / "compiled" / "voice"
    shutil.copytree(tiny_model_dir, voice)
    assert prebuild(tmp_path / "compiled", tmp_path / "cache") == []  # no passes: nothing
    config = json.loads((voice / "config.json").read_text())
    (voice / "config.json").write_text(json.dumps({**config, "envelope_passes": 1}))
    built = prebuild(tmp_path / "compiled", tmp_path / "cache")
    isas = json.loads((voice / "manifest.json").read_text())["isas"]
    assert built and sorted(p.name.split("-")[0] for p in built) == sorted(isas)


def test_no_compiler_to_link_with_keeps_the_frame_in_memory(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slim image has no C compiler: TVM cannot link the library to cache, the frame still runs.
    monkeypatch.setenv("CXX", "/bin/false")
    rt = VocoderRuntime.load(tiny_model_dir, cache_dir=tmp_path).with_synthesis(
        dataclasses.replace(SETTINGS, envelope_smoothing_hz=2500.0)
    )
    mel = speech_mel(12)
    assert rt.envelope_kernel(rt.config) is not None
    assert not list((tmp_path / "envelope").glob("*.so"))
    assert np.array_equal(
        np.concatenate(list(rt.generate(mel, seed=3))), vocode(rt.weights, rt.config, mel, seed=3)
    )
