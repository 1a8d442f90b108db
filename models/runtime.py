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

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from models.compile import MANIFEST, load_weights, sha256_file
from models.dsp.envelope import DELAY_SAMPLES, EnvelopeCorrector
from models.dsp.features import MelInputError, validate_mel
from models.dsp.pitch import SOURCE_COLUMNS, mel_pitch, source
from models.dsp.postfilter import PitchPostfilter
from models.kernel import kernel
from models.vocoder.config import VocoderConfig
from models.vocoder.reference import (
    check_weights,
    frame_logit_scales,
    frame_lpc,
    may_redraw,
    normalize_mel,
    reaches_full_scale,
)

log = logging.getLogger(__name__)

__all__ = ["MelInputError", "ModelLoadError", "VocoderRuntime", "VocoderStream", "cpu_flags"]

LOOKAHEAD = 3  # frames: 2 for the conditioning convolutions + 1 for interpolating to the next frame
COND_BATCH = 16
"""Frames of conditioning computed per "condition" call, ahead of need (as far as the mel received
allows). The call streams the conditioning weights (0.6 MB) into cache once per batch instead of
once per frame; 16 frames cost ~0.3 ms, so the first audio is not noticeably delayed."""
LPC_BATCH = 64  # frames per LPC fit (LPC models): ~0.4 ms fixed + ~20 µs per frame


class ModelLoadError(RuntimeError):
    """A compiled model cannot be used: missing, corrupt, mismatched, or not runnable on this CPU."""


def cpu_flags() -> frozenset[str]:
    """CPU feature flags of this machine (from /proc/cpuinfo; empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _host_target() -> dict[str, object]:
    """A conservative target for CPUs none of the shipped modules fit (any x86-64 / aarch64)."""
    machine = os.uname().machine
    if machine in ("x86_64", "amd64"):
        return {"kind": "llvm", "mcpu": "x86-64", "num-cores": 1}
    return {"kind": "llvm", "num-cores": 1}


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
        shape, weight_args = kernel.pack_weights(weights, config, isa)
        # Models whose sine-source weights are zero ignore the source: streams skip making it.
        self.uses_source = shape.source
        self._weight_args = [tvm.runtime.tensor(a) for a in weight_args]
        self._cond_fn = module["condition"]
        self._cond_args = [tvm.runtime.tensor(a) for a in kernel.condition_args(weights)]

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(
        cls, model_dir: str | Path, *, cache_dir: Path | None = None, isa: str | None = None
    ) -> VocoderRuntime:
        """Verify the artefact, pick the best module the CPU runs (or `isa`), and load it."""
        model_dir = Path(model_dir)
        manifest = _read_manifest(model_dir)
        _verify_files(model_dir, manifest)
        abi = manifest.get("kernel_abi", 1)  # artefacts from before the field existed are ABI 1
        if abi != kernel.KERNEL_ABI:
            raise ModelLoadError(
                f"{model_dir} was compiled for kernel ABI {abi}, this Sparrow runs ABI {kernel.KERNEL_ABI}: "
                f"rebuild it with `sparrow compile --weights {model_dir}/weights.npz --out {model_dir}`"
            )
        try:
            config = VocoderConfig.load(model_dir / "config.json")
        except (ValueError, TypeError, AssertionError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{model_dir}/config.json is not a valid vocoder config: {exc}") from exc
        try:
            declared = VocoderConfig.from_dict(manifest.get("config") or {})
        except (ValueError, TypeError, AssertionError) as exc:
            raise ModelLoadError(f"{model_dir}/manifest.json has an invalid config: {exc}") from exc
        if config != declared:
            raise ModelLoadError(f"{model_dir}: config.json does not match the manifest's config")
        weights = load_weights(model_dir / "weights.npz")
        try:
            check_weights(weights, config)
        except ValueError as exc:
            raise ModelLoadError(f"{model_dir}/weights.npz: {exc}") from exc
        chosen, path = _choose_module(model_dir, manifest, config, weights, isa, cache_dir)
        try:
            module = tvm.runtime.load_module(str(path))
        except Exception as exc:  # TVM raises its own error types for unreadable libraries
            raise ModelLoadError(f"cannot load TVM module {path}: {exc}") from exc
        log.info("loaded %s (%s module, %s)", model_dir.name, chosen, path.name)
        return cls(model_dir.name, config, manifest, weights, module, chosen)

    # -- running ---------------------------------------------------------------------------------

    def open_stream(self, seed: int = 0) -> VocoderStream:
        return VocoderStream(self, seed)

    def generate(self, mel: np.ndarray, seed: int = 0) -> Iterator[np.ndarray]:
        """Whole mel -> one float32 [hop_length] array per frame."""
        stream = self.open_stream(seed)
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
        self._frame_fn(cond_pair, lpc, src, uniforms, h, x, out, pcm, *(weight_args or self._weight_args))

    def logit_scalable_args(self) -> tuple[list[tvm.runtime.Tensor], list[tuple[np.ndarray, np.ndarray]]]:
        """The weight arguments with the two the logits are linear in (kernel.logit_arg_positions)
        replaced by zero-copy views of new aligned buffers: (arguments, [(base, buffer)] of those
        two). Writing base * s into each buffer scales the next call's logits by s; a stream
        owns its buffers, so streams sharing this runtime never see each other's scales."""
        args, pairs = list(self._weight_args), []
        for i in kernel.logit_arg_positions(self.config):
            base = self._weight_args[i].numpy()
            buf = _aligned(base.shape, base.dtype)
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

    def synthetic_frame(self, seed: int = 0) -> SyntheticFrame:
        """Fresh frame tensors with random conditioning and uniforms and a zero state."""
        return SyntheticFrame.random(self.config, np.random.default_rng(seed))

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

    @classmethod
    def random(cls, c: VocoderConfig, rng: np.random.Generator) -> SyntheticFrame:
        return cls(
            cond=tvm.runtime.tensor(rng.uniform(-1, 1, (2, c.cond_size)).astype(np.float32)),
            lpc=tvm.runtime.tensor(np.zeros(max(c.lpc_order, 1), np.float32)),  # no prediction
            # a voiced frame at 200 Hz: the source costs the same whatever its values
            src=tvm.runtime.tensor(source(np.array([200.0]), np.ones(1), c.hop_length, c.sample_rate)[0]),
            uniforms=tvm.runtime.tensor(rng.random(c.hop_length, dtype=np.float32)),
            h=tvm.runtime.tensor(np.zeros(c.hidden_size, np.float32)),
            x=tvm.runtime.tensor(np.zeros(3 + c.lpc_order, np.float32)),
            out=tvm.runtime.tensor(np.zeros(c.hop_length, np.int32)),
            pcm=tvm.runtime.tensor(np.zeros(c.hop_length, np.float32)),
            rng=rng,
        )

    def redraw_uniforms(self) -> None:
        self.uniforms = tvm.runtime.tensor(self.rng.random(self.out.shape[0], dtype=np.float32))

    def run(self, runtime: VocoderRuntime) -> None:
        runtime.run_frame(
            self.cond, self.lpc, self.src, self.uniforms, self.h, self.x, self.out, self.pcm
        )


class VocoderStream:
    """One utterance's state: GRU state, previous sample, RNG and the mel received so far."""

    def __init__(self, runtime: VocoderRuntime, seed: int) -> None:
        c = runtime.config
        self.runtime = runtime
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        # Normalised mel, edge-padded as reference.pad_mel: rows 0-1 repeat frame 0, frame i is row
        # i + 2, and finish() appends two copies of the last frame; an aligned buffer that doubles.
        self._mel = _aligned((64, c.n_mels))
        self._n = 0
        # Conditioning of frames [0, _cond_done): row f pairs with row f + 1 for frame f's call.
        self._cond = _aligned((64, c.cond_size))
        self._cond_done = 0
        self._hid = _aligned((COND_BATCH + 2, c.cond_hidden))  # the condition call's scratch
        # The raw log-mel received, and what is fitted to it for frames [0, _lpc_done): the
        # predictor coefficients (LPC models) and the sine source from the pitch and voicing, in
        # batches as frames are needed (an LPC fit has a fixed cost of ~0.4 ms per call, so one
        # call per pushed frame would cost more than the frame); LPC rows are padded to 64 bytes
        # so each is a view.
        self._raw = np.zeros((64, c.n_mels), np.float32)
        self._lpc = _aligned((64, -(-max(c.lpc_order, 1) // 16) * 16))
        self._lpc_done = 0
        # The sine source of the frames fitted last (from frame _fit_first on; made per batch, as it
        # costs ~33 us for one frame and ~10 us a frame in a batch of 64), the phase after them,
        # and the frame being made's rows, in an aligned buffer the kernel sees.
        self._src_batch = np.zeros((0, SOURCE_COLUMNS), np.float32)
        self._fit_first = 0
        self._phase = 0.0
        self._src_np = _aligned((c.hop_length, SOURCE_COLUMNS))
        self._src = tvm.runtime.from_dlpack(self._src_np)
        # The F0 and voicing rows of those frames, for the pitch postfilter on the output.
        self._pitch_batch = np.zeros((2, 0))
        self._scale_batch = np.ones(0, np.float32)  # their logit scales (voicing temperature)
        # Voicing-dependent temperature: the stream's own copies of the two arguments the logits
        # are linear in, rescaled per frame from the runtime's.
        self._weight_args: list[tvm.runtime.Tensor] | None = None
        self._logit_pairs: list[tuple[np.ndarray, np.ndarray]] = []
        if c.voicing_temperature:
            self._weight_args, self._logit_pairs = runtime.logit_scalable_args()
        self._postfilter = (
            PitchPostfilter(c.pitch_postfilter, c.sample_rate, c.hop_length, c.pitch_postfilter_cutoff_hz)
            if c.pitch_postfilter
            else None
        )
        # Without LPC the kernel's lpc argument is an unused 1-element placeholder, made once.
        self._no_lpc = None if c.lpc_order else tvm.runtime.tensor(np.zeros(1, np.float32))
        self._finished = False
        self.frames_done = 0  # frames step() returned
        self._kernel_done = 0  # frames the kernel made: up to frames_ahead more than returned
        self._held = np.zeros(0, np.float32)  # made, not yet returned (output_advance, envelope)
        # The envelope correction's passes on the output (VocoderConfig.envelope_passes), the
        # samples fed to the first, and whether they have been finished.
        self._envelope = [
            EnvelopeCorrector(self._target_mel, c.envelope_clip, c.envelope_smoothing, c.envelope_smoothing_hz)
            for _ in range(c.envelope_passes)
        ]
        self._fed = 0
        self._envelope_done = False
        # The GRU state and [previous sample, de-emphasis state, previous excitation, the last
        # lpc_order samples (newest first)], which the kernel updates in place through views; a
        # frame that reaches full scale is drawn again from copies made before it (clip_retries).
        self._h_np = _aligned((c.hidden_size,))
        self._h = tvm.runtime.from_dlpack(self._h_np)
        self._x_np = _aligned((3 + c.lpc_order,))
        self._x = tvm.runtime.from_dlpack(self._x_np)
        self._saved = (np.empty_like(self._h_np), np.empty_like(self._x_np))
        self.frames_redrawn = 0  # draws thrown away because they reached full scale
        self.frames_clipped = 0  # frames that still reached it after every redraw
        self._out = tvm.runtime.tensor(np.zeros(c.hop_length, np.int32))
        # Per-frame inputs and output live in aligned numpy buffers the kernel sees through
        # zero-copy DLPack views: a tensor copy in or out costs ~9 us each, a view ~1 us.
        self._uniforms_np = _aligned((c.hop_length,))
        self._uniforms = tvm.runtime.from_dlpack(self._uniforms_np)
        self._pcm_np = _aligned((c.hop_length,))
        self._pcm = tvm.runtime.from_dlpack(self._pcm_np)

    @property
    def frames_received(self) -> int:
        return self._n

    @property
    def finished(self) -> bool:
        return self._finished and self.frames_done >= self.frames_received

    def push(self, mel: np.ndarray) -> None:
        if self._finished:
            raise MelInputError("mel pushed after finish()")
        if isinstance(mel, np.ndarray) and mel.shape == (0, self.runtime.config.n_mels):
            return  # an empty chunk is a no-op for a stream (a whole request must have frames)
        raw = validate_mel(mel)
        config = self.runtime.config
        self._raw = _fit(self._raw, self._n, self._n + raw.shape[0])
        self._raw[self._n : self._n + raw.shape[0]] = raw
        mel = normalize_mel(raw, config)
        if self._n == 0:
            self._append_rows(np.concatenate([mel[:1], mel[:1], mel]))
        else:
            self._append_rows(mel)
        self._n += mel.shape[0]

    def finish(self) -> None:
        if not self._finished and self._n:
            last = self._mel[self._n + 1]
            self._append_rows(np.stack([last, last]))
        self._finished = True

    def _append_rows(self, rows: np.ndarray) -> None:
        start = self._n + 2 if self._n else 0
        self._mel = _fit(self._mel, start, start + rows.shape[0])
        self._mel[start : start + rows.shape[0]] = rows

    def pending(self) -> int:
        """Frames step() can produce now: all of them once finished, else those with look-ahead."""
        ready = self.frames_received
        if not self._finished:
            ready -= LOOKAHEAD + frames_ahead(self.runtime.config)
        return max(0, ready - self.frames_done)

    def _condition_through(self, f: int) -> None:
        """Make rows f and f + 1 of _cond final; frames past the end repeat the last frame's.

        Conditioning of frame g is final once frame g + 2 exists or the stream is finished, which
        pending() guarantees for g = f + 1. Each frame's is computed once, up to COND_BATCH final
        frames per call.
        """
        n = self._n
        final = n if self._finished else n - 2
        while self._cond_done < f + 2:
            g0 = self._cond_done
            self._cond = _fit(self._cond, g0, g0 + COND_BATCH + 1)
            if g0 >= n:  # the last frame interpolates towards itself
                self._cond[g0] = self._cond[n - 1]
                self._cond_done += 1
                continue
            k = min(final - g0, COND_BATCH)
            self.runtime.condition(
                _view(self._cond[g0 : g0 + k]),
                _view(self._mel[g0 : g0 + k + 4]),
                _view(self._hid[: k + 2]),
            )
            self._cond_done += k

    def _fit_through(self, f: int) -> None:
        """Fit frame f's predictor coefficients and pitch if not yet done (up to LPC_BATCH frames
        per fit, as far as the mel received goes)."""
        if self._lpc_done > f:
            return
        config = self.runtime.config
        start, end = self._lpc_done, min(self._n, self._lpc_done + LPC_BATCH)
        rows = self._raw[start:end]
        if config.lpc_order:
            self._lpc = _fit(self._lpc, start, end)
            self._lpc[start:end, : config.lpc_order] = frame_lpc(rows, config)
        if self.runtime.uses_source or self._postfilter is not None or config.voicing_temperature:
            f0, voicing = mel_pitch(rows)
            hop, rate = config.hop_length, config.sample_rate
            if self.runtime.uses_source:
                self._src_batch, self._phase = source(f0, voicing, hop, rate, self._phase)
            self._pitch_batch = np.stack([f0, voicing])
            if config.voicing_temperature:
                self._scale_batch = frame_logit_scales(config, voicing)
            self._fit_first = start
        self._lpc_done = end

    def _frame_lpc(self, f: int) -> tvm.runtime.Tensor:
        """Frame f's predictor coefficients for the kernel (fitted by _fit_through)."""
        if self._no_lpc is not None:
            return self._no_lpc
        return _view(self._lpc[f, : self.runtime.config.lpc_order])

    def _frame_source(self, f: int) -> tvm.runtime.Tensor:
        """Frame f's sine source for the kernel (made by _fit_through; frame by frame or in
        batches, the phase carries over bit for bit: pitch.source)."""
        if not self.runtime.uses_source:
            return self._src  # zeros, and the module is built without the source terms
        hop = self.runtime.config.hop_length
        at = (f - self._fit_first) * hop
        self._src_np[:] = self._src_batch[at : at + hop]
        return self._src

    def step(self) -> np.ndarray:
        """Vocode the next frame: float32 [hop_length] in [-1, 1]."""
        if self.pending() <= 0:
            raise RuntimeError("step() called with no frame ready; push more mel or finish()")
        config = self.runtime.config
        hop = config.hop_length
        if not config.output_advance and not self._envelope:
            self.frames_done += 1
            return self._kernel_step()
        # The output runs behind the kernel's (frames_ahead): frame f ends inside kernel frame
        # f + 1 (output_advance) and each envelope pass needs 4 frames more; pending() waits for
        # them, and after the last frame come the postfilter's tail and the passes' ends.
        while self._held.size < hop:
            more = self._more()
            if more is None:
                raise RuntimeError("the stream ran out of output before its last frame")
            self._held = np.concatenate([self._held, more])
        out, self._held = self._held[:hop], self._held[hop:]
        self.frames_done += 1
        return out

    def _more(self) -> np.ndarray | None:
        """The next piece of output (perhaps empty while the passes fill): the kernel's next frame
        moved by output_advance and put through the envelope passes; after the last frame, the
        tails (as reference.vocode); None when all is out."""
        if self._kernel_done < self.frames_received:
            y = self._kernel_step()
            return self._correct(y[self.runtime.config.output_advance :] if self._kernel_done == 1 else y)
        total = self.frames_received * self.runtime.config.hop_length
        if self._fed < total:  # the output is short of the kernel's by output_advance samples
            return self._correct(self._tail()[: total - self._fed])
        if self._envelope and not self._envelope_done:
            self._envelope_done = True
            y = np.zeros(0, np.float32)
            for corrector in self._envelope:
                y = np.concatenate([corrector.push(y), corrector.finish()])
            return y
        return None

    def _correct(self, y: np.ndarray) -> np.ndarray:
        self._fed += y.size
        for corrector in self._envelope:
            y = corrector.push(y)
        return y

    def _target_mel(self, k: int) -> np.ndarray | None:
        """The log-mel output frame k was asked for (the envelope's target); None past the end."""
        if k < self._n:
            return self._raw[k]
        if not self._finished:
            raise RuntimeError(f"envelope frame {k} needs mel not yet received ({self._n} frames)")
        return None

    def _tail(self) -> np.ndarray:
        """What follows the last frame: the postfilter run on a frame of silence (its delay line's
        last samples), as reference.vocode appends. Needed once: the output is short of the kernel's
        by `output_advance` <= hop_length samples."""
        silence = np.zeros(self.runtime.config.hop_length, np.float32)
        if self._postfilter is None:
            return silence
        last = self._kernel_done - 1 - self._fit_first  # the last frame's pitch, unvoiced
        return self._postfilter(silence, self._pitch_batch[0, last : last + 1], np.zeros(1))

    def _kernel_step(self) -> np.ndarray:
        """Run the kernel on the next frame (with its redraws) and postfilter it."""
        f = self._kernel_done
        self._condition_through(f)
        self._fit_through(f)
        cond, lpc, src = _view(self._cond[f : f + 2]), self._frame_lpc(f), self._frame_source(f)
        if self._weight_args is not None:
            scale = self._scale_batch[f - self._fit_first]
            for base, buf in self._logit_pairs:
                np.multiply(base, scale, out=buf)
        retries = self.runtime.config.clip_retries
        for attempt in range(retries + 1):
            if retries:
                np.copyto(self._saved[0], self._h_np)
                np.copyto(self._saved[1], self._x_np)
            self._rng.random(dtype=np.float32, out=self._uniforms_np)
            self.runtime.run_frame(
                cond, lpc, src, self._uniforms, self._h, self._x, self._out, self._pcm, self._weight_args
            )
            # as reference.vocode: a draw that reaches full scale is redone from the saved state
            if not reaches_full_scale(self._pcm_np):
                break
            if not may_redraw(attempt, self.frames_redrawn, f, retries):
                self.frames_clipped += 1
                break
            self.frames_redrawn += 1
            np.copyto(self._h_np, self._saved[0])
            np.copyto(self._x_np, self._saved[1])
        self._kernel_done += 1
        if self._postfilter is not None:
            at = f - self._fit_first
            return self._postfilter(self._pcm_np, *self._pitch_batch[:, at : at + 1])
        return self._pcm_np.copy()


def frames_ahead(config: VocoderConfig) -> int:
    """Frames the kernel runs ahead of a stream's output (besides the conditioning's LOOKAHEAD):
    one for output_advance, and each envelope pass's look-ahead."""
    passes = config.envelope_passes * -(-DELAY_SAMPLES // config.hop_length)
    return (1 if config.output_advance else 0) + passes


def _aligned(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Zeroed array whose data starts on a 64-byte boundary (TVM's DLPack import needs it)."""
    n, size = int(np.prod(shape)), np.dtype(dtype).itemsize
    raw = np.zeros(n + 64 // size, dtype)
    start = (-raw.ctypes.data % 64) // size
    return raw[start : start + n].reshape(shape)


def _fit(buf: np.ndarray, used: int, rows: int) -> np.ndarray:
    """`buf` if it has `rows` rows, else an aligned copy of its first `used` rows with room to grow."""
    if rows <= buf.shape[0]:
        return buf
    grown = _aligned((max(rows, 2 * buf.shape[0]), *buf.shape[1:]))
    grown[:used] = buf[:used]
    return grown


def _view(rows: np.ndarray) -> tvm.runtime.Tensor:
    """Zero-copy TVM view of contiguous rows of an aligned buffer; a copy when the slice does not
    start on a 64-byte boundary (row sizes that are not multiples of 64 bytes)."""
    if rows.ctypes.data % 64:
        return tvm.runtime.tensor(np.ascontiguousarray(rows))
    return tvm.runtime.from_dlpack(rows)


# -- artefact checks ---------------------------------------------------------------------------------


def _read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelLoadError(f"no {MANIFEST} in {model_dir}: not a compiled Sparrow model (run `sparrow compile`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("files", "isas", "config"):
        if key not in manifest:
            raise ModelLoadError(f"{path} lacks the {key!r} field")
    return manifest


def _verify_files(model_dir: Path, manifest: dict[str, Any]) -> None:
    for name, digest in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"{model_dir}: file {name} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise ModelLoadError(
                f"{model_dir}: {name} is corrupt or was changed (sha256 {actual[:12]}…, manifest says {digest[:12]}…)"
            )


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
            raise ModelLoadError(f"{model_dir} has no {isa} module (it has: {', '.join(shipped) or 'none'})")
        missing = kernel.ISA_FLAGS.get(isa, frozenset()) - flags
        if missing:
            raise ModelLoadError(
                f"the {isa} module needs CPU features this machine lacks: {', '.join(sorted(missing))}"
            )
        return isa, model_dir / shipped[isa]["file"]
    for candidate in kernel.ISA_PREFERENCE:
        if candidate in shipped and kernel.ISA_FLAGS[candidate] <= flags:
            return candidate, model_dir / shipped[candidate]["file"]
    # None fits: compile for this host into the cache, keyed by the weights' hash.
    cache = (cache_dir or default_cache_dir()) / model_dir.name
    path = cache / f"host-abi{kernel.KERNEL_ABI}-{manifest['files']['weights.npz'][:16]}.so"
    log.warning(
        "no shipped module of %s runs on this CPU (shipped: %s); compiling for the host into %s",
        model_dir.name,
        ", ".join(shipped) or "none",
        path,
    )
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        shape, _ = kernel.pack_weights(weights, config)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.so")
        kernel.build(shape, None, target=_host_target()).export_library(str(tmp))
        tmp.replace(path)
    return "host", path
