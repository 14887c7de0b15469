"""The Helm chart deploy/helm/auto-healer, rendered offline by Helm's own engine.

helm-python-sdk binds Helm's Go SDK (v4): `Chart.render` is `helm template` and `lint` is
`helm lint`, with no helm binary and no cluster. Each rendered object is validated strictly
against Kubernetes 1.30 (kubernetes-validate); the prometheus-operator objects, which it has no
schema for, are checked against the Service they scrape and by promtool. deploy/k8s/ is the
chart's render (`make manifests`).
"""

from __future__ import annotations

import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.test_deploy_config import K8S, K8S_VERSION, ROOT

CHART = ROOT / "deploy" / "helm" / "auto-healer"
RENDER = runpy.run_path(str(ROOT / "deploy" / "helm" / "render.py"))
RULES = CHART / "files" / "alerts.rules.yaml"
OPERATOR = "monitoring.coreos.com/v1"
ALL_ON = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
}
VALUE_SETS = {
    "defaults": {},
    "monitoring": ALL_ON,
    "single, own playbooks, pinned, no policy": {
        **ALL_ON,
        "replicaCount": 1,
        "playbooks": {"existingConfigMap": "my-playbooks"},
        "image": {"digest": "sha256:" + "a" * 64},
        "networkPolicy": {"enabled": False},
        "serviceAccount": {"create": False, "name": "healer"},
        "secret": {"gitCredentialsKey": ""},
    },
}


def objects(values: dict[str, Any], release: str = "auto-healer") -> dict[str, dict[str, Any]]:
    """The chart's objects for `values`, by kind (each kind renders at most once)."""
    out = helm.Chart.load(str(CHART)).render(values, name=release, namespace="hive")
    docs = [d for path, text in out.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]  # fmt: skip
    by_kind = {d["kind"] + ("/" + d["metadata"]["name"] if d["kind"] == "ConfigMap" else ""): d
               for d in docs}  # fmt: skip
    assert len(by_kind) == len(docs), "a kind rendered twice"
    return by_kind


def test_chart_lints_strictly() -> None:
    """`helm lint --strict`: no errors and no warnings."""
    report = helm.lint(str(CHART), strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_validates(values: dict[str, Any]) -> None:
    """Every Kubernetes object the chart renders validates strictly against Kubernetes 1.30."""
    docs = objects(values)
    for doc in docs.values():
        if doc["apiVersion"] != OPERATOR:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises if invalid
    assert "Secret" not in docs  # secrets are references, never values


def test_values_flags_switch_the_optional_objects() -> None:
    """Monitoring objects only when asked; no PDB for one replica; your own playbooks used."""
    defaults = objects({})
    assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget",
            "ConfigMap/auto-healer-playbooks"} <= set(defaults)  # fmt: skip
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap/auto-healer-dashboard"} & set(
        defaults
    )
    odd = objects(VALUE_SETS["single, own playbooks, pinned, no policy"])
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap/auto-healer-dashboard"} <= set(odd)
    assert not {"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount",
                "ConfigMap/auto-healer-playbooks"} & set(odd)  # fmt: skip
    pod = odd["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["playbooks"]["configMap"]["name"] == "my-playbooks"
    assert "git-credentials" not in volumes
    assert pod["serviceAccountName"] == "healer"
    assert pod["containers"][0]["image"].endswith("@sha256:" + "a" * 64)


def test_secret_references_come_from_values() -> None:
    """Every secret the pod reads is a key of the one named Secret; optional ones are marked."""
    env = objects({"secret": {"name": "hive-secrets"}})["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env}
    assert {r["name"] for r in refs.values()} == {"hive-secrets"}
    assert "optional" not in refs["NATS_PASSWORD"]
    assert refs["PAGER_ROUTING_KEY"]["optional"] is True


def test_service_monitor_scrapes_the_services_metrics_port() -> None:
    """The ServiceMonitor selects the Service by its labels and scrapes its named port."""
    docs = objects(ALL_ON)
    monitor, service = docs["ServiceMonitor"], docs["Service"]
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in ports


def test_prometheus_rule_is_the_checked_rule_file_for_the_release(tmp_path: Path) -> None:
    """The PrometheusRule holds files/alerts.rules.yaml, its job set to the release's service."""
    docs = objects(ALL_ON, release="hive")
    spec = docs["PrometheusRule"]["spec"]
    job = docs["Service"]["metadata"]["name"]
    assert job == "hive-auto-healer"
    expected = yaml.safe_load(RULES.read_text().replace('job="auto-healer"', f'job="{job}"'))
    assert spec == expected
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmap_holds_the_dashboard() -> None:
    """The Grafana sidecar's ConfigMap carries files/dashboard.json unchanged."""
    cm = objects(ALL_ON)["ConfigMap/auto-healer-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["auto-healer.json"] == (CHART / "files" / "dashboard.json").read_text()


def test_network_policy_lets_scrapes_in_and_dns_nats_git_out() -> None:
    """Ingress only to the metrics port; egress to DNS, NATS, HTTPS and SSH, nothing else."""
    docs = objects({})
    policy, deploy = docs["NetworkPolicy"], docs["Deployment"]
    spec = policy["spec"]
    assert spec["podSelector"] == deploy["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"]  # only the monitoring namespace, not the world
    out = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert out == {(53, "UDP"), (53, "TCP"), (4222, "TCP"), (443, "TCP"), (22, "TCP")}


def test_k8s_manifests_are_the_charts_render() -> None:
    """deploy/k8s/ is exactly `make manifests`: the chart rendered, nothing edited by hand."""
    expected: dict[Path, str] = RENDER["manifests"]()
    on_disk = {p for p in K8S.rglob("*") if p.is_file()}
    assert on_disk == set(expected), "run: make manifests"
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, f"{path} differs; run: make manifests"
