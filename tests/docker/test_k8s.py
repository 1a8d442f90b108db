"""Kubernetes manifests: schema-valid offline (kubernetes-validate's bundled schemas, strict) and
consistent with each other and with the server (probes, ports, Guaranteed QoS, HPA metric)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
# Oldest version we promise to work on; strict = unknown fields are errors (typos caught).
K8S_VERSION = "1.30"
CRD_KINDS = {"ServiceMonitor"}  # Prometheus Operator CRD: no bundled schema


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def _by_kind() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for _, doc in _docs()}


@pytest.mark.parametrize(("name", "doc"), _docs(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_validates_against_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_KINDS:
        # No schema bundled for CRDs; the consistency test below checks its references.
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{name} {doc['kind']}: {exc.message} at {list(exc.path)}")


def test_expected_kinds_present() -> None:
    kinds = _by_kind()
    for kind in (
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
    ):
        assert kind in kinds, f"missing {kind}"
    assert kinds["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"


def _container(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_is_guaranteed_qos_with_whole_cpus() -> None:
    res = _container(_by_kind())["resources"]
    assert res["requests"] == res["limits"], "Guaranteed QoS needs requests == limits"
    cpu = str(res["limits"]["cpu"])
    assert cpu.isdigit() and int(cpu) >= 1, "the static CPU manager pins only whole CPUs"


def test_deployment_cores_follow_cpu_limit() -> None:
    env = {e["name"]: e for e in _container(_by_kind())["env"]}
    ref = env["SPARROW_CORES"]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu" and str(ref["divisor"]) == "1"
    assert env["SPARROW_HOST"]["value"] == "0.0.0.0"


def test_probes_and_draining() -> None:
    kinds = _by_kind()
    c = _container(kinds)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["port"] in port_names
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert str(port_names["http"]) == env["SPARROW_PORT"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert "preStop" in c["lifecycle"]
    assert pod["terminationGracePeriodSeconds"] > 10, "grace must outlast the preStop sleep"


def test_selectors_match_pod_labels() -> None:
    kinds = _by_kind()
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        kinds["Deployment"]["spec"]["selector"]["matchLabels"],
        kinds["Service"]["spec"]["selector"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    svc_labels = kinds["Service"]["metadata"]["labels"]
    sm = kinds["ServiceMonitor"]["spec"]
    assert sm["selector"]["matchLabels"].items() <= svc_labels.items()
    assert sm["endpoints"][0]["port"] in {p["name"] for p in kinds["Service"]["spec"]["ports"]}


def test_hpa_scales_on_streams_in_flight_served_by_adapter() -> None:
    kinds = _by_kind()
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "sparrow_streams_in_flight"
    adapter = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])
    (rule,) = adapter["rules"]
    assert "sparrow_streams_in_flight" in rule["seriesQuery"]
    assert rule["name"]["as"] == "sparrow_streams_in_flight"
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    # One series per core: the adapter must sum them into one value per pod.
    assert rule["metricsQuery"].startswith("sum(")


def test_hpa_scales_out_before_admission_refuses() -> None:
    """The HPA target must sit below what a pod admits (cores x max streams per core)."""
    kinds = _by_kind()
    c = _container(kinds)
    cores = int(c["resources"]["limits"]["cpu"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    per_pod = cores * int(env["SPARROW_MAX_STREAMS"])
    (metric,) = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"]
    target = float(metric["pods"]["target"]["averageValue"])
    assert 0 < target < per_pod
