"""One utterance through a compiled vocoder: mel frames in, one kernel call per frame, audio out.

    stream = runtime.open_stream(seed=0)
    stream.push(mel)          # [n, 80] log-mel, any chunking
    stream.finish()
    while stream.pending():
        pcm = stream.step()   # float32 [hop_length]

The stream owns the per-utterance state (GRU state, previous sample, RNG, the mel so far) in
aligned buffers the kernel sees through zero-copy views; after the kernel, each frame goes through
the post-kernel chain (models/vocoder/chain.py), the same object the reference uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tvm

from models.batching import FrameCall
from models.dsp.features import MelInputError, validate_mel
from models.dsp.pitch import SOURCE_COLUMNS, mel_pitch, source
from models.kernel.buffers import aligned
from models.vocoder.chain import SynthesisChain, frames_ahead
from models.vocoder.conditioning import normalize_mel
from models.vocoder.config import SynthesisConfig
from models.vocoder.excitation import frame_lpc
from models.vocoder.reference import frame_logit_scales

if TYPE_CHECKING:
    from models.runtime import VocoderRuntime

LOOKAHEAD = 3  # frames: 2 for the conditioning convolutions + 1 for interpolating to the next frame
COND_BATCH = 16
"""Frames of conditioning computed per "condition" call, ahead of need (as far as the mel received
allows). The call streams the conditioning weights (0.6 MB) into cache once per batch instead of
once per frame; 16 frames cost ~0.3 ms, so the first audio is not noticeably delayed."""
LPC_BATCH = 64  # frames per LPC fit (LPC models): ~0.4 ms fixed + ~20 µs per frame


class VocoderStream:
    """One utterance's state: GRU state, previous sample, RNG and the mel received so far."""

    def __init__(
        self, runtime: VocoderRuntime, seed: int, synthesis: SynthesisConfig | None = None
    ) -> None:
        # The runtime's voice, with this stream's synthesis settings where it has its own.
        own = synthesis is not None
        self.config = runtime.config.with_synthesis(synthesis) if own else runtime.config
        c = self.config
        self.runtime = runtime
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        # Normalised mel, edge-padded as conditioning.pad_mel: rows 0-1 repeat frame 0, frame i is
        # row i + 2, and finish() appends two copies of the last frame; an aligned buffer that
        # doubles.
        self._mel = aligned((64, c.n_mels))
        self._n = 0
        # Conditioning of frames [0, _cond_done): row f pairs with row f + 1 for frame f's call.
        self._cond = aligned((64, c.cond_size))
        self._cond_done = 0
        self._hid = aligned((COND_BATCH + 2, c.cond_hidden))  # the condition call's scratch
        # The raw log-mel received, and what is fitted to it for frames [0, _lpc_done): the
        # predictor coefficients (LPC models) and the sine source from the pitch and voicing, in
        # batches as frames are needed (an LPC fit has a fixed cost of ~0.4 ms per call, so one
        # call per pushed frame would cost more than the frame); LPC rows are padded to 64 bytes
        # so each is a view.
        self._raw = np.zeros((64, c.n_mels), np.float32)
        self._lpc = aligned((64, -(-max(c.lpc_order, 1) // 16) * 16))
        self._lpc_done = 0
        # The sine source of the frames fitted last (from frame _fit_first on; made per batch, as it
        # costs ~33 us for one frame and ~10 us a frame in a batch of 64), the phase after them,
        # and the frame being made's rows, in an aligned buffer the kernel sees.
        self._src_batch = np.zeros((0, SOURCE_COLUMNS), np.float32)
        self._fit_first = 0
        self._phase = 0.0
        self._src_np = aligned((c.hop_length, SOURCE_COLUMNS))
        self._src = tvm.runtime.from_dlpack(self._src_np)
        # A lone call's conditioning pair and coefficients, copied into buffers viewed once (a view
        # made per frame cost more than the copy; without LPC the kernel's lpc argument is an
        # unused 1-element placeholder); the logit scale its weight copies hold.
        self._lone_np = (aligned((2, c.cond_size)), aligned((max(c.lpc_order, 1),)))
        self._lone_in = tuple(tvm.runtime.from_dlpack(a) for a in self._lone_np)
        self._scaled_by = np.float32(np.nan)
        # The F0 and voicing rows of those frames, for the pitch postfilter on the output.
        self._pitch_batch = np.zeros((2, 0))
        self._scale_batch = np.ones(0, np.float32)  # their logit scales (voicing temperature)
        # Voicing-dependent temperature: the stream's own copies of the two arguments the logits
        # are linear in, rescaled per frame from the runtime's.
        self._weight_args: list[tvm.runtime.Tensor] | None = None
        self._logit_pairs: list[tuple[np.ndarray, np.ndarray]] = []
        if c.voicing_temperature:
            self._weight_args, self._logit_pairs = runtime.logit_scalable_args()
        # redraw -> postfilter -> advance -> envelope, as the reference vocodes (chain.py)
        self._chain = SynthesisChain(
            c, self._target_mel, runtime.envelope_kernel(c), runtime.postfilter_kernel(c)
        )
        self._chain_done = False
        self._prepared = -1  # the frame whose kernel inputs _call holds
        self._call: tuple[tvm.runtime.Tensor, ...] = ()
        # the same inputs as numpy arrays, and the logit scale, for begin_frame
        self._call_np: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None
        self._predrawn = False  # begin_frame drew the next kernel frame (batched): draw takes it
        self._finished = False
        self.frames_done = 0  # frames step() returned
        self._kernel_done = 0  # frames the kernel made: up to frames_ahead more than returned
        self._held = np.zeros(0, np.float32)  # made, not yet returned (output_advance, envelope)
        # The GRU state and [previous sample, de-emphasis state, previous excitation, the last
        # lpc_order samples (newest first)], which the kernel updates in place through views; a
        # frame that reaches full scale is drawn again from copies made before it (clip_retries).
        self._h_np = aligned((c.hidden_size,))
        self._h = tvm.runtime.from_dlpack(self._h_np)
        self._x_np = aligned((3 + c.lpc_order,))
        self._x = tvm.runtime.from_dlpack(self._x_np)
        self._saved = (np.empty_like(self._h_np), np.empty_like(self._x_np))
        self._out_np = aligned((c.hop_length,), np.int32)
        self._out = tvm.runtime.from_dlpack(self._out_np)
        # Per-frame inputs and output live in aligned numpy buffers the kernel sees through
        # zero-copy DLPack views: a tensor copy in or out costs ~9 us each, a view ~1 us.
        self._uniforms_np = aligned((c.hop_length,))
        self._uniforms = tvm.runtime.from_dlpack(self._uniforms_np)
        self._pcm_np = aligned((c.hop_length,))
        self._pcm = tvm.runtime.from_dlpack(self._pcm_np)

    @property
    def frames_redrawn(self) -> int:
        """Draws thrown away because they reached full scale (SynthesisConfig.clip_retries)."""
        return self._chain.frames_redrawn

    @property
    def frames_clipped(self) -> int:
        """Frames that still reached full scale after every redraw."""
        return self._chain.frames_clipped

    @property
    def kernel_frames(self) -> int:
        """Frames the kernel has made: up to frames_ahead more than step() returned."""
        return self._kernel_done

    @property
    def frames_received(self) -> int:
        return self._n

    @property
    def finished(self) -> bool:
        return self._finished and self.frames_done >= self.frames_received

    def push(self, mel: np.ndarray) -> None:
        if self._finished:
            raise MelInputError("mel pushed after finish()")
        if isinstance(mel, np.ndarray) and mel.shape == (0, self.config.n_mels):
            return  # an empty chunk is a no-op for a stream (a whole request must have frames)
        raw = validate_mel(mel)
        config = self.config
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
            ready -= LOOKAHEAD + frames_ahead(self.config)
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
        config = self.config
        start, end = self._lpc_done, min(self._n, self._lpc_done + LPC_BATCH)
        rows = self._raw[start:end]
        if config.lpc_order:
            self._lpc = _fit(self._lpc, start, end)
            self._lpc[start:end, : config.lpc_order] = frame_lpc(rows, config)
        if (
            self.runtime.uses_source
            or self._chain.postfilter is not None
            or config.voicing_temperature
        ):
            f0, voicing = mel_pitch(rows)
            hop, rate = config.hop_length, config.sample_rate
            if self.runtime.uses_source:
                self._src_batch, self._phase = source(f0, voicing, hop, rate, self._phase)
            self._pitch_batch = np.stack([f0, voicing])
            if config.voicing_temperature:
                self._scale_batch = frame_logit_scales(config, voicing)
            self._fit_first = start
        self._lpc_done = end

    def _frame_source(self, f: int) -> None:
        """Frame f's sine source into the kernel's buffer (made by _fit_through; frame by frame or
        in batches, the phase carries over bit for bit: pitch.source). Without source terms in
        the module the buffer stays zeros."""
        if self.runtime.uses_source:
            at = (f - self._fit_first) * self.config.hop_length
            self._src_np[:] = self._src_batch[at : at + self.config.hop_length]

    def step(self) -> np.ndarray:
        """Vocode the next frame: float32 [hop_length] in [-1, 1]."""
        if self.pending() <= 0:
            raise RuntimeError("step() called with no frame ready; push more mel or finish()")
        hop = self.config.hop_length
        # The output runs behind the kernel's (frames_ahead): frame f ends inside kernel frame
        # f + 1 (output_advance) and each envelope pass needs 4 frames more; pending() waits for
        # them, and after the last frame come the postfilter's tail and the passes' ends.
        while self._held.size < hop:
            more = self._more()
            if more is None:
                raise RuntimeError("the stream ran out of output before its last frame")
            self._held = more if not self._held.size else np.concatenate([self._held, more])
        out, self._held = self._held[:hop], self._held[hop:]
        self.frames_done += 1
        return out

    def _more(self) -> np.ndarray | None:
        """The chain's next piece of output (perhaps empty while the passes fill): the kernel's
        next frame through it, then its end; None when all is out."""
        if self._kernel_done < self.frames_received:
            f = self._kernel_done
            pcm = self._chain.draw(f, self._run_kernel, self._save_state, self._restore_state)
            self._kernel_done += 1
            at = f - self._fit_first
            return self._chain.frame(pcm, *self._pitch_batch[:, at : at + 1])
        if not self._chain_done:
            self._chain_done = True
            return self._chain.finish()
        return None

    def _target_mel(self, k: int) -> np.ndarray | None:
        """The log-mel output frame k was asked for (the envelope's target); None past the end."""
        if k < self._n:
            return self._raw[k]
        if not self._finished:
            raise RuntimeError(f"envelope frame {k} needs mel not yet received ({self._n} frames)")
        return None

    def _prepare_kernel(self, f: int) -> None:
        """Frame f's kernel inputs: conditioning, LPC and source fitted, logit scale chosen. The
        TVM views and the logit-scaled weights a lone call needs are made by _lone_call, only
        when one is made: a batched call (begin_frame) takes the arrays and the scale."""
        self._condition_through(f)
        self._fit_through(f)
        lpc = self._lpc[f, : self.config.lpc_order] if self.config.lpc_order else _NO_LPC
        self._frame_source(f)
        scale = 1.0
        if self._weight_args is not None:
            scale = float(self._scale_batch[f - self._fit_first])
        self._call_np = (self._cond[f : f + 2], lpc, self._src_np, scale)
        self._call = ()
        self._prepared = f

    def _lone_call(self) -> tuple[tvm.runtime.Tensor, ...]:
        """The prepared frame's inputs as TVM views for runtime.run_frame, with this stream's
        logit-scaled weight arguments written (made once per frame, on a lone call's demand)."""
        if not self._call:
            assert self._call_np is not None
            cond, lpc, _, scale = self._call_np
            np.copyto(self._lone_np[0], cond)
            np.copyto(self._lone_np[1][: lpc.size], lpc)
            self._call = (*self._lone_in, self._src)
            if self._weight_args is not None and np.float32(scale) != self._scaled_by:
                self._scaled_by = np.float32(scale)  # the copies hold base * scale until then
                for base, buf in self._logit_pairs:
                    np.multiply(base, self._scaled_by, out=buf)
        return self._call

    # -- batched steps (models.batching.step_streams) -------------------------------------------

    def kernel_frame_due(self) -> bool:
        """Whether the next step() makes a kernel frame before it can return (step_streams makes
        those of a group of streams in batched calls)."""
        return (
            not self._predrawn  # a drawn frame awaits end_frame() or the next step()
            and self.pending() > 0
            and self._held.size < self.config.hop_length
            and self._kernel_done < self.frames_received
        )

    def begin_frame(self) -> FrameCall:
        """The next kernel frame's first draw as a FrameCall on this stream's own buffers, for
        VocoderRuntime.run_frames; after the call, end_frame() takes it in. Only when
        kernel_frame_due(). The draw's uniforms come from the stream's RNG in the order step()
        draws them, and the state is saved for redraws first, so the stream's output is that of
        step() alone."""
        if not self.kernel_frame_due():
            raise RuntimeError("begin_frame() with no kernel frame due")
        if self._prepared != self._kernel_done:
            self._prepare_kernel(self._kernel_done)
        if self.config.clip_retries:
            self._save_state()
        self._rng.random(dtype=np.float32, out=self._uniforms_np)
        self._predrawn = True
        assert self._call_np is not None
        cond, lpc, src, scale = self._call_np
        return FrameCall(
            cond, lpc, src, self._uniforms_np, self._h_np, self._x_np, self._out_np,
            self._pcm_np, scale,
        )  # fmt: skip

    def end_frame(self) -> None:
        """Take in the frame begin_frame's call drew: the chain runs on it (a redraw, if it
        reaches full scale, is the stream's own kernel call) and its output joins what the next
        step() returns."""
        if not self._predrawn:
            raise RuntimeError("end_frame() without begin_frame()")
        more = self._more()
        assert more is not None and not self._predrawn
        self._held = more if not self._held.size else np.concatenate([self._held, more])

    def _run_kernel(self) -> np.ndarray:
        """One draw of the next frame: fresh uniforms, one kernel call; its PCM (a view). A draw
        begin_frame made in a batched call is taken as it is."""
        if self._predrawn:
            self._predrawn = False
            return self._pcm_np
        if self._prepared != self._kernel_done:
            self._prepare_kernel(self._kernel_done)
        self._rng.random(dtype=np.float32, out=self._uniforms_np)
        cond, lpc, src = self._lone_call()
        self.runtime.run_frame(
            cond, lpc, src, self._uniforms, self._h, self._x, self._out, self._pcm,
            self._weight_args,
        )  # fmt: skip
        return self._pcm_np

    def _save_state(self) -> None:
        if self._predrawn:
            return  # begin_frame saved the state before the batched call
        np.copyto(self._saved[0], self._h_np)
        np.copyto(self._saved[1], self._x_np)

    def _restore_state(self) -> None:
        np.copyto(self._h_np, self._saved[0])
        np.copyto(self._x_np, self._saved[1])


_NO_LPC = np.zeros(1, np.float32)  # the lpc argument's placeholder without LPC


def _fit(buf: np.ndarray, used: int, rows: int) -> np.ndarray:
    """`buf` if it has `rows` rows, else an aligned copy of its first `used` rows with room to
    grow."""
    if rows <= buf.shape[0]:
        return buf
    grown = aligned((max(rows, 2 * buf.shape[0]), *buf.shape[1:]))
    grown[:used] = buf[:used]
    return grown


def _view(rows: np.ndarray) -> tvm.runtime.Tensor:
    """Zero-copy TVM view of contiguous rows of an aligned buffer; a copy when the slice does not
    start on a 64-byte boundary (row sizes that are not multiples of 64 bytes)."""
    if rows.ctypes.data % 64:
        return tvm.runtime.tensor(np.ascontiguousarray(rows))
    return tvm.runtime.from_dlpack(rows)
