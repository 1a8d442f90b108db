"""The README's two set-up commands stay true: the test command is the one CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.DOTALL)[:2]


def test_readme_has_server_and_test_commands() -> None:
    serve, test = setup_commands()
    assert "sparrow serve" in serve and "pip install" in serve
    assert "pytest" in test and "pip install" in test


def test_ci_runs_the_readme_test_command() -> None:
    _, test = setup_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "$(cat .ci/apt-packages.txt)" in test and "$(cat .ci/apt-packages.txt)" in ci
    assert "pip install -e '.[test,train]'" in test and "pip install -q -e '.[test,train]'" in ci
    assert "python3 -m pytest -q" in test and "python3 -m pytest -q" in ci


def test_console_script_matches_cli() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'sparrow = "server.cli:main"' in pyproject
