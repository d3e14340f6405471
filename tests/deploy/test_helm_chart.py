"""The Helm chart renders valid Kubernetes objects that deploy the supervisor as intended."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_render import (
    ALERTS_FILE,
    CHART_DIR,
    DASHBOARD_FILE,
    NAMESPACE,
    REPO_ROOT,
    VALUES_DIR,
    Manifest,
    node_names,
    one,
    render,
    render_notes,
    values_files,
)

# The oldest Kubernetes the chart promises (Chart.yaml kubeVersion allows older, 1.29 is our
# floor in tests; DRA mode needs resource.k8s.io/v1, GA in 1.34) and the newest
# kubernetes-validate ships.
OLDEST = {"device-plugin": "1.29.0", "dra": "1.34.0"}
NEWEST = kubernetes_validate.latest_version()
CRD_GROUPS = {"monitoring.coreos.com/v1"}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "DeviceClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
VALUES_CASES = [pytest.param((), id="defaults")] + [
    pytest.param((path,), id=path.stem) for path in values_files()
]
CONFIG_MOUNT = "/etc/widget-plugin"
EXAMPLES = REPO_ROOT / "config" / "examples"
VALIDATE = [sys.executable, "-m", "supervisor", "validate"]


def supervisor_container(manifests: list[Manifest]) -> dict[str, Any]:
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_chart_lints_strictly(helm: str) -> None:
    for values in [[], *[["--values", str(p)] for p in values_files()]]:
        done = subprocess.run(
            [helm, "lint", "--strict", str(CHART_DIR), *values],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_there_are_enough_values_files() -> None:
    assert {p.stem for p in values_files()} >= {
        "monitoring",
        "existing-configmap",
        "scheduling",
        "realistic-mocks",
        "dra",
        "simulate",
    }


@pytest.mark.parametrize("values", VALUES_CASES)
@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_objects_validate_against_kubernetes_schemas(
    helm: str, values: tuple[Path, ...], which: str
) -> None:
    manifests = render(helm, values=values)
    builtin = [m for m in manifests if m["apiVersion"] not in CRD_GROUPS]
    assert {m["kind"] for m in builtin} >= {"DaemonSet", "Pod"}
    dra = any(m["apiVersion"].startswith("resource.k8s.io/") for m in builtin)
    k8s_version = NEWEST if which == "newest" else OLDEST["dra" if dra else "device-plugin"]
    for manifest in builtin:
        try:
            kubernetes_validate.validate(manifest, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            pytest.fail(f"{name} is invalid for Kubernetes {k8s_version}: {error.message}")


@pytest.mark.parametrize("values", VALUES_CASES)
def test_every_object_is_named_labelled_and_namespaced(helm: str, values: tuple[Path, ...]) -> None:
    for manifest in render(helm, values=values):
        meta = manifest["metadata"]
        if manifest["kind"] in CLUSTER_SCOPED:
            # A DeviceClass is named <type>-<model>.<driver>: a DNS subdomain, not a label.
            assert len(meta["name"]) <= (253 if manifest["kind"] == "DeviceClass" else 63)
            assert "namespace" not in meta, meta["name"]
        else:
            assert len(meta["name"]) <= 63, meta["name"]
            assert meta["namespace"], meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == "widget"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "widget-plugin-0.4.0"


def test_default_config_appears_in_the_configmap(helm: str) -> None:
    manifests = render(helm)
    configmap = one(manifests, "ConfigMap", "-config")
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    chart_values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert config == chart_values["config"]


def test_custom_devices_appear_in_the_configmap(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "scheduling.yaml"])
    config = yaml.safe_load(one(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    assert config["domain"] == "example.org"
    assert config["devices"] == [
        {"type": "gizmo", "model": "mk2", "device": "/dev/gizmo0"},
        {"type": "gizmo", "model": "mk2", "device": "/dev/gizmo1", "id": "gizmo-one"},
        # A quoted number stays a string (the supervisor refuses `model: 2`).
        {"type": "snaffler", "model": "2", "device": "/dev/wibble9"},
    ]


def test_every_config_key_reaches_the_configmap_unchanged(helm: str) -> None:
    """The whole config format (resources, nodes, faults, durations ...), not only devices."""
    values_file = VALUES_DIR / "realistic-mocks.yaml"
    manifests = render(helm, values=[values_file])
    config = yaml.safe_load(one(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    assert config == yaml.safe_load(values_file.read_text())["config"]
    assert {"devices", "resources", "nodes"} <= set(config)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.stem)
def test_every_config_example_is_accepted_as_values(
    helm: str, tmp_path: Path, example: Path
) -> None:
    """Each file of config/examples/ (one per feature), given as `config`, passes the schema and
    the fail checks and reaches the ConfigMap unchanged (plus the chart's default domain)."""
    config = yaml.safe_load(example.read_text())
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": config, "cdi": {"enabled": True}}))
    manifests = render(helm, values=[values])
    rendered = yaml.safe_load(one(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    assert rendered == {"domain": "ska-sdp.org", **config}


def test_helm_test_pod_requests_the_renamed_shared_resource(helm: str) -> None:
    # snaffler/v1 has replicas: 4 and renameShared: true, so the supervisor names it .shared.
    pod = one(render(helm, values=[VALUES_DIR / "realistic-mocks.yaml"]), "Pod")
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert "ska-sdp.org/snaffler-v1.shared" in limits
    assert "ska-sdp.org/snaffler-v1" not in limits


def test_per_node_devices_reach_the_test_pod_and_the_notes(helm: str, tmp_path: Path) -> None:
    """No top-level devices: the test pod asks for the first nodes entry's resource."""
    values = tmp_path / "per-node.yaml"
    nodes = [
        {"match": "gpu-*", "devices": [{"type": "gizmo", "model": "mk2", "device": "/dev/g0"}]}
    ]
    values.write_text(yaml.safe_dump({"config": {"devices": [], "nodes": nodes}}))
    pod = one(render(helm, values=[values]), "Pod")
    assert "ska-sdp.org/gizmo-mk2" in pod["spec"]["containers"][0]["resources"]["limits"]
    notes = render_notes(helm, tmp_path, values=[values])
    assert "- ska-sdp.org/gizmo-mk2 (on nodes matching gpu-*)" in notes
    assert "snaffler" not in notes


def test_existing_configmap_replaces_the_rendered_one(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "existing-configmap.yaml"])
    assert [m for m in manifests if m["kind"] == "ConfigMap"] == []
    volumes = one(manifests, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    (config_volume,) = [v for v in volumes if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == "my-widget-devices"
    test_pod = one(manifests, "Pod")
    limits = test_pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["example.org/gizmo-mk2"] == 1


@pytest.mark.parametrize("values", VALUES_CASES)
def test_config_is_mounted_as_a_watched_directory(helm: str, values: tuple[Path, ...]) -> None:
    manifests = render(helm, values=values)
    container = supervisor_container(manifests)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts.values())
    assert mounts["config"]["mountPath"] == CONFIG_MOUNT
    assert mounts["config"]["readOnly"] is True
    assert container["args"][:3] == ["run", "--config", f"{CONFIG_MOUNT}/config.yaml"]
    # ConfigMap files are read-only for everybody, so --strict-perms accepts them.
    volumes = one(manifests, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    (config_volume,) = [v for v in volumes if v["name"] == "config"]
    assert config_volume["configMap"]["defaultMode"] & 0o022 == 0


@pytest.mark.parametrize("values", VALUES_CASES)
def test_no_checksum_annotation_restarts_pods_on_config_change(
    helm: str, values: tuple[Path, ...]
) -> None:
    template = one(render(helm, values=values), "DaemonSet")["spec"]["template"]
    annotations = template["metadata"].get("annotations") or {}
    assert not [key for key in annotations if "checksum" in key], annotations


@pytest.mark.parametrize(
    ("values", "kubelet_dir"),
    [
        pytest.param((), "/var/lib/kubelet", id="defaults"),
        pytest.param(
            (VALUES_DIR / "scheduling.yaml",),
            "/var/snap/microk8s/common/var/lib/kubelet",
            id="scheduling",
        ),
    ],
)
def test_kubelet_directories_are_host_mounted(
    helm: str, values: tuple[Path, ...], kubelet_dir: str
) -> None:
    manifests = render(helm, values=values)
    spec = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["device-plugins"]["hostPath"]["path"] == f"{kubelet_dir}/device-plugins"
    assert volumes["pod-resources"]["hostPath"]["path"] == f"{kubelet_dir}/pod-resources"
    mounts = {m["name"]: m for m in supervisor_container(manifests)["volumeMounts"]}
    assert mounts["device-plugins"]["mountPath"] == "/var/lib/kubelet/device-plugins"
    assert not mounts["device-plugins"].get("readOnly", False)
    assert mounts["pod-resources"]["mountPath"] == "/var/lib/kubelet/pod-resources"
    assert mounts["pod-resources"]["readOnly"] is True


@pytest.mark.parametrize("values", VALUES_CASES)
def test_supervisor_finds_the_pod_resources_socket_in_its_mount(
    helm: str, values: tuple[Path, ...]
) -> None:
    """The supervisor's default socket is <plugin dir>/../pod-resources/kubelet.sock
    (supervisor/cli.py); the chart passes no socket, so that path must be inside the mount."""
    container = supervisor_container(render(helm, values=values))
    env = env_of(container)
    assert "WIDGET_POD_RESOURCES_SOCKET" not in env
    assert not any("--pod-resources-socket" in arg for arg in container["args"])
    socket = Path(env["WIDGET_PLUGIN_DIR"]).parent / "pod-resources" / "kubelet.sock"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert socket.parent == Path(mounts["pod-resources"]["mountPath"])


def test_cdi_is_off_by_default(helm: str) -> None:
    manifests = render(helm)
    spec = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert "cdi" not in {v["name"] for v in spec["volumes"]}
    assert "WIDGET_CDI_DIR" not in env_of(supervisor_container(manifests))


def test_cdi_mounts_the_host_directory_read_write(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "realistic-mocks.yaml"])
    volumes = {
        v["name"]: v for v in one(manifests, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["cdi"]["hostPath"] == {"path": "/etc/cdi", "type": "DirectoryOrCreate"}
    container = supervisor_container(manifests)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert not mounts["cdi"].get("readOnly", False)
    # The supervisor writes where it is told: the mount (the root filesystem is read-only).
    assert env_of(container)["WIDGET_CDI_DIR"] == mounts["cdi"]["mountPath"]


@pytest.mark.parametrize(
    ("values", "interval"),
    [
        pytest.param((), "10", id="defaults"),
        pytest.param((VALUES_DIR / "realistic-mocks.yaml",), "2.5", id="realistic-mocks"),
    ],
)
def test_pod_resources_interval_reaches_the_supervisor(
    helm: str, values: tuple[Path, ...], interval: str
) -> None:
    env = env_of(supervisor_container(render(helm, values=values)))
    assert env["WIDGET_POD_RESOURCES_INTERVAL"] == interval


def test_daemonset_defaults(helm: str) -> None:
    manifests = render(helm)
    daemonset = one(manifests, "DaemonSet")
    spec = daemonset["spec"]
    pod = spec["template"]["spec"]
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert pod["priorityClassName"] == "system-node-critical"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    container = supervisor_container(manifests)
    assert container["image"] == "widget-device-plugin:0.1.0"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    env = env_of(container)
    assert env["WIDGET_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["WIDGET_METRICS_ADDRESS"] == "0.0.0.0:9464"
    assert env["WIDGET_PLUGIN_DIR"] == "/var/lib/kubelet/device-plugins"
    assert env["WIDGET_STRICT_PERMS"] == "true"
    assert env["WIDGET_LOG_LEVEL"] == "info"
    assert env["WIDGET_LOG_FORMAT"] == "json"
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": 9464, "protocol": "TCP"}
    # Liveness: the event loop answers. Readiness: every resource serves, the config accepted.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_scheduling_values_reach_the_pod(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "scheduling.yaml"])
    pod = one(manifests, "DaemonSet")["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"widgets.example.org/present": "true"}
    assert spec["tolerations"][0]["value"] == "accelerators"
    affinity = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert affinity["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "kubernetes.io/arch"
    assert spec["priorityClassName"] == "widget-critical"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["annotations"] == {"example.org/owner": "platform"}
    container = supervisor_container(manifests)
    assert container["image"] == "registry.example.org/platform/widget-device-plugin:0.1.0-rc1"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"cpu": "200m", "memory": "192Mi"}
    assert container["args"][3:] == ["--log-level=debug"]
    env = env_of(container)
    assert env["EXTRA_SETTING"] == "on"
    assert env["WIDGET_METRICS_ADDRESS"] == "0.0.0.0:9555"
    assert env["WIDGET_LOG_FORMAT"] == "text"
    assert container["ports"][0]["containerPort"] == 9555
    # The test pod tolerates the same taints, so it can land where the devices are.
    test_pod = one(manifests, "Pod")
    assert test_pod["spec"]["tolerations"] == spec["tolerations"]
    assert "example.org/gizmo-mk2" in test_pod["spec"]["containers"][0]["resources"]["limits"]


def test_helm_test_pod_requests_the_first_resource(helm: str) -> None:
    pod = one(render(helm), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["ska-sdp.org/snaffler-v1"] == 1
    script = container["command"][-1]
    assert "WIDGET_VISIBLE_DEVICES" in script
    assert "exit 1" in script
    # The Service selects the DaemonSet's pods; the test pod must not match that selector.
    selector = one(render(helm), "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


def test_helm_test_script_fails_without_the_variable(helm: str) -> None:
    """Run the test pod's shell script here, with and without WIDGET_VISIBLE_DEVICES."""
    script = one(render(helm), "Pod")["spec"]["containers"][0]["command"]
    assert script[:2] == ["/bin/sh", "-c"]
    bare = {k: v for k, v in os.environ.items() if k != "WIDGET_VISIBLE_DEVICES"}
    without = subprocess.run(script, env=bare, capture_output=True, text=True, check=False)
    assert without.returncode == 1
    assert "WIDGET_VISIBLE_DEVICES is not set" in without.stdout
    with_var = subprocess.run(
        script,
        env={**bare, "WIDGET_VISIBLE_DEVICES": "snaffler-v1-a1b2"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert with_var.returncode == 0, with_var.stdout
    assert "snaffler-v1-a1b2" in with_var.stdout


def test_monitoring_is_off_by_default(helm: str) -> None:
    kinds = sorted(m["kind"] for m in render(helm))
    assert kinds == ["ConfigMap", "DaemonSet", "Pod"]


def test_metrics_service_selects_the_plugin_pods(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "monitoring.yaml"])
    service = one(manifests, "Service")
    pod_labels = one(manifests, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] == "metrics"


def test_service_monitor_is_well_formed(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "monitoring.yaml"])
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    service = one(manifests, "Service")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    allowed = {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
    assert set(endpoint) <= allowed
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "10s")
    node, extra = endpoint["relabelings"]
    assert node == {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
        "action": "replace",
    }
    assert extra["targetLabel"] == "namespace"


def test_prometheus_rule_carries_the_alert_file(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "monitoring.yaml"])
    rule = one(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    source = yaml.safe_load(ALERTS_FILE.read_text())
    groups = rule["spec"]["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in source["groups"]]
    for rendered, original in zip(groups, source["groups"], strict=True):
        assert len(rendered["rules"]) == len(original["rules"])
        for got, want in zip(rendered["rules"], original["rules"], strict=True):
            assert {"alert", "expr", "labels", "annotations"} <= set(got)
            assert got["labels"] == {**want["labels"], "team": "platform"}
            assert {k: v for k, v in got.items() if k != "labels"} == {
                k: v for k, v in want.items() if k != "labels"
            }


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(helm: str) -> None:
    manifests = render(helm, values=[VALUES_DIR / "monitoring.yaml"])
    configmap = one(manifests, "ConfigMap", "-dashboard")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "widgets"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Devices"}
    assert configmap["data"]["widget-plugin.json"].strip() == DASHBOARD_FILE.read_text().strip()


def test_notes_tell_how_to_see_capacity_and_request_a_device(helm: str, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path)
    assert (
        "kubectl get nodes -o json | jq '.items[] | .metadata.name, .status.allocatable, "
        ".status.capacity'" in notes
    )
    assert "ska-sdp.org/snaffler-v1: 1" in notes
    assert f"helm test widget -n {NAMESPACE}" in notes
    assert "{{" not in notes


def test_node_names_select_each_entry() -> None:
    config = {"nodes": [{"match": "gpu-*"}, {"match": "rack[0-9]-n?"}, {"match": "exact"}]}
    assert node_names(config) == ["gpu-1", "rack1-n1", "exact", "no-such-node-0"]


@pytest.mark.parametrize("values", [v for v in VALUES_CASES if "existing" not in str(v.id)])
def test_rendered_config_passes_the_supervisors_validate(
    helm: str, values: tuple[Path, ...], tmp_path: Path
) -> None:
    """`widget-supervisor validate` accepts the rendered config on every kind of node: once with
    a node name selecting each `nodes` entry (as WIDGET_NODE_NAME would), once with none."""
    configmap = one(render(helm, values=values), "ConfigMap", "-config")
    text = configmap["data"]["config.yaml"]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    # The mode a ConfigMap volume gives it (defaultMode 0444): strict perms stay on.
    config.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    for node in node_names(yaml.safe_load(text)):
        done = subprocess.run(
            [*VALIDATE, "--config", str(config), "--node-name", node],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            check=False,
        )
        assert done.returncode == 0, f"node {node}:\n{done.stdout}{done.stderr}"
