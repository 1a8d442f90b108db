"""The `sparrow` command line: light to start, self-describing, clear about missing extras."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import metadata

import pytest

from server.cli import SUBCOMMANDS, build_parser

HEAVY = ("tvm", "numpy", "torch", "scipy", "fastapi")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def modules_loaded_by(argv: list[str]) -> tuple[int, str, list[str]]:
    """Run `python -m server ARGV` in a fresh interpreter; its exit code, stdout, and which
    of HEAVY it imported."""
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = ['sparrow', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('server', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    rc = e.code\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    *printed, last = out.stdout.strip().splitlines()
    result = json.loads(last)
    return result["rc"], "\n".join(printed), result["heavy"]


def test_top_level_help_imports_no_heavy_module() -> None:
    rc, printed, heavy = modules_loaded_by(["--help"])
    assert rc == 0 and heavy == []
    for name in SUBCOMMANDS:
        assert name in printed


def test_version_prints_the_installed_version() -> None:
    rc, printed, heavy = modules_loaded_by(["--version"])
    assert rc == 0 and heavy == []
    assert printed == f"sparrow {metadata.version('sparrow-tts')}"


def test_a_subcommand_imports_only_its_own_module() -> None:
    # `serve --help` needs the server's settings, not torch; training's module is not loaded.
    code = (
        "import sys\n"
        "from server.cli import build_parser\n"
        "build_parser(['serve', '--help'])\n"
        "print('models.train' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_option_has_help(command: str) -> None:
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[command]
    undocumented = [a.option_strings for a in p._actions if a.option_strings and not a.help]
    assert undocumented == [], f"sparrow {command}: options without help: {undocumented}"


def test_train_without_torch_names_the_extra() -> None:
    # None in sys.modules makes `import torch` fail as it does when torch is not installed.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from server.cli import main\n"
        "sys.exit(main(['train', '--steps', '1']))\n"
    )
    out = run_python(code)
    assert out.returncode == 2
    assert "pip install -e '.[train]'" in out.stderr and "torch" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_subcommand_is_a_usage_error() -> None:
    out = run_python("from server.cli import main; main(['nope'])")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_bench_runs_numpy_and_tvm_on_one_thread() -> None:
    # `sparrow bench` pins itself to one core; BLAS and TVM thread pools started at import would
    # still run on the others. A fresh interpreter with a 4-thread BLAS setting in its
    # environment: bench's module sees 1 by the time numpy loads, loadtest's keeps the caller's.
    code = (
        "import os, runpy, sys\n"
        "os.environ['OPENBLAS_NUM_THREADS'] = '4'\n"
        "sys.argv = ['sparrow', sys.argv[1], '--help']\n"
        "try:\n"
        "    runpy.run_module('server', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "import numpy\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ.get('TVM_NUM_THREADS'))\n"
    )
    for command, expected in (("bench", ["1", "1"]), ("loadtest", ["4", "None"])):
        out = subprocess.run(
            [sys.executable, "-c", code, command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-2:] == expected, command
