"""The compiled artefact directory: its manifest, file hashes, kernel ABI and config, checked.

compiled/<name>/
  config.json      VocoderConfig (hyperparameters, block shape, kernel dtype)
  weights.npz      reference weights (dense, zeros outside kept blocks); packed to BSR at load
  <isa>.so         one TVM module per ISA level (avx512vnni, avx512, avx2)
  manifest.json    name, trained flag, sparsity, targets, TVM version, sha256 of every file
compiled/manifest.json is the index: every model and which one the server loads by default.

Written by models/compile.py, read by models/runtime.py; neither imports the other. No TVM.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.kernel.packing import COMPATIBLE_ABIS, KERNEL_ABI
from models.vocoder.config import VocoderConfig
from models.vocoder.params import check_weights, upgrade_weights

COMPILED_ROOT = Path(__file__).resolve().parent.parent / "compiled"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ModelLoadError(RuntimeError):
    """A compiled model cannot be used: missing, corrupt, mismatched, or not runnable on this
    CPU."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """manifest.json with the sha256 of every other file in `out_dir`."""
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest["files"] = {name: sha256_file(out_dir / name) for name in files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def update_index(root: Path, name: str, *, make_default: bool) -> None:
    """Record a model in compiled/manifest.json (the server's default comes from here)."""
    index_path = root / MANIFEST
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:
        index = {"default": name, "models": []}
    if name not in index["models"]:
        index["models"].append(name)
    index["models"] = sorted(m for m in index["models"] if (root / m / MANIFEST).exists())
    if make_default or index.get("default") not in index["models"]:
        index["default"] = name
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def default_model_dir(root: Path = COMPILED_ROOT) -> Path:
    """The directory of the model compiled/manifest.json names as the default."""
    index = json.loads((root / MANIFEST).read_text())
    return root / index["default"]


def load_weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return upgrade_weights({k: data[k] for k in data.files})


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelLoadError(
            f"no {MANIFEST} in {model_dir}: not a compiled Sparrow model (run `sparrow compile`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("files", "isas", "config"):
        if key not in manifest:
            raise ModelLoadError(f"{path} lacks the {key!r} field")
    return manifest


def verify_files(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists exists with the sha256 it records."""
    for name, digest in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"{model_dir}: file {name} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise ModelLoadError(
                f"{model_dir}: {name} is corrupt or was changed "
                f"(sha256 {actual[:12]}…, manifest says {digest[:12]}…)"
            )


def check_abi(model_dir: Path, manifest: dict[str, Any]) -> None:
    abi = manifest.get("kernel_abi", 1)  # artefacts from before the field existed are ABI 1
    if abi not in COMPATIBLE_ABIS:
        raise ModelLoadError(
            f"{model_dir} was compiled for kernel ABI {abi}, this Sparrow runs ABI {KERNEL_ABI}: "
            f"rebuild it with `sparrow compile --weights {model_dir}/weights.npz --out {model_dir}`"
        )


def load_config(model_dir: Path, manifest: dict[str, Any]) -> VocoderConfig:
    """config.json, which must equal the config the manifest declares."""
    try:
        config = VocoderConfig.load(model_dir / "config.json")
    except (ValueError, TypeError, AssertionError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{model_dir}/config.json is not a valid vocoder config: {exc}"
        ) from exc
    try:
        declared = VocoderConfig.from_dict(manifest.get("config") or {})
    except (ValueError, TypeError, AssertionError) as exc:
        raise ModelLoadError(f"{model_dir}/manifest.json has an invalid config: {exc}") from exc
    if config != declared:
        raise ModelLoadError(f"{model_dir}: config.json does not match the manifest's config")
    return config


def load_checked(
    model_dir: Path,
) -> tuple[dict[str, Any], VocoderConfig, dict[str, np.ndarray]]:
    """(manifest, config, weights) of an artefact whose files, ABI, config and weights check."""
    manifest = read_manifest(model_dir)
    verify_files(model_dir, manifest)
    check_abi(model_dir, manifest)
    config = load_config(model_dir, manifest)
    weights = load_weights(model_dir / "weights.npz")
    try:
        check_weights(weights, config)
    except ValueError as exc:
        raise ModelLoadError(f"{model_dir}/weights.npz: {exc}") from exc
    return manifest, config, weights
