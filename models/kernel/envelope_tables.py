"""The envelope kernel's tables (models/kernel/envelope.py): the window, the FFT's twiddles, and
the filterbank and its spread to the bins as contiguous runs per band, packed into one float and
one int argument."""

from __future__ import annotations

import numpy as np

from models.dsp.envelope import N_FFT, WIN, _tables

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
