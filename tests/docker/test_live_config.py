"""The configuration against a LIVE `sparrow serve`: every metric the dashboard and the alert
rules query is exposed on /metrics, the probes' paths are real routes, and the Dockerfile's
HEALTHCHECK command succeeds against the server (and fails when nothing listens)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from test_dockerfile import healthcheck_command, image_like_env

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
METRIC_RE = re.compile(r"\bsparrow_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def queried_metrics() -> dict[str, str]:
    """metric name -> where it is queried (dashboard panel / alert or recording rule)."""
    found: dict[str, str] = {}
    dashboard = json.loads((DOCKER / "grafana/dashboards/sparrow.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in METRIC_RE.findall(target["expr"]):
                found.setdefault(name, f"dashboard panel {panel['title']!r}")
    rules = yaml.safe_load((DOCKER / "prometheus/rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in METRIC_RE.findall(rule["expr"]):
                found.setdefault(name, f"rule {rule.get('alert') or rule.get('record')}")
    adapter = yaml.safe_load((DOCKER / "k8s/prometheus-adapter.yaml").read_text())
    for name in METRIC_RE.findall(adapter["data"]["config.yaml"]):
        found.setdefault(name, "prometheus-adapter rule (HPA)")
    return found


def exposed_sample_names(text: str) -> set[str]:
    """Every sample name /metrics can produce, from its # TYPE lines (children may not exist yet)."""
    names: set[str] = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        if kind == "counter" and family.endswith("_total"):
            # Newer prometheus_client names the counter family with its _total sample name.
            family = family.removesuffix("_total")
        names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def test_every_queried_metric_is_exposed(served: str) -> None:
    text = httpx.get(served + "/metrics", timeout=10).text
    exposed = exposed_sample_names(text)
    queried = queried_metrics()
    assert len(queried) >= 12, queried  # the dashboard covers the whole contract
    missing = {name: where for name, where in queried.items() if name not in exposed}
    assert not missing, f"queried but not on /metrics: {missing}"


def test_probe_paths_are_app_routes(served: str) -> None:
    from server.app import create_app  # noqa: F401  (the app factory the image runs)

    spec = httpx.get(served + "/openapi.json", timeout=10).json()
    deployment = yaml.safe_load((DOCKER / "k8s/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = container[probe]["httpGet"]["path"]
        assert httpx.get(served + path, timeout=10).status_code == 200, path
        assert path in spec["paths"] or path in ("/healthz", "/readyz"), path
    healthcheck = " ".join(healthcheck_command())
    assert "/healthz" in healthcheck
    assert httpx.get(served + "/healthz", timeout=10).status_code == 200


def _run_healthcheck(port: int) -> int:
    env = image_like_env(SPARROW_PORT=str(port))
    return subprocess.run(
        healthcheck_command(), check=False, env=env, capture_output=True, timeout=30
    ).returncode


def test_dockerfile_healthcheck_command_against_live_server(served: str) -> None:
    port = urlsplit(served).port
    assert port is not None
    assert _run_healthcheck(port) == 0
    # Nothing listens on port 9 (discard): the same command must report unhealthy.
    assert _run_healthcheck(9) != 0
