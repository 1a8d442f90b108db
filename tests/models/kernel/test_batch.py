"""The batched frame kernel against B separate B = 1 calls: the same samples, state and PCM, bit
for bit, for every stream, frame after frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tvm

from models.artifact import load_checked
from models.dsp.pitch import source
from models.kernel.batch import BATCH_SIZES, batch_function_name
from models.kernel.build import build
from models.kernel.isa import host_isas
from models.kernel.packing import logit_arg_positions, pack_weights
from models.vocoder import conditioning, excitation, params
from models.vocoder.config import TINY, VocoderConfig

pytestmark = pytest.mark.slow

FRAMES = 4
LPC = dataclasses.replace(TINY, lpc_order=8)
# (ISA, config): every ISA level this CPU runs (each has its own SpMM) and the generic (host
# fallback) variant, with LPC (the prediction and its history are per-stream state); and the
# session's tiny compiled model (tests/conftest.py: TINY, no LPC, the host's best ISA).
CASES = [*((isa, LPC) for isa in host_isas()), ("generic", LPC), ("session tiny model", TINY)]

Module = tuple[tvm.runtime.Module, VocoderConfig, dict[str, np.ndarray], list[np.ndarray]]


@pytest.fixture(scope="module", params=CASES, ids=[f"{i}-lpc{c.lpc_order}" for i, c in CASES])
def module(request: pytest.FixtureRequest) -> Module:
    isa, config = request.param
    if isa == "session tiny model":
        model_dir = request.getfixturevalue("tiny_model_dir")
        manifest, config, w = load_checked(model_dir)
        (info,) = manifest["isas"].values()
        _, wargs = pack_weights(w, config)
        return tvm.runtime.load_module(str(model_dir / info["file"])), config, w, wargs
    w = params.random_weights(config, 0)
    shape, wargs = pack_weights(w, config)
    assert shape.source
    if isa == "generic":
        mod = build(shape, None, target={"kind": "llvm", "mcpu": "x86-64", "num-cores": 1})
    else:
        mod = build(shape, isa)
    return mod, config, w, wargs


def stream_inputs(w: dict[str, np.ndarray], c: VocoderConfig, seed: int) -> dict[str, np.ndarray]:
    """One stream's inputs for FRAMES frames: its own mel, conditioning, LPC, sine source,
    uniforms and logit scales, and a non-zero starting state."""
    rng = np.random.default_rng(seed)
    mel = rng.normal(-5, 2, size=(FRAMES + 1, c.n_mels)).astype(np.float32)
    src, _ = source(
        rng.uniform(120, 300, FRAMES), rng.uniform(0.0, 1.0, FRAMES), c.hop_length, c.sample_rate
    )
    return {
        "cond": conditioning.condition(mel, w, c),
        "lpc": excitation.frame_lpc(mel, c) if c.lpc_order else np.zeros((FRAMES, 1), np.float32),
        "src": src.reshape(FRAMES, c.hop_length, 2),
        "uniforms": rng.random((FRAMES, c.hop_length), dtype=np.float32),
        "h": rng.uniform(-0.9, 0.9, c.hidden_size).astype(np.float32),
        "x": rng.uniform(-0.5, 0.5, 3 + c.lpc_order).astype(np.float32),
        # a stream's voicing temperature (1: none) differs frame to frame and stream to stream
        "scale": rng.choice(np.float32([1.0, 0.75, 1.2, 1.0 / 3.0]), FRAMES),
    }


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_batched_call_equals_separate_calls(module: Module, batch: int) -> None:
    mod, c, w, wargs = module
    T = c.hop_length
    arr = tvm.runtime.tensor
    streams = [stream_inputs(w, c, 10 * batch + i) for i in range(batch)]
    single, batched = mod["main"], mod[batch_function_name(batch)]
    shared = [arr(a) for a in wargs]
    pos = logit_arg_positions(c)
    # B = 1: each stream its own state and logit-scaled copies of FC2's scale and bias
    hs = [arr(s["h"]) for s in streams]
    xs = [arr(s["x"]) for s in streams]
    # batched: the same states stacked
    hb = arr(np.stack([s["h"] for s in streams]))
    xb = arr(np.stack([s["x"] for s in streams]))
    outb = arr(np.zeros((batch, T), np.int32))
    pcmb = arr(np.zeros((batch, T), np.float32))
    for f in range(FRAMES):
        outs, pcms = [], []
        for i, s in enumerate(streams):
            args = list(shared)
            for p in pos:
                args[p] = arr(wargs[p] * s["scale"][f])
            out, pcm = arr(np.zeros(T, np.int32)), arr(np.zeros(T, np.float32))
            single(
                arr(np.ascontiguousarray(s["cond"][f : f + 2])),
                arr(s["lpc"][f]),
                arr(np.ascontiguousarray(s["src"][f])),
                arr(s["uniforms"][f]),
                hs[i],
                xs[i],
                out,
                pcm,
                *args,
            )
            outs.append(out.numpy())
            pcms.append(pcm.numpy())
        batched(
            arr(np.stack([s["cond"][f : f + 2] for s in streams])),
            arr(np.stack([s["lpc"][f] for s in streams])),
            arr(np.stack([s["src"][f] for s in streams])),
            arr(np.stack([s["uniforms"][f] for s in streams])),
            hb,
            xb,
            outb,
            pcmb,
            arr(np.array([s["scale"][f] for s in streams], np.float32)),
            *shared,
        )
        assert np.array_equal(outb.numpy(), np.stack(outs)), f"frame {f}: classes differ"
        assert np.array_equal(pcmb.numpy(), np.stack(pcms)), f"frame {f}: PCM differs"
        assert np.array_equal(hb.numpy(), np.stack([h.numpy() for h in hs]))
        assert np.array_equal(xb.numpy(), np.stack([x.numpy() for x in xs]))
    # the streams really differ, so a mix-up between them could not pass unseen
    assert len({o.tobytes() for o in outb.numpy()}) == batch
