"""scripts/bench-lpcnet and its weight generator: what runs without an LPCNet checkout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_wrong_source_is_named(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench-lpcnet"), "--src", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert str(tmp_path) in run.stderr and "src/lpcnet.c" in run.stderr


def test_the_weight_tables_have_the_reference_shapes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/lpcnet_weights.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    header = (tmp_path / "nnet_data.h").read_text()
    # GRU A: 384 units (the sample-rate network's big GRU), a 256-way output
    sizes = {m[0]: int(m[1]) for m in re.findall(r"#define (\w+_SIZE) (\d+)", header)}
    assert sizes.get("GRU_A_STATE_SIZE") == 384
    assert (tmp_path / "nnet_data.c").stat().st_size > 1_000_000
