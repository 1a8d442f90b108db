"""The README's two set-up commands stay true: the test command is the one CI runs."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.DOTALL)[:2]


def test_readme_has_server_and_test_commands() -> None:
    serve, test = setup_commands()
    assert serve.startswith("scripts/setup && ") and ".venv/bin/sparrow serve" in serve
    assert test.startswith("scripts/setup --test && ") and ".venv/bin/python -m pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    _, test = setup_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "\n" not in test
    # The last command CI runs is the README's, character for character.
    assert ci_lines[-1] == test


def test_setup_script_is_executable_and_documents_its_modes() -> None:
    script = ROOT / "scripts" / "setup"
    assert os.access(script, os.X_OK) and os.access(ROOT / ".ci" / "run", os.X_OK)
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--test" in out and "PEP 668" in out
    bad = subprocess.run([script, "--bogus"], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def test_console_script_matches_cli() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'sparrow = "server.cli:main"' in pyproject
