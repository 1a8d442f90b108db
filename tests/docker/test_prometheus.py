"""Prometheus config and alert rules: promtool must accept them, and the unit tests must pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "docker" / "prometheus"
RULES_TEST = Path(__file__).parent / "rules_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (it ships promtool)")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_check_config(promtool: str) -> None:
    out = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout + out.stderr


def test_promtool_check_rules(promtool: str) -> None:
    out = _run(promtool, "check", "rules", str(PROM / "rules.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    out = _run(promtool, "test", "rules", str(RULES_TEST))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_required_alerts_exist() -> None:
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for name in (
        "SparrowSampleLatencyOverBudget",
        "SparrowLateFrames",
        "SparrowClippedFrames",
        "SparrowStreamsRefused",
        "SparrowWorkerRestarts",
        "SparrowTargetDown",
    ):
        assert name in alerts, f"missing alert {name}"
        assert alerts[name]["labels"]["severity"] in ("warning", "critical")
        assert alerts[name]["annotations"]["summary"]
    # The budget alert must compare against the 40 us budget of docs/protocol.md.
    assert "40e-6" in alerts["SparrowSampleLatencyOverBudget"]["expr"]


def test_scrape_job_matches_alert_job() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "sparrow" in jobs, 'the alerts select up{job="sparrow"}'
    target = jobs["sparrow"]["static_configs"][0]["targets"][0]
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    host, port = target.split(":")
    assert host in compose["services"], "scrape target must be the compose service name"
    assert compose["services"][host]["environment"]["SPARROW_PORT"] == port
