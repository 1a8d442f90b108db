"""The Dockerfile, checked without a Docker engine: what it copies exists (after .dockerignore),
its entrypoint is the package's real console script, the package it installs contains the demo
and every subpackage, and its HEALTHCHECK command works against a live server (see
test_live_metrics.py for the live part)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _one(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, f"expected one {name}, found {len(found)}"
    return found[0]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Is `rel` (a path in the build context) excluded? Go-style globs with leading **/; as in
    Docker, the last matching pattern wins and `!pattern` re-includes."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pat = raw[1:] if negated else raw
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if hit:
            excluded = not negated
    return excluded


def test_base_image_and_system_packages() -> None:
    assert _one("FROM") == "python:3.11-slim-bookworm"  # Debian 12, whose packages we install
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    for pkg in ("festival", "festvox-us-slt-hts", "libsndfile1"):
        assert re.search(rf"apt-get install[^&]*\b{pkg}\b", runs), f"{pkg} not apt-installed"


def test_runs_as_non_root_user_created_in_the_image() -> None:
    user = _one("USER")
    assert user not in ("root", "0")
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    assert re.search(rf"useradd\b.*\b{user}\b", runs)


def test_entrypoint_is_the_package_console_script() -> None:
    entry = json.loads(_one("ENTRYPOINT"))
    assert entry == ["sparrow", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry[0] in scripts, f"{entry[0]} is not in [project.scripts]"
    module_name, func = scripts[entry[0]].split(":")
    module = __import__(module_name, fromlist=[func])
    assert callable(getattr(module, func))
    assert entry[1] in module.SUBCOMMANDS
    # The subcommand module must import and have the CLI contract.
    serve = __import__(module.SUBCOMMANDS[entry[1]][0], fromlist=["run"])
    assert callable(serve.add_arguments) and callable(serve.run)


def test_env_binds_all_interfaces_and_points_at_compiled_index() -> None:
    env = " ".join(args for word, args in instructions() if word == "ENV")
    assert "SPARROW_HOST=0.0.0.0" in env
    model = re.search(r"SPARROW_MODEL=(\S+)", env)
    assert model is not None
    workdir = _one("WORKDIR")
    # The image's /app/compiled is the repository's compiled/ (COPY compiled/ compiled/).
    rel = os.path.relpath(model.group(1), workdir)
    assert (ROOT / rel / "manifest.json").is_file()


def test_dockerignore_excludes_data_runs_git_caches() -> None:
    pats = dockerignore_patterns()
    for rel in ("data/x.wav", "runs/1/ckpt.pt", ".git/HEAD", "server/__pycache__/a.pyc"):
        assert ignored(rel, pats), f"{rel} would be sent to the build context"
    for rel in ("server/app.py", "models/runtime.py", "compiled/manifest.json", "pyproject.toml"):
        assert not ignored(rel, pats), f"{rel} must be in the build context"


def test_every_copy_source_exists_in_the_build_context() -> None:
    pats = dockerignore_patterns()
    copies = [args for word, args in instructions() if word == "COPY"]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: missing"
            assert not ignored(src.rstrip("/"), pats), f"COPY {src}: excluded by .dockerignore"
    copied = {s.rstrip("/") for a in copies for s in shlex.split(a)[:-1]}
    assert {"models", "server", "compiled", "pyproject.toml"} <= copied
    # pip install . needs the readme named in pyproject.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    if readme:
        assert readme in copied, f"pyproject's readme {readme} is not copied before pip install"


def image_like_env(**extra: str) -> dict[str, str]:
    """The environment with this interpreter's directory first on PATH: the image's commands call
    `python`, which in the image is its Python, and a Debian host may have only `python3` (the
    venv running these tests does have `python`)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, **extra}


def test_requirements_step_lists_pyproject_dependencies() -> None:
    run = next(a for w, a in instructions() if w == "RUN" and "tomllib" in a)
    extract = run.split(">")[0]  # the python -c ... part, before the redirect
    out = subprocess.run(
        ["sh", "-c", extract],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env=image_like_env(),
    )
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out.stdout.split() == deps


def test_constraints_pin_every_dependency_within_pyproject() -> None:
    """docker/constraints.txt pins (==) every runtime dependency, at versions pyproject allows."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower().replace("_", "-")] = spec.version
    run = next(a for w, a in instructions() if w == "RUN" and "tomllib" in a)
    assert "-c /tmp/constraints.txt" in run
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in docker/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (dep, pins[name])


def test_installed_package_has_demo_and_all_subpackages(tmp_path: Path) -> None:
    """`pip install .` (non-editable, as in the image) must ship static/ and every subpackage."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for static in ("index.html", "app.js", "style.css", "sample-mel.json"):
        assert f"server/static/{static}" in names, f"static/{static} not packaged"
    for pkg_root in ("server", "models"):
        for init in (ROOT / pkg_root).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            if "__pycache__" in rel:
                continue
            assert rel in names, f"{rel} missing from the wheel: add it to pyproject packages"


@pytest.mark.parametrize("field", ["--interval", "--timeout", "--retries"])
def test_healthcheck_is_bounded(field: str) -> None:
    assert field in _one("HEALTHCHECK")


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK CMD as argv (exec form)."""
    args = _one("HEALTHCHECK")
    return json.loads(args[args.index("CMD") + 3 :].strip())
