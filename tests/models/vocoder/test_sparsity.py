import numpy as np
import pytest

from models.vocoder import sparsity as sp


@pytest.mark.parametrize("block", [(16, 4), (16, 1), (8, 8)])
def test_bsr_round_trip_and_matvec(block: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 128)).astype(np.float32)
    w *= sp.magnitude_block_mask(w, block, 0.2)
    b = sp.to_bsr(w, block)
    assert b.block == block
    assert np.array_equal(sp.from_bsr(b), w)
    x = rng.normal(size=128)
    assert np.allclose(sp.bsr_matvec(b, x), w.astype(np.float64) @ x)
    assert b.density == pytest.approx(0.2, abs=0.01)


def test_magnitude_mask_keeps_largest_blocks() -> None:
    w = np.zeros((32, 32), np.float32)
    w[0:16, 4:8] = 5.0  # the one big block
    w[16:32, 0:4] = 0.1
    mask = sp.magnitude_block_mask(w, (16, 4), 1 / 16)
    assert mask[0:16, 4:8].all() and mask.sum() == 64


def test_mask_density_and_determinism() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(1536, 512)).astype(np.float32)
    m1 = sp.magnitude_block_mask(w, (16, 4), 0.1)
    assert m1.mean() == pytest.approx(0.1, abs=1e-3)
    assert np.array_equal(m1, sp.magnitude_block_mask(w, (16, 4), 0.1))


def test_block_must_tile_matrix() -> None:
    with pytest.raises(ValueError, match="does not tile"):
        sp.to_bsr(np.zeros((30, 8), np.float32), (16, 4))


def test_grow_mask_keeps_every_block_and_adds_the_highest_scores() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    mask = sp.magnitude_block_mask(w, (16, 4), 0.25)  # 8 of 32 blocks
    scores = rng.normal(size=w.shape).astype(np.float32) * 0.01
    scores[0:16, 0:4] *= 0.0  # a kept block or not, a zero score never wins a place
    scores[48:64, 28:32] = 3.0  # the two blocks the loss wants most
    scores[32:48, 8:12] = -2.0  # (the sign does not matter, the norm does)
    scores *= 1 - mask  # kept blocks' scores are irrelevant: make them small too...
    scores[mask.astype(bool)] = 100.0  # ...or huge: they are kept either way, never counted twice
    grown = sp.grow_block_mask(mask, scores, (16, 4), 0.3125)  # 10 of 32
    assert np.all(grown >= mask) and grown.mean() == pytest.approx(0.3125)
    assert grown[48:64, 28:32].all() and grown[32:48, 8:12].all()
    assert np.array_equal(grown, sp.grow_block_mask(mask, scores, (16, 4), 0.3125))
    assert np.array_equal(sp.grow_block_mask(mask, scores, (16, 4), 0.25), mask)
    with pytest.raises(ValueError, match="never prunes"):
        sp.grow_block_mask(mask, scores, (16, 4), 0.2)
