"""docker/compose.yaml and Grafana provisioning: they parse, and every file they mount exists
where the containers expect it (Docker cannot run here, so this is checked statically)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
GRAFANA = DOCKER / "grafana"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path for each bind mount (short syntax src:dst[:ro])."""
    out = {}
    for vol in service.get("volumes", []):
        src, dst = vol.split(":")[:2]
        out[dst] = (DOCKER / src).resolve()
    return out


def test_services_present() -> None:
    services = _compose()["services"]
    assert {"sparrow", "prometheus", "grafana"} <= services.keys()


def test_sparrow_build_pinning_and_healthcheck() -> None:
    sparrow = _compose()["services"]["sparrow"]
    context = (DOCKER / sparrow["build"]["context"]).resolve()
    assert (context / sparrow["build"]["dockerfile"]).is_file()
    assert context == ROOT
    cpus = [c for part in sparrow["cpuset"].split(",") for c in part.split("-")]
    assert cpus and all(c.isdigit() for c in cpus), "cpuset pins whole cores, e.g. '0,1'"
    test = sparrow["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    assert "/healthz" in test[-1]


def test_every_mounted_file_exists() -> None:
    for name, service in _compose()["services"].items():
        for dst, src in _mounts(service).items():
            assert src.exists(), f"{name} mounts missing {src} at {dst}"


def test_prometheus_finds_its_rules_in_the_container() -> None:
    prom = _compose()["services"]["prometheus"]
    mounts = _mounts(prom)
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    config_in_container = PurePosixPath(config_arg.split("=", 1)[1])
    assert str(config_in_container) in mounts
    config = yaml.safe_load(mounts[str(config_in_container)].read_text())
    for rule_file in config["rule_files"]:
        # Prometheus resolves rule_files relative to the config file's directory.
        in_container = config_in_container.parent / rule_file
        assert str(in_container) in mounts, f"{rule_file} not mounted at {in_container}"
        assert mounts[str(in_container)].name == "rules.yml"


def test_grafana_provisioning_points_at_mounted_dashboards() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/sparrow.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert path in mounts, "dashboard provider path must be a mount"
    assert (mounts[path] / "sparrow.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/sparrow.json"


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if "datasource" in node and isinstance(node["datasource"], dict):
            found.append(node["datasource"])
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_dashboard_uses_the_provisioned_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in _compose()["services"]
    dashboard = json.loads((GRAFANA / "dashboards/sparrow.json").read_text())
    refs = _walk(dashboard)
    assert refs, "panels must name their datasource"
    assert all(r == {"type": "prometheus", "uid": source["uid"]} for r in refs)


def test_dashboard_panels_cover_the_brief() -> None:
    dashboard = json.loads((GRAFANA / "dashboards/sparrow.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    assert any(p["type"] == "heatmap" for p in panels)
    assert "vector(40e-6)" in exprs, "constant 40 us budget line"
    assert "rate(sparrow_worker_busy_seconds_total[1m])" in exprs
    for metric in (
        "sparrow_sample_duration_seconds_bucket",
        "sparrow_time_to_first_audio_seconds_bucket",
        "sparrow_streams_in_flight",
        "sparrow_streams_refused_total",
        "sparrow_late_frames_total",
        "sparrow_frames_redrawn_total",
        "sparrow_clipped_frames_total",
        "sparrow_requests_total",
    ):
        assert metric in exprs, f"dashboard lacks {metric}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:  # panels must fit the 24-column grid
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
