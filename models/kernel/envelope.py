"""The envelope correction's per-frame work (models/dsp/envelope.py, EnvelopeCorrector._frame) as
one compiled TVM call: window, real FFT of N_FFT, magnitudes, mel, clipped gain per band spread
to the bins, the smoothing above smoothing_hz, the gain applied, inverse real FFT, window, and the
overlap-add into the pass's accumulator.

TVM has no FFT op, so the FFT is written here. The real FFT of 2048 is a complex FFT of 1024 (the
even samples as real parts, the odd ones as imaginary parts) and the usual split step; the
complex FFT is a four-step one (models/kernel/envelope_fft.py), and the inverse is the forward FFT
of the conjugate. exp and log are vector polynomials to the dtype's precision (libm's scalar
calls took 40% of the frame). Mel and spread run over contiguous runs of bins per band
(models/kernel/envelope_tables.py): broadcasts and vector loads, no per-lane gathers.

float64 is numpy's math to rounding (~3e-15 of the signal's RMS per frame); float32 ~2e-6.

numpy stays the statement of the math; tests/models/kernel/test_envelope_kernel.py checks this
against EnvelopeCorrector._frame. Intermediates inside vectorised loops are written as whole
expressions or staged in buffers: binding them to Python names there silently computes garbage
in TVM 0.27 (shared TVM notes).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm.script import tirx as T

from models.dsp.envelope import N_FFT, TINY, WIN
from models.dsp.features import SPEC
from models.kernel.buffers import aligned
from models.kernel.envelope_fft import fft_macro
from models.kernel.envelope_tables import BINS, MV, NC, ROWS, WIDE_MCPUS, Layout


def make_envelope_kernel(
    dtype: str = "float64", smoothing_hz: float = 4000.0, vector_bits: int = 512
) -> tuple[tvm.tirx.PrimFunc, Layout]:
    """The PrimFunc for one frame of one pass, and the layout of its tables.

    main(x, acc, lo, goal, share, clip, ftab, itab): reads x[lo : lo + WIN], adds the windowed
    corrected frame into acc[lo : lo + WIN]; goal is the target log-mel (float64 [n_mels]), share
    the smoothing's share for this frame (smoothing * steadiness; 0 skips it), clip the gain's
    bound. x and acc are float64 (the corrector's buffers); the work is in `dtype`.
    """
    lay = Layout()
    NM = lay.n_mels
    FO, IO = lay.f, lay.i
    FS, IS = lay.f_size, lay.i_size
    SPW = lay.spread[3].shape[1]  # the second shares' offset after the first's
    R = ROWS
    K0 = -(-round(smoothing_hz * N_FFT) // SPEC.sample_rate)  # first smoothed bin (as _frame)
    floor = float(SPEC.log_floor)
    tiny = float(TINY)
    dt = dtype
    wide = dtype == "float64"
    it = "int64" if wide else "int32"
    ut = "uint64" if wide else "uint32"
    ebias = 1024 if wide else 128  # keeps log's exponent field sum positive
    mbits = 52 if wide else 23  # mantissa bits
    bias = 1023 if wide else 127
    magic = 1.5 * 2.0**mbits  # x + magic rounds x to an integer held in the low bits
    xmax = 700.0 if wide else 87.0  # exp's argument clamp: 2^n stays a normal number
    LOG2E = 1.0 / np.log(2.0)
    # ln 2 in two parts, the first with trailing zero bits so n * ln2_hi is exact (fdlibm's
    # for float64, cephes' for float32)
    ln2_hi = 6.93147180369123816490e-01 if wide else 0.693359375
    ln2_lo = 1.90821492927058770002e-10 if wide else -2.12194440e-4
    sqrt_half_bits = 0x3FE6A09E667F3BCD if wide else 0x3F3504F3  # the bits of sqrt(1/2)
    # exp's Taylor series to 1e-17 / 1e-8 on |r| <= ln 2 / 2; atanh's odd series to
    # s^21 / s^11 on |s| <= 0.1716 (1 / (2j + 3) for j = 0..)
    exp_taylor = [1.0 / math.factorial(k) for k in range(14 if wide else 8)]
    atanh_series = [1.0 / (2 * j + 3) for j in range(10 if wide else 5)]
    V = vector_bits // (64 if dtype == "float64" else 32)  # lanes of one vector register
    V2 = 8  # WIN / 2 is a multiple of 8, not of 16
    VS = max(V, V2)  # lanes of the exp and log scratch
    BP = lay.bins_padded
    KS = -(-(BINS - K0) // V) * V  # the smoothed bins, padded to whole vectors
    assert K0 + KS <= BP and BP % V == 0 and WIN % V == 0 and (N_FFT - WIN) % V == 0

    def c(v: float) -> tvm.tirx.PrimExpr:
        return T.FloatImm(dt, v)

    def ci(v: int) -> tvm.tirx.PrimExpr:
        return T.IntImm(it, v)

    def cu(v: int) -> tvm.tirx.PrimExpr:
        return T.IntImm(ut, v)

    def horner(coefs: list[float], z: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
        p = c(coefs[-1])
        for a in reversed(coefs[:-1]):
            p = p * z + c(a)
        return p

    @T.macro
    def vexp(arg, i, v, tf):
        # arg[i] = exp(arg[i]): n = round(x / ln 2) by the magic-number sum (its low bits are
        # n), r = x - n ln 2 in two parts, exp(r) by its Taylor series (|r| <= ln 2 / 2),
        # times 2^n built in the exponent bits
        tf[0, v] = T.min(T.max(arg[i], c(-xmax)), c(xmax))
        tf[1, v] = tf[0, v] * c(LOG2E) + c(magic)
        tf[2, v] = tf[1, v] - c(magic)
        tf[0, v] = (tf[0, v] - tf[2, v] * c(ln2_hi)) - tf[2, v] * c(ln2_lo)
        arg[i] = horner(exp_taylor, tf[0, v]) * T.reinterpret(
            dt,
            T.shift_left(
                T.reinterpret(it, tf[1, v]) - T.reinterpret(it, c(magic)) + ci(bias), ci(mbits)
            ),
        )

    @T.macro
    def vlog(arg, i, v, tf, ti):
        # arg[i] = log(arg[i]) for a positive normal arg[i]: arg = m 2^e with m in
        # [sqrt(1/2), sqrt(2)) from the bits (musl's split), log m = 2 atanh(s) =
        # 2 s (1 + s^2 / 3 + s^4 / 5 + ...), s = (m - 1) / (m + 1)
        # In unsigned arithmetic, with the exponent offset by ebias so the shift is a logical
        # one and e a float by the magic-number sum (AVX2 has neither an arithmetic 64-bit
        # shift nor an int64 -> double conversion): ti = e + ebias
        ti[0, v] = T.shift_right(
            T.reinterpret(ut, arg[i]) - cu(sqrt_half_bits) + cu(ebias << mbits), cu(mbits)
        )
        tf[0, v] = T.reinterpret(
            dt, T.reinterpret(ut, arg[i]) - T.shift_left(ti[0, v], cu(mbits)) + cu(ebias << mbits)
        ) - c(1.0)
        tf[1, v] = tf[0, v] / (c(2.0) + tf[0, v])
        tf[2, v] = tf[1, v] * tf[1, v]
        tf[0, v] = T.reinterpret(dt, ti[0, v] + T.reinterpret(ut, c(magic))) - c(magic + ebias)
        arg[i] = tf[0, v] * c(ln2_hi) + (
            tf[0, v] * c(ln2_lo)
            + (c(2.0) * tf[1, v] + c(2.0) * tf[1, v] * tf[2, v] * horner(atanh_series, tf[2, v]))
        )

    fft = fft_macro(V, FO["w32"], FO["w1024"])

    @T.prim_func
    def envelope_frame(
        x_h: T.handle,
        acc_h: T.handle,
        lo: T.int64,
        goal: T.Buffer((NM,), "float64"),
        share: T.float64,
        clip: T.float64,
        ftab: T.Buffer((FS,), dt),
        itab: T.Buffer((IS,), "int32"),
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        n = T.int64()
        x = T.match_buffer(x_h, (n,), "float64")
        acc = T.match_buffer(acc_h, (n,), "float64")
        xw = T.alloc_buffer((N_FFT,), dt)
        # the FFT's arrays, also seen flat (with room for Z[NC] = Z[0] after them)
        af = T.alloc_buffer((NC + 16,), dt)
        bf = T.alloc_buffer((NC + 16,), dt)
        ar = T.decl_buffer((R, R), dt, data=af.data)
        ai = T.decl_buffer((R, R), dt, data=bf.data)
        br = T.alloc_buffer((R, R), dt)
        bi = T.alloc_buffer((R, R), dt)
        xr = T.alloc_buffer((BP,), dt)
        xi = T.alloc_buffer((BP,), dt)
        mag = T.alloc_buffer((BP + MV,), dt)
        gain = T.alloc_buffer((BP,), dt)
        mel = T.alloc_buffer((NM,), dt)
        gb = T.alloc_buffer((NM,), dt)
        mn = T.alloc_buffer((NM,), dt)
        lane = T.alloc_buffer((MV,), dt)
        ys = T.alloc_buffer((WIN,), dt)
        sm = T.alloc_buffer((BP,), dt)
        nr = T.alloc_buffer((BP,), dt)
        tf = T.alloc_buffer((3, VS), dt, scope="local")
        ti = T.alloc_buffer((1, VS), ut, scope="local")
        zf = T.alloc_buffer((2,), dt)  # the frame's scalars in dtype: share, clip
        zf[0] = T.Cast(dt, share)
        zf[1] = T.Cast(dt, clip)
        # the windowed frame, zero-padded to N_FFT
        for o in range(WIN // V):
            for v in T.vectorized(V):
                xw[o * V + v] = T.Cast(dt, x[lo + o * V + v]) * ftab[FO["window"] + o * V + v]
        for o in range((N_FFT - WIN) // V):
            for v in T.vectorized(V):
                xw[WIN + o * V + v] = c(0.0)
        # z[n] = xw[2n] + i xw[2n + 1] at [n // 32, n % 32]
        # (two contiguous vectors, their even and odd lanes shuffled out)
        for r in range(R):
            for co in range(R // V):
                ar[r, T.ramp(co * V, 1, V)] = T.Shuffle(
                    [
                        xw[T.ramp(2 * (r * R + co * V), 1, V)],
                        xw[T.ramp(2 * (r * R + co * V) + V, 1, V)],
                    ],
                    [2 * i for i in range(V)],
                )
                ai[r, T.ramp(co * V, 1, V)] = T.Shuffle(
                    [
                        xw[T.ramp(2 * (r * R + co * V), 1, V)],
                        xw[T.ramp(2 * (r * R + co * V) + V, 1, V)],
                    ],
                    [2 * i + 1 for i in range(V)],
                )
        fft(ar, ai, br, bi, ftab)
        # the split: X[k] from Z[k] and Z[NC - k] (Z[NC] = Z[0]), k = 0..NC - 1; then NC
        af[NC] = af[0]
        bf[NC] = bf[0]
        for o in range(NC // V):
            for v in T.vectorized(V):
                xr[o * V + v] = c(0.5) * (
                    (af[o * V + v] + af[NC - o * V - v])
                    + ftab[FO["w2048"] + o * V + v] * (bf[o * V + v] + bf[NC - o * V - v])
                    + ftab[FO["w2048"] + BP + o * V + v] * (af[o * V + v] - af[NC - o * V - v])
                )
                xi[o * V + v] = c(0.5) * (
                    (bf[o * V + v] - bf[NC - o * V - v])
                    - ftab[FO["w2048"] + o * V + v] * (af[o * V + v] - af[NC - o * V - v])
                    + ftab[FO["w2048"] + BP + o * V + v] * (bf[o * V + v] + bf[NC - o * V - v])
                )
                mag[o * V + v] = T.sqrt(
                    xr[o * V + v] * xr[o * V + v] + xi[o * V + v] * xi[o * V + v]
                )
        # Nyquist (W = -1: the formula's value, rounded once), and zeros in the padding
        xr[NC] = af[0] - bf[0]
        xi[NC] = c(0.0)
        mag[NC] = T.fabs(xr[NC])
        for k in range(BINS, BP):
            xr[k] = c(0.0)
            xi[k] = c(0.0)
        for k in range(BINS, BP + MV):
            mag[k] = c(0.0)
        # the mel: one contiguous run of bins per band, MV lanes at a time
        for b in range(NM):
            for l in T.vectorized(MV):
                lane[l] = c(0.0)
            for j in range(itab[IO["chunks"] + b]):
                for l in T.vectorized(MV):
                    lane[l] = (
                        lane[l]
                        + ftab[FO["fbw"] + itab[IO["offset"] + b] + j * MV + l]
                        * mag[itab[IO["start"] + b] + j * MV + l]
                    )
            mel[b] = lane[0]
            for l in range(1, MV):
                mel[b] = mel[b] + lane[l]
        # each band's clipped gain, and the RMS of a noise of its mel (NOISE_RMS_OVER_MEAN)
        for o in range(NM // V2):
            for v in T.vectorized(V2):
                gb[o * V2 + v] = T.max(mel[o * V2 + v], c(floor))
                vlog(gb, o * V2 + v, v, tf, ti)
                gb[o * V2 + v] = T.min(
                    T.max(T.Cast(dt, goal[o * V2 + v]) - gb[o * V2 + v], -zf[1]), zf[1]
                )
                mn[o * V2 + v] = mel[o * V2 + v] * ftab[FO["noise_rms"] + o * V2 + v]
        # spread to the bins: each bin's two filters' values, weighted by their shares of it,
        # as two broadcasts over the run of bins whose first filter is band b (_segments; a
        # run's padding is overwritten by the next run): the gains, and the RMS of a noise of
        # the bands' mels (for the smoothing)
        for b in range(NM):
            for j in range(itab[IO["schunks"] + b]):
                for l in T.vectorized(MV):
                    gain[itab[IO["sstart"] + b] + j * MV + l] = (
                        gb[b] * ftab[FO["spw"] + itab[IO["soffset"] + b] + j * MV + l]
                        + gb[T.min(b + 1, NM - 1)]
                        * ftab[FO["spw"] + SPW + itab[IO["soffset"] + b] + j * MV + l]
                    )
                    nr[itab[IO["sstart"] + b] + j * MV + l] = (
                        mn[b] * ftab[FO["spw"] + itab[IO["soffset"] + b] + j * MV + l]
                        + mn[T.min(b + 1, NM - 1)]
                        * ftab[FO["spw"] + SPW + itab[IO["soffset"] + b] + j * MV + l]
                    )
        for k in range(BINS, BP):  # past the bins: finite values for the padding lanes
            gain[k] = c(0.0)
            nr[k] = c(0.0)
        if zf[0] != c(0.0):
            # from K0 up: the clipped log of the noise RMS over the magnitude, times the share
            for o in range(KS // V):
                for v in T.vectorized(V):
                    sm[K0 + o * V + v] = T.max(nr[K0 + o * V + v], c(tiny)) / T.max(
                        mag[K0 + o * V + v], c(tiny)
                    )
                    vlog(sm, K0 + o * V + v, v, tf, ti)
                    gain[K0 + o * V + v] = gain[K0 + o * V + v] + zf[0] * T.min(
                        T.max(sm[K0 + o * V + v], -zf[1]), zf[1]
                    )
        for o in range(BP // V):
            for v in T.vectorized(V):
                vexp(gain, o * V + v, v, tf)
                xr[o * V + v] = xr[o * V + v] * gain[o * V + v]
                xi[o * V + v] = xi[o * V + v] * gain[o * V + v]
        # the inverse split, conjugated: conj Z[k] for k = 0..NC-1 at [k // 32, k % 32], with
        # Z[k] = E[k] + i O[k], E = (Y[k] + conj Y[NC-k]) / 2, O = (Y[k] - conj Y[NC-k]) W^-k / 2
        for r in range(R):
            for col in T.vectorized(R):
                ar[r, col] = c(0.5) * (
                    (xr[r * R + col] + xr[NC - r * R - col])
                    - (xi[r * R + col] + xi[NC - r * R - col]) * ftab[FO["w2048"] + r * R + col]
                    + (xr[r * R + col] - xr[NC - r * R - col])
                    * ftab[FO["w2048"] + BP + r * R + col]
                )
                ai[r, col] = c(-0.5) * (
                    (xi[r * R + col] - xi[NC - r * R - col])
                    + (xr[r * R + col] - xr[NC - r * R - col]) * ftab[FO["w2048"] + r * R + col]
                    + (xi[r * R + col] + xi[NC - r * R - col])
                    * ftab[FO["w2048"] + BP + r * R + col]
                )
        fft(ar, ai, br, bi, ftab)
        # y[2n] = Re z[n], y[2n + 1] = Im z[n], z = conj(FFT(conj Z)) / NC: the two halves of
        # each interleaved pair of vectors shuffled together; windowed, added
        for o in range(WIN // 2 // V2):
            ys[T.ramp(2 * o * V2, 1, V2)] = T.Shuffle(
                [af[T.ramp(o * V2, 1, V2)] * c(1.0 / NC), bf[T.ramp(o * V2, 1, V2)] * c(-1.0 / NC)],
                [i // 2 + (i % 2) * V2 for i in range(V2)],
            )
            ys[T.ramp(2 * o * V2 + V2, 1, V2)] = T.Shuffle(
                [af[T.ramp(o * V2, 1, V2)] * c(1.0 / NC), bf[T.ramp(o * V2, 1, V2)] * c(-1.0 / NC)],
                [V2 // 2 + i // 2 + (i % 2) * V2 for i in range(V2)],
            )
        for o in range(WIN // V):
            for v in T.vectorized(V):
                acc[lo + o * V + v] = acc[lo + o * V + v] + T.Cast(
                    "float64", ys[o * V + v] * ftab[FO["window"] + o * V + v]
                )

    return envelope_frame, lay


def build_envelope_kernel(
    target: dict[str, object], dtype: str = "float64", smoothing_hz: float = 4000.0
) -> tuple[tvm.runtime.Module, Layout]:
    """Compile the frame function ("main") for a target dict (models/kernel/isa.py)."""
    bits = 512 if str(target.get("mcpu", "")) in WIDE_MCPUS else 256
    func, lay = make_envelope_kernel(dtype, smoothing_hz, bits)
    mod = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(target))
    return mod, lay


class EnvelopeModule:
    """The compiled frame and its tables, built once and shared: `frame()` gives each
    EnvelopeCorrector its own FrameKernel. `module`: build_envelope_kernel's (or that module
    exported and loaded again) for `dtype` and `smoothing_hz`."""

    def __init__(
        self, module: tvm.runtime.Module, dtype: str = "float64", smoothing_hz: float = 4000.0
    ) -> None:
        self.module = module
        self.fn = module["main"]
        ftab, itab = Layout().tables(dtype)
        self.ftab, self.itab = tvm.runtime.tensor(ftab), tvm.runtime.tensor(itab)
        self.n_mels = Layout().n_mels
        self.smoothing_hz = smoothing_hz
        self.dtype = dtype

    @classmethod
    def build(
        cls, target: dict[str, object], dtype: str = "float64", smoothing_hz: float = 4000.0
    ) -> EnvelopeModule:
        return cls(build_envelope_kernel(target, dtype, smoothing_hz)[0], dtype, smoothing_hz)

    def frame(self) -> CompiledFrame:
        return CompiledFrame(self)


class CompiledFrame:
    """EnvelopeCorrector's FrameKernel (models/dsp/envelope.py) on the compiled frame: one call
    per frame of a pass, on the corrector's own buffers through zero-copy DLPack views (made when
    the buffers change, i.e. when the corrector's grow: one CompiledFrame per corrector keeps
    them), the target copied into an aligned buffer."""

    def __init__(self, module: EnvelopeModule) -> None:
        self._m = module
        self._fn, self._ftab, self._itab = module.fn, module.ftab, module.itab
        self._goal = aligned((module.n_mels,), np.float64)
        self._goal_view = tvm.runtime.from_dlpack(self._goal)
        # the buffers the views are of, the views, and the last frame offset they hold
        self._x: np.ndarray | None = None
        self._acc: np.ndarray | None = None
        self._x_view: object = None
        self._acc_view: object = None
        self._last = -1
        self.smoothing_hz = module.smoothing_hz
        self.dtype = module.dtype

    def zeros(self, n: int) -> np.ndarray:
        return aligned((n,), np.float64)

    def _bind(self, x: np.ndarray, acc: np.ndarray) -> None:
        if acc.size != x.size:
            raise ValueError(f"frame outside buffers of {x.size} and {acc.size}")
        self._x_view, self._acc_view = tvm.runtime.from_dlpack(x), tvm.runtime.from_dlpack(acc)
        self._x, self._acc, self._last = x, acc, x.size - WIN

    def __call__(
        self, x: np.ndarray, acc: np.ndarray, lo: int, goal: np.ndarray, share: float, clip: float
    ) -> None:
        if x is not self._x or acc is not self._acc:  # new buffers (grown, or another caller's)
            self._bind(x, acc)
        if not 0 <= lo <= self._last:
            raise ValueError(f"frame at {lo} outside buffers of {x.size} and {acc.size}")
        self._goal[:] = goal
        self._fn(
            self._x_view, self._acc_view, lo, self._goal_view, share, clip, self._ftab, self._itab
        )
