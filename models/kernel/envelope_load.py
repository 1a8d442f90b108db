"""The compiled envelope frame (models/kernel/envelope.py) for a runtime's streams.

The frame is specialised on a synthesis setting (`envelope_smoothing_hz`: the first smoothed bin
sets its loop bounds), and synthesis settings never reach a voice's artefact, so it is not in the
artefact's modules: it is compiled on first use for the runtime's ISA and that setting (~2 s) and
kept in the cache directory, keyed by the kernel's source, so later workers on the machine load
it at once. Writing the library needs a C compiler to link it (TVM's export); where there is
none, or the cache cannot be written, each process keeps the module it built in memory; where
it cannot be built at all, streams run the numpy reference: the audio is the same (float64,
tested).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import tvm

from models.kernel.envelope import EnvelopeModule, build_envelope_kernel
from models.kernel.isa import ISA_TARGETS, host_target

log = logging.getLogger(__name__)

DTYPE = "float64"  # float32 is ~0.015 µs/sample faster but not bit-identical to the reference
_SOURCES = ("envelope.py", "envelope_fft.py", "envelope_tables.py", "tir_math.py", "isa.py")


def _source_key() -> str:
    """A hash of the kernel's source and the TVM version: a cached module from other code is
    never loaded."""
    h = hashlib.sha256(tvm.__version__.encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def cache_path(isa: str, smoothing_hz: float, cache_dir: str | Path) -> Path:
    """Where the frame for `isa` and `smoothing_hz` is cached under `cache_dir`."""
    return Path(cache_dir) / "envelope" / f"{isa}-{smoothing_hz:g}hz-{DTYPE}-{_source_key()}.so"


@functools.lru_cache(maxsize=8)
def envelope_module(isa: str, smoothing_hz: float, cache_dir: str) -> EnvelopeModule | None:
    """The compiled frame for `isa` (a name of ISA_TARGETS, or "host") and `smoothing_hz`, from
    `cache_dir` or built into it; None when it cannot be built (streams use numpy)."""
    target = ISA_TARGETS.get(isa) or host_target()
    path = cache_path(isa, smoothing_hz, cache_dir)
    if path.exists():
        try:
            return EnvelopeModule(tvm.runtime.load_module(str(path)), DTYPE, smoothing_hz)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt below
            log.warning("cannot load the cached envelope frame %s (%s); rebuilding", path, exc)
    try:
        module, _ = build_envelope_kernel(target, DTYPE, smoothing_hz)
    except Exception:
        log.exception("cannot build the compiled envelope frame; streams use numpy")
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.so")
        module.export_library(str(tmp))
        tmp.replace(path)
        module = tvm.runtime.load_module(str(path))
    except Exception as exc:  # noqa: BLE001 - a read-only cache, or no C compiler to link
        # the library with (a slim image): this process keeps the module it built in memory
        log.warning("cannot cache the envelope frame in %s (%s)", path.parent, exc)
    log.info("envelope frame for %s, smoothing from %g Hz: %s", isa, smoothing_hz, path.name)
    return EnvelopeModule(module, DTYPE, smoothing_hz)


def prebuild(models: Path, cache_dir: Path) -> list[Path]:
    """Build the frames every voice under `models` (a compiled/ index or one artefact) uses,
    for every ISA it ships, into `cache_dir`: an image built with them never compiles at run
    time. Returns the cached files; a frame that could not be built or cached is an error."""
    import json

    if (models / "config.json").exists():
        dirs = [models]
    else:
        dirs = sorted(p.parent for p in models.glob("*/config.json"))
    built = []
    for d in dirs:
        config = json.loads((d / "config.json").read_text())
        if not config.get("envelope_passes"):
            continue
        hz = float(config["envelope_smoothing_hz"])
        for isa in json.loads((d / "manifest.json").read_text())["isas"]:
            envelope_module(isa, hz, str(cache_dir))
            path = cache_path(isa, hz, cache_dir)
            if not path.exists():  # not built, or kept in memory only (see the log)
                raise RuntimeError(
                    f"cannot build and cache the envelope frame for {isa}, {hz:g} Hz"
                )
            built.append(path)
    return built


if __name__ == "__main__":
    import argparse

    from models.runtime import default_cache_dir

    parser = argparse.ArgumentParser(description=prebuild.__doc__)
    parser.add_argument("models", type=Path, help="compiled/ or one artefact directory")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: the runtime's")
    args = parser.parse_args()
    for path in prebuild(args.models, args.cache_dir or default_cache_dir()):
        print(path)
