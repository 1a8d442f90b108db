"""The post-kernel chain's compiled frames for a runtime's streams: the envelope passes' frame
(models/kernel/envelope.py) and the pitch postfilter's (models/kernel/postfilter.py).

They are not in a voice's artefact: the envelope frame is specialised on a synthesis setting
(`envelope_smoothing_hz`: the first smoothed bin sets its loop bounds), and synthesis settings
never reach the artefact; the postfilter frame serves every voice and setting alike. Each is
compiled on first use for the runtime's ISA (~2 s for the envelope frame, ~0.1 s for the
postfilter's) and kept in the cache directory, keyed by the kernel's source and the TVM version,
so later workers on the machine load it at once. Writing the library needs a C compiler to link
it (TVM's export); where there is none, or the cache cannot be written, each process keeps the
module it built in memory; where it cannot be built at all, streams run the numpy reference: the
audio is the same (float64, tested).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import tvm

from models.dsp.postfilter import runs_compiled
from models.kernel.envelope import EnvelopeModule, build_envelope_kernel
from models.kernel.isa import ISA_TARGETS, host_target
from models.kernel.postfilter import PostfilterModule, build_postfilter_kernel

log = logging.getLogger(__name__)

DTYPE = "float64"  # float32 is ~0.015 µs/sample faster but not bit-identical to the reference
# the sources each kernel is made from, by its cache subdirectory
_SOURCES = {
    "envelope": ("envelope.py", "envelope_fft.py", "envelope_tables.py", "tir_math.py", "isa.py"),
    "postfilter": ("postfilter.py", "isa.py"),
}


def _source_key(kind: str) -> str:
    """A hash of the kernel's source and the TVM version: a cached module from other code is
    never loaded."""
    h = hashlib.sha256(tvm.__version__.encode())
    here = Path(__file__).parent
    for name in _SOURCES[kind]:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def cache_path(isa: str, smoothing_hz: float, cache_dir: str | Path) -> Path:
    """Where the envelope frame for `isa` and `smoothing_hz` is cached under `cache_dir`."""
    name = f"{isa}-{smoothing_hz:g}hz-{DTYPE}-{_source_key('envelope')}.so"
    return Path(cache_dir) / "envelope" / name


def postfilter_cache_path(isa: str, cache_dir: str | Path) -> Path:
    """Where the postfilter frame for `isa` is cached under `cache_dir`."""
    return Path(cache_dir) / "postfilter" / f"{isa}-{_source_key('postfilter')}.so"


def _load_or_build(
    what: str, path: Path, build: Callable[[], tvm.runtime.Module]
) -> tvm.runtime.Module | None:
    """The module cached at `path`, or `build()`'s, cached there (or kept in memory where it
    cannot be); None when it cannot be built."""
    if path.exists():
        try:
            return tvm.runtime.load_module(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt below
            log.warning("cannot load the cached %s %s (%s); rebuilding", what, path, exc)
    try:
        module = build()
    except Exception:
        log.exception("cannot build the compiled %s; streams use numpy", what)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.so")
        module.export_library(str(tmp))
        tmp.replace(path)
        module = tvm.runtime.load_module(str(path))
    except Exception as exc:  # noqa: BLE001 - a read-only cache, or no C compiler to link
        # the library with (a slim image): this process keeps the module it built in memory
        log.warning("cannot cache the %s in %s (%s)", what, path.parent, exc)
    log.info("%s: %s", what, path.name)
    return module


@functools.lru_cache(maxsize=8)
def envelope_module(isa: str, smoothing_hz: float, cache_dir: str) -> EnvelopeModule | None:
    """The compiled envelope frame for `isa` (a name of ISA_TARGETS, or "host") and
    `smoothing_hz`, from `cache_dir` or built into it; None when it cannot be built (streams use
    numpy)."""
    target = ISA_TARGETS.get(isa) or host_target()
    module = _load_or_build(
        f"envelope frame for {isa}, smoothing from {smoothing_hz:g} Hz",
        cache_path(isa, smoothing_hz, cache_dir),
        lambda: build_envelope_kernel(target, DTYPE, smoothing_hz)[0],
    )
    return None if module is None else EnvelopeModule(module, DTYPE, smoothing_hz)


@functools.lru_cache(maxsize=8)
def postfilter_module(isa: str, cache_dir: str) -> PostfilterModule | None:
    """The compiled pitch postfilter frame for `isa`, from `cache_dir` or built into it; None
    when it cannot be built (streams use numpy)."""
    target = ISA_TARGETS.get(isa) or host_target()
    module = _load_or_build(
        f"postfilter frame for {isa}",
        postfilter_cache_path(isa, cache_dir),
        lambda: build_postfilter_kernel(target),
    )
    return None if module is None else PostfilterModule(module)


def prebuild(models: Path, cache_dir: Path) -> list[Path]:
    """Build the chain's frames every voice under `models` (a compiled/ index or one artefact)
    uses, for every ISA it ships, into `cache_dir`: an image built with them never compiles at
    run time. Returns the cached files; a frame that could not be built or cached is an error."""
    import json

    if (models / "config.json").exists():
        dirs = [models]
    else:
        dirs = sorted(p.parent for p in models.glob("*/config.json"))
    built: list[Path] = []

    def check(path: Path, what: str) -> None:
        if not path.exists():  # not built, or kept in memory only (see the log)
            raise RuntimeError(f"cannot build and cache the {what}")
        if path not in built:
            built.append(path)

    for d in dirs:
        config = json.loads((d / "config.json").read_text())
        isas = json.loads((d / "manifest.json").read_text())["isas"]
        if config.get("envelope_passes"):
            hz = float(config["envelope_smoothing_hz"])
            for isa in isas:
                envelope_module(isa, hz, str(cache_dir))
                check(cache_path(isa, hz, cache_dir), f"envelope frame for {isa}, {hz:g} Hz")
        strength = float(config.get("pitch_postfilter", 0.0))
        if runs_compiled(strength, float(config.get("pitch_postfilter_cutoff_hz", 0.0))):
            for isa in isas:
                postfilter_module(isa, str(cache_dir))
                check(postfilter_cache_path(isa, cache_dir), f"postfilter frame for {isa}")
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
