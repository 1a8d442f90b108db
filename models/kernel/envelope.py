"""The envelope correction's per-frame work (models/dsp/envelope.py, EnvelopeCorrector._frame) as
one compiled TVM call: window, real FFT of N_FFT, magnitudes, mel, clipped gain per band spread
to the bins, the smoothing above smoothing_hz, the gain applied, inverse real FFT, window, and the
overlap-add into the pass's accumulator.

TVM has no FFT op, so the FFT is written here. The real FFT of 2048 is a complex FFT of 1024 (the
even samples as real parts, the odd ones as imaginary parts) and the usual split step. The
complex FFT of 1024 is a four-step one over a 32 x 32 array: DFTs of 32 down the columns, a
twiddle, a transpose, DFTs of 32 down the columns again. Every DFT of 32 works on whole rows
(Stockham radix-2 stages, rows as elements), so all its arithmetic is vectorised over 32 lanes
with contiguous loads and no shuffles; the only strided accesses are the transpose and the
even/odd split of the input and output. The inverse is the forward FFT of the conjugate.

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

from models.dsp.envelope import N_FFT, TINY, WIN, _tables
from models.dsp.features import SPEC
from models.stream import aligned

NC = N_FFT // 2  # the complex FFT's length
ROWS = 32  # the four-step FFT's array: ROWS x ROWS = NC
BINS = N_FFT // 2 + 1
MV = 8  # lanes of the mel's per-band dot products
# Targets with 512-bit vectors (models/kernel/isa.py); others get 256-bit loops.
WIDE_MCPUS = frozenset({"skylake-avx512", "cascadelake", "icelake-server", "znver4"})
BP = -(-BINS // 16) * 16  # bins padded to whole vectors (the padding's results are unused)
assert ROWS * ROWS == NC and WIN % 2 == 0


def _band_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A [2, bins] table of _Tables' (band, value) pair form (the filterbank's weights, or the
    bins' shares of their bands' gains) as one contiguous run of bins per band, zero-padded to
    MV lanes: (first bin [n_mels], run offset in the values [n_mels], run length in MV-chunks
    [n_mels], values [sum of padded runs])."""
    t = _tables()
    n_mels = t.n_mels
    start = np.zeros(n_mels, np.int64)
    chunks = np.zeros(n_mels, np.int64)
    runs = []
    for b in range(n_mels):
        row = np.zeros(BINS)
        for slot in range(2):
            on = (t.band[slot] == b) & (values[slot] != 0)
            row[on] = values[slot][on]
        nz = np.flatnonzero(row)
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        assert np.all(row[lo:hi] != 0), "a band's bins are not one run"
        n = -(-(hi - lo) // MV)
        assert lo + n * MV <= BP
        run = np.zeros(n * MV)
        run[: hi - lo] = row[lo:hi]
        start[b], chunks[b] = lo, n
        runs.append(run)
    offset = np.concatenate([[0], np.cumsum([r.size for r in runs])[:-1]]).astype(np.int64)
    return start, offset, chunks, np.concatenate(runs)


def _segments() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bins grouped by their first band b (_Tables.band[0], nondecreasing); each group's
    second band is b + 1 (or none: share 0), so a group's per-bin values are
    share0 * v[b] + share1 * v[b + 1], a broadcast of two values over a run of bins. Runs
    zero-padded to MV lanes: (first bin [n_mels], run offset [n_mels], run length in MV-chunks
    [n_mels], shares [2, sum of padded runs])."""
    t = _tables()
    n_mels = t.n_mels
    assert np.all(np.diff(t.band[0]) >= 0)
    second = t.share[1] != 0
    assert np.all(t.band[1][second] == t.band[0][second] + 1), "a bin's bands are not adjacent"
    start = np.zeros(n_mels, np.int64)
    chunks = np.zeros(n_mels, np.int64)
    runs = []
    for b in range(n_mels):
        bins = np.flatnonzero(t.band[0] == b)
        lo, hi = (int(bins[0]), int(bins[-1]) + 1) if bins.size else (0, 0)
        n = -(-(hi - lo) // MV)
        assert lo + n * MV <= BP
        run = np.zeros((2, n * MV))
        run[:, : hi - lo] = t.share[:, lo:hi]
        start[b], chunks[b] = lo, n
        runs.append(run)
    offset = np.concatenate([[0], np.cumsum([r.shape[1] for r in runs])[:-1]]).astype(np.int64)
    return start, offset, chunks, np.concatenate(runs, axis=1)


class Layout:
    """Offsets of the float table (one argument) and the int table (another)."""

    def __init__(self) -> None:
        t = _tables()
        self.n_mels = t.n_mels
        self.bins_padded = BP
        self.csr = _band_runs(t.weight)  # the mel: a dot product per band
        self.spread = _segments()  # per band to bins: two broadcasts over a run per band
        sizes = {
            "window": WIN,
            "w32": 2 * ROWS,  # W32^k = exp(-2 pi i k / 32): re, then im
            "w1024": 2 * NC,  # W1024^(c k1) at [c, k1]: re block, then im block
            "w2048": 2 * BP,  # W2048^k = exp(-2 pi i k / 2048), k = 0..NC: re, then im
            "share": 2 * BP,  # _Tables.share, rows padded to BP with zeros
            "noise_rms": self.n_mels,
            "fbw": self.csr[3].size,
            "spw": self.spread[3].size,  # share0 runs, then share1 runs
        }
        self.f: dict[str, int] = {}
        pos = 0
        for name, size in sizes.items():
            self.f[name] = pos
            pos += -(-size // 8) * 8  # 64-byte aligned blocks
        self.f_size = pos
        isizes = {"band": 2 * BP, "start": self.n_mels, "offset": self.n_mels}
        isizes["chunks"] = self.n_mels
        for name in ("sstart", "soffset", "schunks"):
            isizes[name] = self.n_mels
        self.i: dict[str, int] = {}
        pos = 0
        for name, size in isizes.items():
            self.i[name] = pos
            pos += size
        self.i_size = pos

    def tables(self, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        """The float table (in the kernel's dtype) and the int32 table."""
        t = _tables()
        f = np.zeros(self.f_size)
        o = self.f
        f[o["window"] : o["window"] + WIN] = t.window
        k = np.arange(ROWS)
        w = np.exp(-2j * np.pi * k / ROWS)
        f[o["w32"] : o["w32"] + ROWS] = w.real
        f[o["w32"] + ROWS : o["w32"] + 2 * ROWS] = w.imag
        c, k1 = np.meshgrid(np.arange(ROWS), np.arange(ROWS), indexing="ij")
        w = np.exp(-2j * np.pi * (c * k1) / NC).ravel()
        f[o["w1024"] : o["w1024"] + NC] = w.real
        f[o["w1024"] + NC : o["w1024"] + 2 * NC] = w.imag
        k = np.arange(BP)
        w = np.exp(-2j * np.pi * k / N_FFT)
        re, im = w.real.copy(), w.imag.copy()
        re[0], im[0], re[NC], im[NC] = 1.0, 0.0, -1.0, 0.0  # exact: DC and Nyquist stay real
        f[o["w2048"] : o["w2048"] + BP] = re
        f[o["w2048"] + BP : o["w2048"] + 2 * BP] = im
        f[o["share"] : o["share"] + BINS] = t.share[0]
        f[o["share"] + BP : o["share"] + BP + BINS] = t.share[1]
        f[o["noise_rms"] : o["noise_rms"] + self.n_mels] = t.noise_rms
        f[o["fbw"] : o["fbw"] + self.csr[3].size] = self.csr[3]
        f[o["spw"] : o["spw"] + self.spread[3].size] = self.spread[3].ravel()
        i = np.zeros(self.i_size, np.int32)
        i[self.i["band"] : self.i["band"] + BINS] = t.band[0]
        i[self.i["band"] + BP : self.i["band"] + BP + BINS] = t.band[1]
        for name, arr in zip(("start", "offset", "chunks"), self.csr[:3]):
            i[self.i[name] : self.i[name] + self.n_mels] = arr
        for name, arr in zip(("sstart", "soffset", "schunks"), self.spread[:3]):
            i[self.i[name] : self.i[name] + self.n_mels] = arr
        return f.astype(dtype), i


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
    # ln 2 in two parts, the first with trailing zero bits so n * ln2_hi is exact (fdlibm,
    # cephes)
    ln2_hi, ln2_lo = (
        (6.93147180369123816490e-01, 1.90821492927058770002e-10)
        if wide
        else (
            0.693359375,
            -2.12194440e-4,
        )
    )
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

    def zat(buf, k):
        # Z[k] of the four-step FFT's output, k in 0..NC (Z[NC] = Z[0]), and up to BP
        return buf[k % NC // R, k % R]

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

    @T.macro
    def stage(sr, si, dr, di, ftab, s, m):
        # One Stockham radix-2 stage down the columns of an R x R array (rows as elements):
        # y[q + 2sp] = a + b, y[q + 2sp + s] = (a - b) W32^(ps), a = x[q + sp], b = x[q + s(p + m)]
        for p in range(m):
            for q in range(s):
                for co in range(R // V):
                    for col in T.vectorized(V):
                        dr[q + 2 * s * p, co * V + col] = (
                            sr[q + s * p, co * V + col] + sr[q + s * (p + m), co * V + col]
                        )
                        di[q + 2 * s * p, co * V + col] = (
                            si[q + s * p, co * V + col] + si[q + s * (p + m), co * V + col]
                        )
                        dr[q + 2 * s * p + s, co * V + col] = (
                            sr[q + s * p, co * V + col] - sr[q + s * (p + m), co * V + col]
                        ) * ftab[FO["w32"] + p * s] - (
                            si[q + s * p, co * V + col] - si[q + s * (p + m), co * V + col]
                        ) * ftab[FO["w32"] + R + p * s]
                        di[q + 2 * s * p + s, co * V + col] = (
                            sr[q + s * p, co * V + col] - sr[q + s * (p + m), co * V + col]
                        ) * ftab[FO["w32"] + R + p * s] + (
                            si[q + s * p, co * V + col] - si[q + s * (p + m), co * V + col]
                        ) * ftab[FO["w32"] + p * s]

    def twr(ftab, k):  # W32^k, real and imaginary parts
        return ftab[FO["w32"] + k]

    def twi(ftab, k):
        return ftab[FO["w32"] + R + k]

    @T.macro
    def stage4(sr, si, dr, di, ftab, s, m):
        # One Stockham radix-4 stage (OTFFT's): with a, b, c, d = x[q + s(p + i m)], i = 0..3,
        # y[q + s 4p] = (a + c) + (b + d), y[q + s(4p + 1)] = W^p ((a - c) - i (b - d)),
        # y[q + s(4p + 2)] = W^2p ((a + c) - (b + d)), y[q + s(4p + 3)] = W^3p ((a - c) + i (b - d)),
        # W = W32^s
        for p in range(m):
            for q in range(s):
                for co in range(R // V):
                    for col in T.vectorized(V):
                        dr[q + s * 4 * p, co * V + col] = (
                            sr[q + s * p, co * V + col] + sr[q + s * (p + 2 * m), co * V + col]
                        ) + (
                            sr[q + s * (p + m), co * V + col]
                            + sr[q + s * (p + 3 * m), co * V + col]
                        )
                        di[q + s * 4 * p, co * V + col] = (
                            si[q + s * p, co * V + col] + si[q + s * (p + 2 * m), co * V + col]
                        ) + (
                            si[q + s * (p + m), co * V + col]
                            + si[q + s * (p + 3 * m), co * V + col]
                        )
                        # (a - c) - i (b - d) = (amc_r + bmd_i, amc_i - bmd_r), times W^p
                        dr[q + s * (4 * p + 1), co * V + col] = (
                            (sr[q + s * p, co * V + col] - sr[q + s * (p + 2 * m), co * V + col])
                            + (
                                si[q + s * (p + m), co * V + col]
                                - si[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twr(ftab, p * s) - (
                            (si[q + s * p, co * V + col] - si[q + s * (p + 2 * m), co * V + col])
                            - (
                                sr[q + s * (p + m), co * V + col]
                                - sr[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twi(ftab, p * s)
                        di[q + s * (4 * p + 1), co * V + col] = (
                            (sr[q + s * p, co * V + col] - sr[q + s * (p + 2 * m), co * V + col])
                            + (
                                si[q + s * (p + m), co * V + col]
                                - si[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twi(ftab, p * s) + (
                            (si[q + s * p, co * V + col] - si[q + s * (p + 2 * m), co * V + col])
                            - (
                                sr[q + s * (p + m), co * V + col]
                                - sr[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twr(ftab, p * s)
                        # (a + c) - (b + d), times W^2p
                        dr[q + s * (4 * p + 2), co * V + col] = (
                            (sr[q + s * p, co * V + col] + sr[q + s * (p + 2 * m), co * V + col])
                            - (
                                sr[q + s * (p + m), co * V + col]
                                + sr[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twr(ftab, 2 * p * s) - (
                            (si[q + s * p, co * V + col] + si[q + s * (p + 2 * m), co * V + col])
                            - (
                                si[q + s * (p + m), co * V + col]
                                + si[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twi(ftab, 2 * p * s)
                        di[q + s * (4 * p + 2), co * V + col] = (
                            (sr[q + s * p, co * V + col] + sr[q + s * (p + 2 * m), co * V + col])
                            - (
                                sr[q + s * (p + m), co * V + col]
                                + sr[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twi(ftab, 2 * p * s) + (
                            (si[q + s * p, co * V + col] + si[q + s * (p + 2 * m), co * V + col])
                            - (
                                si[q + s * (p + m), co * V + col]
                                + si[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twr(ftab, 2 * p * s)
                        # (a - c) + i (b - d) = (amc_r - bmd_i, amc_i + bmd_r), times W^3p
                        dr[q + s * (4 * p + 3), co * V + col] = (
                            (sr[q + s * p, co * V + col] - sr[q + s * (p + 2 * m), co * V + col])
                            - (
                                si[q + s * (p + m), co * V + col]
                                - si[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twr(ftab, 3 * p * s) - (
                            (si[q + s * p, co * V + col] - si[q + s * (p + 2 * m), co * V + col])
                            + (
                                sr[q + s * (p + m), co * V + col]
                                - sr[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twi(ftab, 3 * p * s)
                        di[q + s * (4 * p + 3), co * V + col] = (
                            (sr[q + s * p, co * V + col] - sr[q + s * (p + 2 * m), co * V + col])
                            - (
                                si[q + s * (p + m), co * V + col]
                                - si[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twi(ftab, 3 * p * s) + (
                            (si[q + s * p, co * V + col] - si[q + s * (p + 2 * m), co * V + col])
                            + (
                                sr[q + s * (p + m), co * V + col]
                                - sr[q + s * (p + 3 * m), co * V + col]
                            )
                        ) * twr(ftab, 3 * p * s)

    @T.macro
    def fft(ar, ai, br, bi, ftab):
        # In: ar, ai (z[32 r + c] at [r, c]). Out: ar, ai = Z[32 k2 + k1] at [k2, k1].
        # DFT down the columns: radix 4, 4, 2 (32 = 4 * 4 * 2), a -> b -> a -> b
        stage4(ar, ai, br, bi, ftab, 1, 8)
        stage4(br, bi, ar, ai, ftab, 4, 2)
        stage(ar, ai, br, bi, ftab, 16, 1)
        # b[k1, c] times W1024^(c k1), transposed into a[c, k1]
        for cc in range(R):
            for k1 in T.vectorized(R):
                ar[cc, k1] = (
                    br[k1, cc] * ftab[FO["w1024"] + cc * R + k1]
                    - bi[k1, cc] * ftab[FO["w1024"] + NC + cc * R + k1]
                )
                ai[cc, k1] = (
                    br[k1, cc] * ftab[FO["w1024"] + NC + cc * R + k1]
                    + bi[k1, cc] * ftab[FO["w1024"] + cc * R + k1]
                )
        stage4(ar, ai, br, bi, ftab, 1, 8)
        stage4(br, bi, ar, ai, ftab, 4, 2)
        stage(ar, ai, br, bi, ftab, 16, 1)
        for r in range(R):
            for col in T.vectorized(R):
                ar[r, col] = br[r, col]
                ai[r, col] = bi[r, col]

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
        ar = T.alloc_buffer((R, R), dt)
        ai = T.alloc_buffer((R, R), dt)
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
        for r in range(R):
            for col in T.vectorized(R):
                ar[r, col] = xw[2 * (r * R + col)]
                ai[r, col] = xw[2 * (r * R + col) + 1]
        fft(ar, ai, br, bi, ftab)
        # the split: X[k] from Z[k] and Z[NC - k] (Z[NC] = Z[0]), k = 0..NC (and the padding)
        for o in range(BP // V):
            for v in T.vectorized(V):
                xr[o * V + v] = c(0.5) * (
                    (zat(ar, o * V + v) + zat(ar, NC - o * V - v))
                    + ftab[FO["w2048"] + o * V + v] * (zat(ai, o * V + v) + zat(ai, NC - o * V - v))
                    + ftab[FO["w2048"] + BP + o * V + v]
                    * (zat(ar, o * V + v) - zat(ar, NC - o * V - v))
                )
                xi[o * V + v] = c(0.5) * (
                    (zat(ai, o * V + v) - zat(ai, NC - o * V - v))
                    - ftab[FO["w2048"] + o * V + v] * (zat(ar, o * V + v) - zat(ar, NC - o * V - v))
                    + ftab[FO["w2048"] + BP + o * V + v]
                    * (zat(ai, o * V + v) + zat(ai, NC - o * V - v))
                )
                mag[o * V + v] = T.sqrt(
                    xr[o * V + v] * xr[o * V + v] + xi[o * V + v] * xi[o * V + v]
                )
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
        # y[2n] = Re z[n], y[2n + 1] = Im z[n], z = conj(FFT(conj Z)) / NC; windowed, added
        for o in range(WIN // 2 // V2):
            for v in T.vectorized(V2):
                ys[2 * (o * V2 + v)] = zat(ar, o * V2 + v) * c(1.0 / NC)
                ys[2 * (o * V2 + v) + 1] = zat(ai, o * V2 + v) * c(-1.0 / NC)
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


class CompiledFrame:
    """EnvelopeCorrector's FrameKernel (models/dsp/envelope.py) on the compiled frame: one call
    per frame of a pass, on the corrector's own buffers (zero-copy DLPack views, kept while the
    buffers stay the same arrays), the target copied into an aligned buffer."""

    def __init__(
        self, target: dict[str, object], dtype: str = "float64", smoothing_hz: float = 4000.0
    ) -> None:
        self._module, lay = build_envelope_kernel(target, dtype, smoothing_hz)
        self._fn = self._module["main"]
        ftab, itab = lay.tables(dtype)
        self._ftab, self._itab = tvm.runtime.tensor(ftab), tvm.runtime.tensor(itab)
        self._goal = aligned((lay.n_mels,), np.float64)
        self._goal_view = tvm.runtime.from_dlpack(self._goal)
        self._views: list[tuple[np.ndarray | None, object]] = [(None, None), (None, None)]
        self.smoothing_hz = smoothing_hz
        self.dtype = dtype

    def zeros(self, n: int) -> np.ndarray:
        return aligned((n,), np.float64)

    def _view(self, slot: int, buf: np.ndarray) -> object:
        held, view = self._views[slot]
        if held is not buf:  # a new buffer (the corrector's grew, or another corrector's)
            view = tvm.runtime.from_dlpack(buf)
            self._views[slot] = (buf, view)
        return view

    def __call__(
        self, x: np.ndarray, acc: np.ndarray, lo: int, goal: np.ndarray, share: float, clip: float
    ) -> None:
        if not 0 <= lo <= x.size - WIN or acc.size != x.size:
            raise ValueError(f"frame at {lo} outside buffers of {x.size} and {acc.size}")
        self._goal[:] = goal
        self._fn(
            self._view(0, x), self._view(1, acc), lo, self._goal_view, share, clip,
            self._ftab, self._itab,
        )  # fmt: skip
