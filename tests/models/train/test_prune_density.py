"""`sparrow train --resume ... --prune-density D`: a trained sparse net pruned further, along the
schedule over the resumed run's own progress, keeping only blocks it already had."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainkit import parse, tiny_run_args

from models.train import checkpoint as checkpoint_mod
from models.train import cli as cli_mod
from models.train import corpus as corpus_mod
from models.train import pruning as pruning_mod
from models.vocoder.config import TINY, VocoderConfig
from models.vocoder.params import SPARSE_WEIGHTS
from models.vocoder.sparsity import block_norms

pytestmark = pytest.mark.slow


def test_cubic_schedule_from_a_resumed_density() -> None:
    d = [pruning_mod.cubic_density(p, 0.05, 0.1, 0.5, initial=0.25) for p in np.linspace(0, 1, 21)]
    assert d[0] == d[2] == 0.25 and d[10] == pytest.approx(0.05) and d[-1] == pytest.approx(0.05)
    assert all(a >= b for a, b in itertools.pairwise(d))


def test_resume_prunes_to_a_lower_density_within_the_old_masks(tmp_path: Path) -> None:
    corpus = corpus_mod.write_synthetic_corpus(tmp_path / "corpus")
    common = tiny_run_args(corpus, tmp_path)
    # A run pruned to TINY's density (0.25) within its 6 steps.
    args = parse(*common, "--name", "r", "--steps", "6", "--prune-start", "0", "--prune-end",
                 "0.3", "--prune-every", "1")  # fmt: skip
    assert cli_mod.run(args) == 0
    before = checkpoint_mod.load_checkpoint(tmp_path / "r")
    assert before["pruner"]["density"] == TINY.density
    old_masks = {k: m.clone() for k, m in before["pruner"]["masks"].items()}

    # Pruned on to 0.125 over the resumed run's own 8 steps; the export keeps that many blocks.
    out = tmp_path / "e"
    args = parse(*common, "--name", "r", "--steps", "14", "--resume", "--prune-density", "0.125",
                 "--prune-start", "0", "--prune-end", "0.5", "--prune-every", "1",
                 "--export", str(out))  # fmt: skip
    assert cli_mod.run(args) == 0
    state = checkpoint_mod.load_checkpoint(tmp_path / "r")
    assert state["step"] == 14 and state["pruner"]["density"] == 0.125
    assert VocoderConfig.from_dict(state["config"]).density == 0.125
    # The run's history records its steps at the new density.
    densities = [h["density"] for h in state["history"] if h["step"] > 6]
    assert densities and densities[-1] == pytest.approx(0.125)
    for k, m in state["pruner"]["masks"].items():
        assert float(m.float().mean()) == pytest.approx(0.125)
        assert not torch.any(m & ~old_masks[k]), k  # only blocks the run already had
    assert VocoderConfig.load(out / "config.json").density == 0.125
    weights = dict(np.load(out / "weights.npz"))
    for name in SPARSE_WEIGHTS:
        norms = block_norms(weights[name], (TINY.block_rows, TINY.block_cols))
        assert np.count_nonzero(norms) == round(norms.size * 0.125), name

    # Refused: pruning up, pruning with growing, pruning without a run to resume.
    def refused(*extra: str) -> bool:
        return cli_mod.run(parse(*common, *extra)) == 1

    assert refused("--name", "r", "--steps", "15", "--resume", "--prune-density", "0.2")
    assert refused("--name", "r", "--steps", "15", "--resume", "--prune-density", "0.1",
                   "--grow-density", "0.5")  # fmt: skip
    assert refused("--name", "n", "--steps", "1", "--prune-density", "0.1")
    assert checkpoint_mod.load_checkpoint(tmp_path / "r")["step"] == 14
