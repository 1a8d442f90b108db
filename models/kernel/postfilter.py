"""The pitch postfilter's whole-band comb (models/dsp/postfilter.py, PitchPostfilter) for one frame
as one compiled TVM call: the frame appended to the history, each sample's delayed value by
linear interpolation at the fractional pitch period, the comb, and the history shifted on.

Bit for bit the numpy reference: the math is float64 and written with np.interp's operations
(the sample grid is 0, 1, 2, ...: a slope is x[j + 1] - x[j], divided by 1) in its order, and
each product that feeds a sum goes through llvm.arithmetic.fence: TVM's LLVM targets allow FP
operation fusion (hard-wired, no target option turns it off), and a multiply and add fused into
one FMA round once where numpy rounds twice.

Strength, F0 and voicing are runtime arguments and the frame and history lengths come from the
buffers, so one build serves every voice. The loop is scalar (its loads are at data-dependent
offsets): a 300-sample frame takes ~0.45 µs, about what the packed call itself costs.

The lowpass path (cutoff > 0) stays numpy: its FIR is np.convolve, whose sums go through BLAS
ddot in the library's own order, so a compiled FIR would match it only to rounding.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from models.kernel.buffers import aligned


def make_postfilter_kernel() -> tvm.tirx.PrimFunc:
    """main(pcm, x, out, sample_rate, f0, voicing, strength): pcm float32 [hop] is the frame, x
    float64 [past + hop] the history in x[:past] (the oldest first; x[past:] is scratch), out
    float32 [hop] the filtered frame. Afterwards x[:past] holds the last past samples."""

    def fenced(v: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
        # a product LLVM may not fuse with the sum it feeds (TVM builds with FP fusion on)
        return T.call_llvm_pure_intrin("float64", "llvm.arithmetic.fence", v)

    @T.prim_func
    def postfilter_frame(
        pcm_h: T.handle,
        x_h: T.handle,
        out_h: T.handle,
        sample_rate: T.float64,
        f0: T.float64,
        voicing: T.float64,
        strength: T.float64,
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        n = T.int64()
        m = T.int64()
        pcm = T.match_buffer(pcm_h, (n,), "float32")
        x = T.match_buffer(x_h, (m,), "float64")
        out = T.match_buffer(out_h, (n,), "float32")
        d = T.alloc_buffer((1,), "float64", scope="local")  # the delayed sample
        z = T.alloc_buffer((4,), "float64", scope="local")  # period, gain, t, floor(t)
        j = T.alloc_buffer((1,), "int64", scope="local")  # floor(t) as an index
        for i in range(n):
            x[m - n + i] = T.Cast("float64", pcm[i])
        if strength == T.float64(0):
            for i in range(n):
                out[i] = pcm[i]
        else:
            z[0] = sample_rate / f0
            z[1] = strength * voicing
            for i in range(n):
                z[2] = T.Cast("float64", m - n + i) - z[0]
                # np.interp on the grid 0..m-1: the end values outside it (and at its last
                # point), the sample itself on a grid point, else the slope times the offset
                # plus the sample below; NaN stays NaN
                if z[2] > T.float64(0) and z[2] < T.Cast("float64", m - 1):
                    z[3] = T.floor(z[2])
                    j[0] = T.Cast("int64", z[3])
                    if z[3] == z[2]:
                        d[0] = x[j[0]]
                    else:
                        d[0] = fenced((x[j[0] + 1] - x[j[0]]) * (z[2] - z[3])) + x[j[0]]
                elif z[2] <= T.float64(0):
                    d[0] = x[0]
                elif z[2] >= T.Cast("float64", m - 1):
                    d[0] = x[m - 1]
                else:
                    d[0] = z[2]
                out[i] = T.Cast("float32", (x[m - n + i] + fenced(z[1] * d[0])) / (1.0 + z[1]))
        for i in range(m - n):
            x[i] = x[n + i]

    return postfilter_frame


def build_postfilter_kernel(target: dict[str, object]) -> tvm.runtime.Module:
    """Compile the frame function ("main") for a target dict (models/kernel/isa.py)."""
    func = make_postfilter_kernel()
    return tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(target))


class PostfilterModule:
    """The compiled frame, built once and shared: `frame()` gives each PitchPostfilter its own
    CompiledPostfilter (its history and buffers)."""

    def __init__(self, module: tvm.runtime.Module) -> None:
        self.module = module
        self.fn = module["main"]

    @classmethod
    def build(cls, target: dict[str, object]) -> PostfilterModule:
        return cls(build_postfilter_kernel(target))

    def frame(self, sample_rate: int, hop_length: int, history: int) -> CompiledPostfilter:
        return CompiledPostfilter(self, sample_rate, hop_length, history)


class CompiledPostfilter:
    """PitchPostfilter's PostfilterKernel (models/dsp/postfilter.py) on the compiled frame: one
    call per frame on buffers made once and their zero-copy DLPack views. The input is viewed
    where it is an aligned float32 array (the stream's PCM buffer: the view is kept while it is
    the same array), else copied into a buffer of its own. The result is the output buffer
    itself, overwritten by the next call."""

    def __init__(
        self, module: PostfilterModule, sample_rate: int, hop_length: int, history: int
    ) -> None:
        self._fn = module.fn
        self._rate = float(sample_rate)
        self.hop_length = hop_length
        self._x = aligned((history + hop_length,), np.float64)
        self._out = aligned((hop_length,), np.float32)
        self._in = aligned((hop_length,), np.float32)
        self._x_view = tvm.runtime.from_dlpack(self._x)
        self._out_view = tvm.runtime.from_dlpack(self._out)
        self._in_view = tvm.runtime.from_dlpack(self._in)
        self._held: tuple[np.ndarray | None, object] = (None, None)

    @property
    def history(self) -> np.ndarray:
        """The last input samples (float64, the oldest first), as PitchPostfilter keeps them."""
        return self._x[: self._x.size - self.hop_length]

    def _input(self, pcm: np.ndarray) -> object:
        held, view = self._held
        if pcm is held:
            return view
        if pcm.dtype != np.float32 or pcm.shape != (self.hop_length,):
            raise ValueError(
                f"postfilter frame must be float32 [{self.hop_length}], got {pcm.dtype} {pcm.shape}"
            )
        if pcm.flags.c_contiguous and pcm.ctypes.data % 64 == 0:
            view = tvm.runtime.from_dlpack(pcm)
            self._held = (pcm, view)
            return view
        np.copyto(self._in, pcm)
        return self._in_view

    def __call__(self, pcm: np.ndarray, f0: float, voicing: float, strength: float) -> np.ndarray:
        self._fn(self._input(pcm), self._x_view, self._out_view, self._rate, f0, voicing, strength)
        return self._out
