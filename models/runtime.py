"""Load a compiled vocoder and turn mel frames into audio, one kernel call per frame. No torch.

    rt = VocoderRuntime.load("compiled/wavernn-slt")
    stream = rt.open_stream(seed=0)
    stream.push(mel)          # [n, 80] log-mel, any chunking
    stream.finish()
    while stream.pending():
        pcm = stream.step()   # float32 [hop_length]

Like Piper's voice object: a small runtime with load() and a generator of audio chunks; the HTTP
route joins the chunks and the websocket sends each one.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from models.artifact import ModelLoadError, load_checked
from models.batching import FrameCall, GroupScratch, split_batches
from models.dsp.envelope import FrameKernel
from models.dsp.features import MelInputError
from models.dsp.pitch import source
from models.dsp.postfilter import KernelFactory, runs_compiled
from models.kernel.batch import BATCH_SIZES, batch_function_name
from models.kernel.buffers import aligned
from models.kernel.build import build
from models.kernel.chain_load import envelope_module, postfilter_module
from models.kernel.isa import ISA_FLAGS, ISA_PREFERENCE, cpu_flags, host_target
from models.kernel.packing import KERNEL_ABI, condition_args, logit_arg_positions, pack_weights
from models.stream import VocoderStream
from models.vocoder.config import SynthesisConfig, VocoderConfig

log = logging.getLogger(__name__)

__all__ = ["MelInputError", "ModelLoadError", "VocoderRuntime", "VocoderStream"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparrow"


class VocoderRuntime:
    """A compiled vocoder: the TVM frame function plus its weights, shared by many streams."""

    def __init__(
        self,
        name: str,
        config: VocoderConfig,
        manifest: dict[str, Any],
        weights: dict[str, np.ndarray],
        module: tvm.runtime.Module,
        isa: str,
    ) -> None:
        self.name = name
        self.config = config
        self.manifest = manifest
        self.weights = weights
        self.isa = isa
        self._module = module
        self._frame_fn = module["main"]
        shape, weight_args = pack_weights(weights, config)
        # Models whose sine-source weights are zero ignore the source: streams skip making it.
        self.uses_source = shape.source
        self._weight_args = [tvm.runtime.tensor(a) for a in weight_args]
        self._cond_fn = module["condition"]
        self._cond_args = [tvm.runtime.tensor(a) for a in condition_args(weights)]
        # The batched frame functions the module has (none in artefacts of kernel ABI 9).
        self._batch_fns = {
            b: module[batch_function_name(b)]
            for b in BATCH_SIZES
            if module.implements_function(batch_function_name(b))
        }
        self._scratch = GroupScratch()
        # Streams run the chain's envelope passes and pitch postfilter compiled
        # (models/kernel/chain_load.py), built into and loaded from cache_dir; False: the
        # numpy reference (the same audio).
        self.compiled_chain = True
        self.cache_dir = default_cache_dir()
        if not self._batch_fns:
            log.info("%s: the module has no batched frame functions (recompile it to batch)", name)

    @property
    def module(self) -> tvm.runtime.Module:
        """The compiled module; runtimes sharing it (with_synthesis) can share batched calls."""
        return self._module

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Streams one kernel call can advance: (1,) for a module without the batched functions,
        else (1, 2, 4, 8)."""
        return (1, *sorted(self._batch_fns))

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(
        cls, model_dir: str | Path, *, cache_dir: Path | None = None, isa: str | None = None
    ) -> VocoderRuntime:
        """Verify the artefact, pick the best module the CPU runs (or `isa`), and load it."""
        model_dir = Path(model_dir)
        manifest, config, weights = load_checked(model_dir)
        chosen, path = _choose_module(model_dir, manifest, config, weights, isa, cache_dir)
        try:
            module = tvm.runtime.load_module(str(path))
        except Exception as exc:  # TVM raises its own error types for unreadable libraries
            raise ModelLoadError(f"cannot load TVM module {path}: {exc}") from exc
        log.info("loaded %s (%s module, %s)", model_dir.name, chosen, path.name)
        rt = cls(model_dir.name, config, manifest, weights, module, chosen)
        if cache_dir is not None:
            rt.cache_dir = Path(cache_dir)
        return rt

    # -- running ---------------------------------------------------------------------------------

    def open_stream(self, seed: int = 0, synthesis: SynthesisConfig | None = None) -> VocoderStream:
        """A stream for one utterance; `synthesis` replaces this voice's synthesis settings for
        it alone (the module is the net's, so nothing is recompiled)."""
        return VocoderStream(self, seed, synthesis)

    def with_synthesis(self, synthesis: SynthesisConfig) -> VocoderRuntime:
        """This voice with other default synthesis settings, sharing the module, the weights and
        their packed arguments (nothing is recompiled or repacked)."""
        other = copy.copy(self)
        other.config = self.config.with_synthesis(synthesis)
        return other

    def generate(
        self, mel: np.ndarray, seed: int = 0, synthesis: SynthesisConfig | None = None
    ) -> Iterator[np.ndarray]:
        """Whole mel -> one float32 [hop_length] array per frame."""
        stream = self.open_stream(seed, synthesis)
        stream.push(mel)
        stream.finish()
        while stream.pending():
            yield stream.step()

    def run_frame(
        self,
        cond_pair: tvm.runtime.Tensor,
        lpc: tvm.runtime.Tensor,
        src: tvm.runtime.Tensor,
        uniforms: tvm.runtime.Tensor,
        h: tvm.runtime.Tensor,
        x: tvm.runtime.Tensor,
        out: tvm.runtime.Tensor,
        pcm: tvm.runtime.Tensor,
        weight_args: list[tvm.runtime.Tensor] | None = None,
    ) -> None:
        """One kernel call: hop_length mu-law classes into `out` and their de-emphasised float
        PCM into `pcm`; `h` and `x` ([previous sample, de-emphasis state, previous excitation, LPC
        history]) update in place. lpc: the frame's predictor coefficients [P] ([1], unused,
        without LPC); src: the frame's sine source [hop_length, 2] (models/dsp/pitch.py);
        weight_args: the stream's own arguments where they differ (logit scaling), else the
        runtime's."""
        self._frame_fn(
            cond_pair, lpc, src, uniforms, h, x, out, pcm, *(weight_args or self._weight_args)
        )

    def envelope_kernel(self, config: VocoderConfig) -> Callable[[], FrameKernel] | None:
        """What makes each envelope pass of a stream with `config` its compiled frame, or None
        (no passes, compiled_chain off, or no module could be built: numpy then)."""
        if not config.envelope_passes or not self.compiled_chain:
            return None
        module = envelope_module(self.isa, float(config.envelope_smoothing_hz), str(self.cache_dir))
        return None if module is None else module.frame

    def postfilter_kernel(self, config: VocoderConfig) -> KernelFactory | None:
        """What makes the pitch postfilter of a stream with `config` its compiled frame, or None
        (no postfilter, its lowpass path, compiled_chain off, or no module could be built: numpy
        then)."""
        strength, cutoff = config.pitch_postfilter, config.pitch_postfilter_cutoff_hz
        if not runs_compiled(strength, cutoff) or not self.compiled_chain:
            return None
        module = postfilter_module(self.isa, str(self.cache_dir))
        return None if module is None else module.frame

    def run_frames(self, calls: list[FrameCall]) -> list[int]:
        """The next frame of several streams, each a FrameCall (its kernel inputs, state and
        output buffers), in as few kernel calls as batch_sizes allows (7 streams: 4 + 2 + 1);
        returns the batch sizes used. Each stream's state and outputs are those run_frame gives
        it alone, bit for bit. Safe to call from several threads (each has its own scratch).

        The level below models.batching.step_streams, for a scheduler that prepares the kernel
        inputs itself; step_streams does it for VocoderStreams."""
        plan = split_batches(len(calls), self.batch_sizes)
        at = 0
        for size in plan:
            chunk = calls[at : at + size]
            at += size
            group = self._scratch.group(self.config, size)
            group.load(chunk)
            if size == 1:
                self._frame_fn(*group.views, *self._scaled_args(chunk[0].logit_scale))
            else:
                self.run_frame_batch(*group.views)
            group.store(chunk)
        return plan

    def run_frame_batch(self, *tensors: tvm.runtime.Tensor) -> None:
        """One bare batched kernel call: run_frame's per-call arguments stacked along a leading
        axis of B streams (B in batch_sizes, above 1), then logit_scale [B] (each stream's factor
        on its logits). run_frames prepares these from FrameCalls."""
        self._batch_fns[tensors[0].shape[0]](*tensors, *self._weight_args)

    def _scaled_args(self, scale: float) -> list[tvm.runtime.Tensor]:
        """Weight arguments with FC2's scale and bias times `scale` (this thread's copies)."""
        if scale == 1.0:
            return self._weight_args
        if self._scratch.scaled is None:
            self._scratch.scaled = self.logit_scalable_args()
        args, pairs = self._scratch.scaled
        for base, buf in pairs:
            np.multiply(base, np.float32(scale), out=buf)
        return args

    def logit_scalable_args(
        self,
    ) -> tuple[list[tvm.runtime.Tensor], list[tuple[np.ndarray, np.ndarray]]]:
        """The weight arguments with the two the logits are linear in (logit_arg_positions)
        replaced by zero-copy views of new aligned buffers: (arguments, [(base, buffer)] of those
        two). Writing base * s into each buffer scales the next call's logits by s; a stream
        owns its buffers, so streams sharing this runtime never see each other's scales."""
        args, pairs = list(self._weight_args), []
        for i in logit_arg_positions(self.config):
            base = self._weight_args[i].numpy()
            buf = aligned(base.shape, base.dtype)
            np.copyto(buf, base)
            args[i] = tvm.runtime.from_dlpack(buf)
            pairs.append((base, buf))
        return args, pairs

    def condition(
        self, cond: tvm.runtime.Tensor, xpad: tvm.runtime.Tensor, hid: tvm.runtime.Tensor
    ) -> None:
        """cond [k, C] = conditioning of k consecutive frames from their padded normalised mel rows
        xpad [k + 4, n_mels], by the module's "condition" function (hid: scratch [k + 2, CH])."""
        self._cond_fn(cond, xpad, hid, *self._cond_args)

    def synthetic_frame(self, seed: int = 0, batch: int = 1) -> SyntheticFrame:
        """Fresh frame tensors with random conditioning and uniforms and a zero state; `batch`
        streams' stacked for a batched call when above 1."""
        return SyntheticFrame.random(self.config, np.random.default_rng(seed), batch)

    def measure_us_per_sample(self, frames: int = 20) -> float:
        """Minimum kernel time per sample over `frames` calls on the calling thread's core."""
        frame = self.synthetic_frame()
        best = float("inf")
        for _ in range(max(1, frames)):
            frame.redraw_uniforms()  # outside the timed call: each call samples a new path
            t0 = time.perf_counter()
            frame.run(self)
            best = min(best, time.perf_counter() - t0)
        return best / self.config.hop_length * 1e6


@dataclass
class SyntheticFrame:
    """Kernel arguments for timing the bare compiled call (start-up measurement, `sparrow bench`):
    random conditioning and uniforms, zero GRU and de-emphasis state, output buffers."""

    cond: tvm.runtime.Tensor
    lpc: tvm.runtime.Tensor
    src: tvm.runtime.Tensor
    uniforms: tvm.runtime.Tensor
    h: tvm.runtime.Tensor
    x: tvm.runtime.Tensor
    out: tvm.runtime.Tensor
    pcm: tvm.runtime.Tensor
    rng: np.random.Generator
    logit_scale: tvm.runtime.Tensor | None = None  # [B] for a batched call, else None

    @classmethod
    def random(cls, c: VocoderConfig, rng: np.random.Generator, batch: int = 1) -> SyntheticFrame:
        def stacked(a: np.ndarray) -> tvm.runtime.Tensor:
            return tvm.runtime.tensor(np.ascontiguousarray(np.broadcast_to(a, (batch, *a.shape))))

        def per_stream(shape: tuple[int, ...], dtype: type = np.float32) -> tvm.runtime.Tensor:
            return tvm.runtime.tensor(np.zeros((batch, *shape) if batch > 1 else shape, dtype))

        # a voiced frame at 200 Hz: the source costs the same whatever its values
        src = source(np.array([200.0]), np.ones(1), c.hop_length, c.sample_rate)[0]
        rows = (batch,) if batch > 1 else ()
        return cls(
            cond=tvm.runtime.tensor(rng.uniform(-1, 1, (*rows, 2, c.cond_size)).astype(np.float32)),
            lpc=per_stream((max(c.lpc_order, 1),)),  # no prediction
            src=stacked(src) if batch > 1 else tvm.runtime.tensor(src),
            uniforms=tvm.runtime.tensor(rng.random((*rows, c.hop_length), dtype=np.float32)),
            h=per_stream((c.hidden_size,)),
            x=per_stream((3 + c.lpc_order,)),
            out=per_stream((c.hop_length,), np.int32),
            pcm=per_stream((c.hop_length,)),
            rng=rng,
            logit_scale=tvm.runtime.tensor(np.ones(batch, np.float32)) if batch > 1 else None,
        )

    def redraw_uniforms(self) -> None:
        self.uniforms = tvm.runtime.tensor(self.rng.random(tuple(self.out.shape), dtype=np.float32))

    def run(self, runtime: VocoderRuntime) -> None:
        args = (self.cond, self.lpc, self.src, self.uniforms, self.h, self.x, self.out, self.pcm)
        if self.logit_scale is None:
            runtime.run_frame(*args)
        else:
            runtime.run_frame_batch(*args, self.logit_scale)


# -- artefact checks -------------------------------------------------------------------------------


def _choose_module(
    model_dir: Path,
    manifest: dict[str, Any],
    config: VocoderConfig,
    weights: dict[str, np.ndarray],
    isa: str | None,
    cache_dir: Path | None,
) -> tuple[str, Path]:
    flags = cpu_flags()
    shipped = manifest["isas"]
    if isa is not None:
        if isa not in shipped:
            raise ModelLoadError(
                f"{model_dir} has no {isa} module (it has: {', '.join(shipped) or 'none'})"
            )
        missing = ISA_FLAGS.get(isa, frozenset()) - flags
        if missing:
            raise ModelLoadError(
                f"the {isa} module needs CPU features this machine lacks: "
                f"{', '.join(sorted(missing))}"
            )
        return isa, model_dir / shipped[isa]["file"]
    for candidate in ISA_PREFERENCE:
        if candidate in shipped and ISA_FLAGS[candidate] <= flags:
            return candidate, model_dir / shipped[candidate]["file"]
    # None fits: compile for this host into the cache, keyed by the weights' hash.
    cache = (cache_dir or default_cache_dir()) / model_dir.name
    path = cache / f"host-abi{KERNEL_ABI}-{manifest['files']['weights.npz'][:16]}.so"
    log.warning(
        "no shipped module of %s runs on this CPU (shipped: %s); compiling for the host into %s",
        model_dir.name,
        ", ".join(shipped) or "none",
        path,
    )
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        shape, _ = pack_weights(weights, config)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.so")
        build(shape, None, target=host_target()).export_library(str(tmp))
        tmp.replace(path)
    return "host", path
