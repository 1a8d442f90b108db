"""Several streams' frames in one kernel call: the batched functions of a module ("frame_b2",
"frame_b4", "frame_b8"; models/kernel/batch.py) load each weight block once for all of them.

Two levels, for a worker's scheduler:

    outs = step_streams([s1, s2, s3])   # == [s1.step(), s2.step(), s3.step()], bit for bit

step_streams is VocoderStream.step for a group of streams (each with pending() > 0): the kernel
frames their steps need are made B at a time, the rest of each step (post-kernel chain, redraws of
a frame that reaches full scale) is the stream's own. Below it, VocoderRuntime.run_frames runs a
list of FrameCall (one stream's kernel inputs, state and outputs each) in as few calls as the
module's batch sizes allow.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tvm

from models.kernel.buffers import aligned
from models.vocoder.config import VocoderConfig

if TYPE_CHECKING:
    from models.stream import VocoderStream


@dataclass
class FrameCall:
    """One stream's next frame for VocoderRuntime.run_frames: inputs read, `h` and `x` updated in
    place, `out` and `pcm` written (the arguments of VocoderRuntime.run_frame, as numpy arrays).

    cond [2, C] the conditioning of this frame and the next; lpc [max(P, 1)]; src [hop, 2] the
    sine source; uniforms [hop]; h [H] the GRU state; x [3 + P] (previous sample, de-emphasis
    state, previous excitation, LPC history); out [hop] int32 classes; pcm [hop] float PCM;
    logit_scale: the factor on this frame's logits (VocoderConfig.voiced_logit_scale; 1: none).
    """

    cond: np.ndarray
    lpc: np.ndarray
    src: np.ndarray
    uniforms: np.ndarray
    h: np.ndarray
    x: np.ndarray
    out: np.ndarray
    pcm: np.ndarray
    logit_scale: float = 1.0


def split_batches(n: int, sizes: Sequence[int]) -> list[int]:
    """n streams as batch sizes from `sizes` (which holds 1), largest first: 7 -> [4, 2, 1]."""
    plan, left = [], n
    for size in sorted(sizes, reverse=True):
        while left >= size:
            plan.append(size)
            left -= size
    return plan


class _Group:
    """Stacked kernel arguments of `batch` streams in aligned buffers, with the TVM views the
    kernel sees: a call copies each stream's inputs and state in and its state and outputs back
    (about 10 KB a stream, a few µs against a frame's ~300 µs)."""

    def __init__(self, config: VocoderConfig, batch: int) -> None:
        c, hop = config, config.hop_length
        self.batch = batch
        self.cond = aligned((batch, 2, c.cond_size))
        self.lpc = aligned((batch, max(c.lpc_order, 1)))
        self.src = aligned((batch, hop, 2))
        self.uniforms = aligned((batch, hop))
        self.h = aligned((batch, c.hidden_size))
        self.x = aligned((batch, 3 + c.lpc_order))
        self.out = aligned((batch, hop), np.int32)
        self.pcm = aligned((batch, hop))
        self.scale = aligned((batch,))
        arrays = [self.cond, self.lpc, self.src, self.uniforms, self.h, self.x, self.out, self.pcm]
        if batch == 1:  # "main" takes one stream's arrays without the B axis
            arrays = [a[0] for a in arrays]
        else:
            arrays.append(self.scale)
        self.views = [tvm.runtime.from_dlpack(a) for a in arrays]

    def load(self, calls: Sequence[FrameCall]) -> None:
        for i, call in enumerate(calls):
            self.cond[i] = call.cond
            self.lpc[i] = call.lpc
            self.src[i] = call.src
            self.uniforms[i] = call.uniforms
            self.h[i] = call.h
            self.x[i] = call.x
            self.scale[i] = call.logit_scale

    def store(self, calls: Sequence[FrameCall]) -> None:
        for i, call in enumerate(calls):
            call.h[...] = self.h[i]
            call.x[...] = self.x[i]
            call.out[...] = self.out[i]
            call.pcm[...] = self.pcm[i]


class GroupScratch(threading.local):
    """Each thread's stacked-argument buffers per batch size (worker threads may share a
    runtime), made on first use."""

    def __init__(self) -> None:
        self.groups: dict[int, _Group] = {}
        self.scaled: tuple[list[tvm.runtime.Tensor], list[tuple[np.ndarray, np.ndarray]]] | None
        self.scaled = None  # B = 1's logit-scaled weight arguments (logit_scalable_args)

    def group(self, config: VocoderConfig, batch: int) -> _Group:
        if batch not in self.groups:
            self.groups[batch] = _Group(config, batch)
        return self.groups[batch]


class StreamStepError(RuntimeError):
    """Streams of a step_streams group failed in their own part of the step. `failures` holds
    (stream, exception) pairs; `results` the group's outputs in order, None for a failed stream.
    The other streams' steps completed: their results are final, and they go on being stepped,
    alone or together, as if they had not shared calls."""

    def __init__(
        self,
        failures: list[tuple[VocoderStream, Exception]],
        results: list[np.ndarray | None],
    ) -> None:
        super().__init__(
            f"{len(failures)} of {len(results)} streams failed in step_streams: {failures[0][1]}"
        )
        self.failures = failures
        self.results = results


def step_streams(streams: Sequence[VocoderStream]) -> list[np.ndarray]:
    """[s.step() for s in streams], bit for bit, with the kernel frames the steps need made in
    batched calls: streams of one voice (one compiled module, whatever their synthesis settings)
    share calls. Every stream must have pending() > 0; a stream may appear once. If a stream
    fails in its own part of the step (its chain), the others still complete theirs and
    StreamStepError carries their results. For a lone stream, s.step() is the same without the
    copies into the stacked buffers (~2.5 µs a frame)."""
    _check_group(streams)
    errors: dict[int, Exception] = {}
    _draw_due(streams, errors, None)
    results: list[np.ndarray | None] = []
    for s in streams:
        if id(s) not in errors:
            try:
                results.append(s.step())
                continue
            except Exception as exc:  # noqa: BLE001 - one stream's failure, not the group's
                errors[id(s)] = exc
        results.append(None)
    _raise_failures(streams, errors, results)
    return results  # type: ignore[return-value]  # no None without a failure


def draw_ahead(streams: Sequence[VocoderStream], rounds: int) -> bool:
    """Up to `rounds` batched rounds of the kernel frames the streams' next steps need, drawn as
    step_streams draws them, no stream stepped: an utterance's opening (~15 kernel frames before
    its first frame) made in slices, so a scheduler can step other streams between them. Each
    stream's frames are drawn in the same order either way, so the audio is the same. True when
    no stream needs another kernel frame (step_streams then only steps them). StreamStepError
    (every result None) if a stream failed in its own part."""
    _check_group(streams)
    errors: dict[int, Exception] = {}
    done = _draw_due(streams, errors, rounds)
    _raise_failures(streams, errors, [None] * len(streams))
    return done


def _check_group(streams: Sequence[VocoderStream]) -> None:
    if len({id(s) for s in streams}) != len(streams):
        raise ValueError("a stream appears twice in one group")
    for s in streams:
        if s.pending() <= 0:
            raise RuntimeError(
                "a stream of the group has no frame ready; push more mel or finish()"
            )


def _draw_due(
    streams: Sequence[VocoderStream], errors: dict[int, Exception], rounds: int | None
) -> bool:
    """Draw the kernel frames the streams' next steps need, one frame of every stream that needs
    one per round (B at a time), for `rounds` rounds or until none is due (None); a stream's
    failure in its own part goes to `errors`. True when none is due any more."""
    done = 0
    while True:
        due = [s for s in streams if id(s) not in errors and s.kernel_frame_due()]
        if not due:
            return True
        if rounds is not None and done >= rounds:
            return False
        by_module: dict[int, list[VocoderStream]] = {}
        for s in due:
            by_module.setdefault(id(s.runtime.module), []).append(s)
        for group in by_module.values():
            group[0].runtime.run_frames([s.begin_frame() for s in group])
            for s in group:
                try:
                    s.end_frame()
                except Exception as exc:  # noqa: BLE001 - the others still take theirs in
                    errors[id(s)] = exc
        done += 1


def _raise_failures(
    streams: Sequence[VocoderStream],
    errors: dict[int, Exception],
    results: list[np.ndarray | None],
) -> None:
    if errors:
        failures = [(s, errors[id(s)]) for s in streams if id(s) in errors]
        raise StreamStepError(failures, results) from failures[0][1]
