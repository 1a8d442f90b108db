"""The synthesis chain after the kernel, defined once: redraw -> postfilter -> advance -> envelope.

    chain = SynthesisChain(config, target_mel)
    for f in frames:
        pcm = chain.draw(f, run, save, restore)      # the kernel's frame, redrawn if it clipped
        out = chain.frame(pcm, f0[f:f+1], v[f:f+1])  # the output samples now final
    out = chain.finish()                              # the postfilter's tail, the passes' ends

Both the numpy reference (models/vocoder/reference.vocode) and the runtime's streams
(models/runtime.VocoderStream) drive their frames through this object, so the order of the
stages and their edge cases (the first frame's advance, the tail after the last) exist once.
Output length over a whole utterance = frames * hop_length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.dsp.envelope import DELAY_SAMPLES, EnvelopeCorrector, FrameKernel, OnsetCheck
from models.dsp.postfilter import KernelFactory, PitchPostfilter
from models.vocoder.config import VocoderConfig

# A stream's redraws are capped at clip_retries + REDRAW_SHARE x the frames it has made: a trained
# voice redraws about once in 150 utterances, but mels that clip for real (a much louder voice, or
# noise) would otherwise cost their core up to (1 + clip_retries)x the compute admission control
# counted on, and make every stream on that core late.
REDRAW_SHARE = 0.05


def reaches_full_scale(pcm: np.ndarray) -> bool:
    """Whether a frame's output touched the [-1, 1] clip: the sign that sampling ran away."""
    return pcm.size > 0 and bool(np.abs(pcm).max() >= np.float32(1))


def may_redraw(attempt: int, redrawn: int, frames_done: int, clip_retries: int) -> bool:
    """Whether a frame's draw number `attempt` (0 first) that reached full scale may be thrown away
    and drawn again: retries are left for this frame, and the stream, having redrawn `redrawn`
    draws over `frames_done` finished frames, is within the budget above."""
    return attempt < clip_retries and redrawn < clip_retries + REDRAW_SHARE * frames_done


def frames_ahead(config: VocoderConfig) -> int:
    """Frames the kernel runs ahead of the chain's output (besides the conditioning's look-ahead):
    one for output_advance, and each envelope pass's look-ahead."""
    passes = config.envelope_passes * -(-DELAY_SAMPLES // config.hop_length)
    return (1 if config.output_advance else 0) + passes


class SynthesisChain:
    """One utterance's post-kernel state. `target_mel(k)` is the log-mel frame k was asked for
    (float [n_mels]), or None past the end of the mel: the envelope passes' target.
    `envelope_kernel()`, if given, makes each envelope pass its compiled frame (FrameKernel);
    `postfilter_kernel`, if given, makes the pitch postfilter's (PitchPostfilter's kernel)."""

    def __init__(
        self,
        config: VocoderConfig,
        target_mel: Callable[[int], np.ndarray | None],
        envelope_kernel: Callable[[], FrameKernel] | None = None,
        postfilter_kernel: KernelFactory | None = None,
    ) -> None:
        c = config
        self.config = config
        self.postfilter = (
            PitchPostfilter(
                c.pitch_postfilter,
                c.sample_rate,
                c.hop_length,
                c.pitch_postfilter_cutoff_hz,
                postfilter_kernel,
            )
            if c.pitch_postfilter
            else None
        )
        # the passes share one onset check: it depends on the target alone
        onset = (
            OnsetCheck(target_mel, c.envelope_smoothing_hz, c.envelope_passes)
            if c.envelope_smoothing and c.envelope_passes
            else None
        )
        self.envelope = [
            EnvelopeCorrector(
                target_mel,
                c.envelope_clip,
                c.envelope_smoothing,
                c.envelope_smoothing_hz,
                onset,
                None if envelope_kernel is None else envelope_kernel(),
            )
            for _ in range(c.envelope_passes)
        ]
        self.frames_redrawn = 0  # draws thrown away because they reached full scale
        self.frames_clipped = 0  # frames that still reached it after every redraw
        self._frames = 0  # frames taken by frame()
        self._fed = 0  # samples given to the envelope passes (or out, without them)
        self._last_f0 = np.zeros(1)

    def draw(
        self,
        f: int,
        run: Callable[[], np.ndarray],
        save: Callable[[], None],
        restore: Callable[[], None],
    ) -> np.ndarray:
        """Frame f from the kernel: `run()` draws it once with fresh uniforms and returns its PCM
        float32 [hop_length]. A draw that reaches full scale is thrown away and drawn again from
        the state `save()` kept (`restore()`), up to clip_retries times and within the stream's
        budget (may_redraw); the last draw stands."""
        retries = self.config.clip_retries
        for attempt in range(retries + 1):
            if retries:
                save()
            pcm = run()
            if not reaches_full_scale(pcm):
                break
            if not may_redraw(attempt, self.frames_redrawn, f, retries):
                self.frames_clipped += 1
                break
            self.frames_redrawn += 1
            restore()
        return pcm

    def frame(self, pcm: np.ndarray, f0: np.ndarray, voicing: np.ndarray) -> np.ndarray:
        """The next drawn frame, pcm float32 [hop_length] with its F0 and voicing [1] (the
        postfilter's; ignored without it), through the postfilter, moved earlier by
        output_advance and through the envelope passes: the output samples now final."""
        if self.postfilter is not None:
            y = self._filter(pcm, f0, voicing)
            self._last_f0 = f0
        else:
            y = np.array(pcm, dtype=np.float32)
        if self._frames == 0:
            y = y[self.config.output_advance :]
        self._frames += 1
        return self._correct(y)

    def finish(self) -> np.ndarray:
        """After the last frame: the postfilter run on a frame of silence (its delay line's last
        samples) to make up the output_advance samples, then the envelope passes' ends."""
        hop = self.config.hop_length
        pieces = []
        short = self._frames * hop - self._fed
        if short > 0:  # the output is short of the kernel's by output_advance samples
            silence = np.zeros(hop, np.float32)
            if self.postfilter is not None:  # the last frame's pitch, unvoiced
                silence = self._filter(silence, self._last_f0, np.zeros(1))
            pieces.append(self._correct(silence[:short]))
        if self.envelope:
            y = np.zeros(0, np.float32)
            for corrector in self.envelope:
                y = np.concatenate([corrector.push(y), corrector.finish()])
            pieces.append(y)
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def _filter(self, pcm: np.ndarray, f0: np.ndarray, voicing: np.ndarray) -> np.ndarray:
        assert self.postfilter is not None
        y = self.postfilter(pcm, f0, voicing)
        # the compiled postfilter's result is its buffer, overwritten by its next frame: the
        # envelope passes copy their input; without them it is copied here
        if self.postfilter.reuses_output and not self.envelope:
            y = y.copy()
        return y

    def _correct(self, y: np.ndarray) -> np.ndarray:
        self._fed += y.size
        for corrector in self.envelope:
            y = corrector.push(y)
        return y
