"""`sparrow compile` artefacts: layout, manifest, index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import compile as comp
from models.artifact import sha256_file
from models.vocoder.config import TINY, VocoderConfig
from models.vocoder.params import random_weights


def test_artifact_is_self_describing(tmp_path: Path) -> None:
    out = comp.build_artifact(random_weights(TINY, 0), TINY, tmp_path / "tiny", isas=["avx2"])
    names = {p.name for p in out.iterdir()}
    assert names == {"avx2.so", "config.json", "weights.npz", "manifest.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trained"] is False and "UNTRAINED" in manifest["description"]
    assert manifest["config"] == TINY.to_dict()
    assert manifest["isas"]["avx2"]["target"]["mcpu"] == "haswell"
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["files"]["weights.npz"] == sha256_file(out / "weights.npz")
    for name, density in manifest["sparsity"]["density"].items():
        assert density == pytest.approx(TINY.density, abs=0.02), name
    assert manifest["tvm_version"]
    assert VocoderConfig.load(out / "config.json") == TINY


def test_cli_compiles_random_model_and_updates_index(tmp_path: Path) -> None:
    from server.cli import main

    assert main(["compile", "--random", "--out", str(tmp_path / "a"), "--isa", "avx2"]) == 0
    index = json.loads((tmp_path / "manifest.json").read_text())
    assert index == {"default": "a", "models": ["a"]}
    weights = tmp_path / "w.npz"
    np.savez(weights, **random_weights(TINY, 3))
    TINY.save(tmp_path / "config.json")
    assert (
        main(
            [
                "compile",
                "--weights",
                str(weights),
                "--config",
                str(tmp_path / "config.json"),
                "--out",
                str(tmp_path / "b"),
                "--isa",
                "avx2",
                "--trained",
                "--default",
            ]
        )
        == 0
    )
    index = json.loads((tmp_path / "manifest.json").read_text())
    assert index == {"default": "b", "models": ["a", "b"]}
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["trained"] is True
    # --pitch-postfilter sets the inference-time filter in the artefact's config
    assert (
        main(
            [
                "compile",
                "--weights",
                str(weights),
                "--config",
                str(tmp_path / "config.json"),
                "--out",
                str(tmp_path / "c"),
                "--isa",
                "avx2",
                "--pitch-postfilter",
                "0.35",
                "--clip-retries",
                "3",
                "--pitch-postfilter-cutoff",
                "4000",
                "--output-advance",
                "79",
                "--voiced-logit-scale",
                "1.2",
                "--unvoiced-logit-scale",
                "0.75",
                "--envelope-passes",
                "2",
                "--envelope-clip",
                "1.2",
                "--envelope-smoothing",
                "0.8",
                "--envelope-smoothing-hz",
                "3500",
            ]
        )
        == 0
    )
    config = VocoderConfig.load(tmp_path / "c" / "config.json")
    assert config.pitch_postfilter == 0.35 and config.clip_retries == 3
    assert config.pitch_postfilter_cutoff_hz == 4000.0 and config.output_advance == 79
    assert (config.voiced_logit_scale, config.unvoiced_logit_scale) == (1.2, 0.75)
    assert (config.envelope_passes, config.envelope_clip) == (2, 1.2)
    assert (config.envelope_smoothing, config.envelope_smoothing_hz) == (0.8, 3500.0)
    plain = VocoderConfig.load(tmp_path / "b" / "config.json")
    assert plain.clip_retries == 0 and not plain.voicing_temperature  # off unless asked
    assert plain.pitch_postfilter_cutoff_hz == 0.0 and plain.output_advance == 0
    assert plain.envelope_passes == 0 and plain.envelope_smoothing == 0.0


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--pitch-postfilter", "1.5"),
        ("--pitch-postfilter", "-0.2"),
        ("--clip-retries", "-1"),
        ("--clip-retries", "9"),
        ("--voiced-logit-scale", "0"),
        ("--unvoiced-logit-scale", "5"),
        ("--pitch-postfilter-cutoff", "12000"),
        ("--pitch-postfilter-cutoff", "-1"),
        ("--output-advance", "301"),
        ("--output-advance", "-1"),
        ("--envelope-passes", "5"),
        ("--envelope-passes", "-1"),
        ("--envelope-clip", "0"),
        ("--envelope-clip", "9"),
        ("--envelope-smoothing", "1.1"),
        ("--envelope-smoothing", "-0.1"),
        ("--envelope-smoothing-hz", "12000"),
    ],
)
def test_inference_settings_out_of_range_are_usage_errors(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["compile", "--random", "--out", str(tmp_path / "a"), flag, value])
    assert exc.value.code == 2 and flag in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_bad_weights_are_rejected(tmp_path: Path) -> None:
    w = random_weights(TINY, 0)
    w["fc2.weight"] = w["fc2.weight"][:, :10]
    with pytest.raises(ValueError, match="fc2.weight"):
        comp.build_artifact(w, TINY, tmp_path / "bad", isas=["avx2"])
    with pytest.raises(ValueError, match="unknown ISA"):
        comp.build_artifact(random_weights(TINY, 0), TINY, tmp_path / "bad", isas=["mmx"])
