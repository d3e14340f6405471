"""The deployment docs keep up with the chart: every metric, alert and switch is described."""

from __future__ import annotations

import re

from chart_render import REPO_ROOT
from promql_queries import KNOWN_METRICS, alert_rules

MONITORING = (REPO_ROOT / "docs" / "monitoring.md").read_text()
DEPLOY = (REPO_ROOT / "docs" / "deploy.md").read_text()


def test_every_metric_is_documented() -> None:
    bases = {re.sub(r"_(bucket|sum|count)$", "", m) for m in KNOWN_METRICS}
    missing = [m for m in sorted(bases) if f"`{m}" not in MONITORING]
    assert not missing


def test_every_alert_is_documented() -> None:
    missing = [r["alert"] for r in alert_rules() if f"`{r['alert']}`" not in MONITORING]
    assert not missing


def test_walkthrough_covers_the_steps() -> None:
    for step in ("docker build", "helm install", "jq '.items[]", "helm test", "Import"):
        assert step in DEPLOY, step


def test_realistic_mock_deployment_is_described() -> None:
    """The values and cluster prerequisites of per-node configs, CDI and pod-resources."""
    for text in (
        "config.nodes",
        "WIDGET_NODE_NAME",
        "--node-name",
        "mode: replace",
        "cdi.enabled",
        "cdi.hostPath",
        "enable_cdi = true",
        "DevicePluginCDIDevices",
        "podResources.interval",
        "pod-resources/kubelet.sock",
    ):
        assert text in DEPLOY, text
    assert "injected_failure" in MONITORING


def test_dra_mode_is_described() -> None:
    """Its values, what it installs, its prerequisites and how to see it work."""
    section = DEPLOY.partition("### DRA mode")[2].partition("\n## ")[0]
    for text in (
        "api: dra",
        "dra.enabled",
        "dra.deviceClasses.enabled",
        "dra.validatingAdmissionPolicy.enabled",
        "serviceAccount.create",
        "rbac.create",
        "plugins_registry",
        "WIDGET_KUBELET_ROOT_DIR",
        "cdi.hostPath",
        "Kubernetes 1.34",
        "enable_cdi = true",
        "CRI-O",
        "ValidatingAdmissionPolicy",
        "authentication.kubernetes.io/node-name",
        "widget-supervisor resources --config devices.yaml -o dra",
        "kubectl get resourceslices",
        "kubectl get deviceclasses",
        "tests.deviceClass",
    ):
        assert text in section, text


def test_simulated_nodes_are_described() -> None:
    """The simulator's values, what the chart renders for it, and how its metrics are kept
    apart from the node agents'."""
    section = DEPLOY.partition("### Simulated nodes (KWOK)")[2].partition("\n## ")[0]
    for text in (
        "simulate.enabled",
        "simulate.nodeSelector",
        "simulate.replicas",
        "simulate.daemonSetAffinity",
        "simulate.affinity",
        "simulate.serviceAccount.create",
        "WIDGET_NODE_SELECTOR",
        "WIDGET_QPS",
        "WIDGET_BURST",
        "WIDGET_LEADER_ELECT=true",
        "WIDGET_LEADER_ELECTION_NAMESPACE",
        "WIDGET_LEADER_ELECTION_ID",
        "POD_NAME",
        "`nodes/status` patch",
        "resourceslices",
        "Lease",
        "type NotIn [kwok]",
        "honorLabels: true",
        "runAsNonRoot",
        "kubectl get nodes -l type=kwok",
    ):
        assert text in section, text
    fleet_row = MONITORING[MONITORING.index("| Simulated fleet |") :]
    for panel in ("Simulated nodes", "Simulated capacity, allocatable and in use",
                  "Node status writes by result"):  # fmt: skip
        assert f"| {panel} |" in fleet_row, panel
    assert "honor_labels: true" in MONITORING
