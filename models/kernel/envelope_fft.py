"""The complex FFT of 1024 inside the envelope kernel (models/kernel/envelope.py), as a TVMScript
macro: a four-step FFT over a 32 x 32 array. DFTs of 32 down the columns (Stockham stages of radix
4, 4 and 2, each row an element, so every load and store is a contiguous vector of the columns),
a twiddle times a transpose, and DFTs of 32 down the columns again: the output in natural order.
The column loops run one vector register (V lanes) at a time: whole 32-lane rows spilled."""

from __future__ import annotations

from typing import Any

from tvm.script import tirx as T

from models.kernel.envelope_tables import NC, ROWS


def fft_macro(V: int, w32: int, w1024: int) -> Any:
    """fft(ar, ai, br, bi, ftab): in place on ar, ai (z[32 r + c] at [r, c]; out: Z[32 k2 + k1]
    at [k2, k1]), br, bi scratch of the same shape; the twiddles W32^k (re [32], im [32]) at
    ftab[w32:], W1024^(c k1) at [c, k1] (re [1024], im [1024]) at ftab[w1024:].

    The transpose works on blocks of up to 8 x 8, one shuffle per output vector (against
    per-lane loads: avx512 float64 4.96 -> 4.27 us a frame, float32 2.76 -> 2.44; float32
    blocks of 16 were slower)."""
    R = ROWS
    TV = min(V, 8)  # the transpose's blocks: TV x TV
    assert R % V == 0 and 4 <= V <= 16

    def twr(ftab, k):  # W32^k, real and imaginary parts
        return ftab[w32 + k]

    def twi(ftab, k):
        return ftab[w32 + R + k]

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
                        ) * twr(ftab, p * s) - (
                            si[q + s * p, co * V + col] - si[q + s * (p + m), co * V + col]
                        ) * twi(ftab, p * s)
                        di[q + 2 * s * p + s, co * V + col] = (
                            sr[q + s * p, co * V + col] - sr[q + s * (p + m), co * V + col]
                        ) * twi(ftab, p * s) + (
                            si[q + s * p, co * V + col] - si[q + s * (p + m), co * V + col]
                        ) * twr(ftab, p * s)

    @T.macro
    def stage4(sr, si, dr, di, ftab, s, m):
        # One Stockham radix-4 stage (OTFFT's): with a, b, c, d = x[q + s(p + i m)], i = 0..3,
        # and W = W32^s:
        #   y[q + s 4p] = (a + c) + (b + d),
        #   y[q + s(4p + 1)] = W^p ((a - c) - i (b - d)),
        #   y[q + s(4p + 2)] = W^2p ((a + c) - (b + d)),
        #   y[q + s(4p + 3)] = W^3p ((a - c) + i (b - d))
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
    def tcol(ar, ai, br, bi, ftab, bk, bc, j):
        # column j of block (bk, bc) of b, i.e. a[bc TV + j, bk TV ..] = b[bk TV .., bc TV + j],
        # times the twiddles there
        ar[bc * TV + j, T.ramp(bk * TV, 1, TV)] = (
            T.Shuffle(
                [br[bk * TV + i, T.ramp(bc * TV, 1, TV)] for i in range(TV)],
                [i * TV + j for i in range(TV)],
            )
            * ftab[T.ramp(w1024 + (bc * TV + j) * R + bk * TV, 1, TV)]
            - T.Shuffle(
                [bi[bk * TV + i, T.ramp(bc * TV, 1, TV)] for i in range(TV)],
                [i * TV + j for i in range(TV)],
            )
            * ftab[T.ramp(w1024 + NC + (bc * TV + j) * R + bk * TV, 1, TV)]
        )
        ai[bc * TV + j, T.ramp(bk * TV, 1, TV)] = (
            T.Shuffle(
                [br[bk * TV + i, T.ramp(bc * TV, 1, TV)] for i in range(TV)],
                [i * TV + j for i in range(TV)],
            )
            * ftab[T.ramp(w1024 + NC + (bc * TV + j) * R + bk * TV, 1, TV)]
            + T.Shuffle(
                [bi[bk * TV + i, T.ramp(bc * TV, 1, TV)] for i in range(TV)],
                [i * TV + j for i in range(TV)],
            )
            * ftab[T.ramp(w1024 + (bc * TV + j) * R + bk * TV, 1, TV)]
        )

    @T.macro
    def fft(ar, ai, br, bi, ftab):
        # In: ar, ai (z[32 r + c] at [r, c]). Out: ar, ai = Z[32 k2 + k1] at [k2, k1].
        # DFT down the columns: radix 4, 4, 2 (32 = 4 * 4 * 2), a -> b -> a -> b
        stage4(ar, ai, br, bi, ftab, 1, 8)
        stage4(br, bi, ar, ai, ftab, 4, 2)
        stage(ar, ai, br, bi, ftab, 16, 1)
        # b[k1, c] transposed into a[c, k1], times W1024^(c k1): TV x TV blocks, each output
        # vector a shuffle of TV row vectors
        for bk in range(R // TV):
            for bc in range(R // TV):
                # the shuffle's lanes are constants: one call per column, written out (j < TV)
                tcol(ar, ai, br, bi, ftab, bk, bc, 0)
                tcol(ar, ai, br, bi, ftab, bk, bc, 1)
                tcol(ar, ai, br, bi, ftab, bk, bc, 2)
                tcol(ar, ai, br, bi, ftab, bk, bc, 3)
                if TV > 4:
                    tcol(ar, ai, br, bi, ftab, bk, bc, 4)
                if TV > 5:
                    tcol(ar, ai, br, bi, ftab, bk, bc, 5)
                if TV > 6:
                    tcol(ar, ai, br, bi, ftab, bk, bc, 6)
                if TV > 7:
                    tcol(ar, ai, br, bi, ftab, bk, bc, 7)
        stage4(ar, ai, br, bi, ftab, 1, 8)
        stage4(br, bi, ar, ai, ftab, 4, 2)
        stage(ar, ai, br, bi, ftab, 16, 1)
        for r in range(R):
            for col in T.vectorized(R):
                ar[r, col] = br[r, col]
                ai[r, col] = bi[r, col]

    return fft
