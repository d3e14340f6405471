"""The chart with `simulate.enabled`: `widget-supervisor simulate` for the cluster's KWOK nodes.

One Deployment (leader election from two replicas on) reads the DaemonSet's ConfigMap, mounted
the same way, as a hardened non-root container with its own ServiceAccount and exactly the RBAC
the simulator uses; the DaemonSet and the simulator keep off the simulated nodes through a node
affinity ANDed with the user's; the simulator's metrics have a Service and ServiceMonitor of
their own, without the DaemonSet's node relabeling. test_daemonset_runs.py runs the rendered
container against the API-server stand-in.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from chart_render import (
    NAMESPACE,
    VALUES_DIR,
    Manifest,
    helm_template,
    one,
    render,
    render_notes,
)

from supervisor import cli

SIM_VALUES = VALUES_DIR / "simulate.yaml"
ON = ("simulate.enabled=true",)
NAME = "widget-widget-plugin-simulator"
SIMULATOR = {"app.kubernetes.io/component": "simulator"}
CONFIG_FILE = "/etc/widget-plugin/config.yaml"
LEADER_ENV = {
    "WIDGET_LEADER_ELECT": "true",
    "WIDGET_LEADER_ELECTION_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    "WIDGET_LEADER_ELECTION_ID": NAME,
    "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
}


def write_values(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def deployment(manifests: list[Manifest]) -> Manifest:
    return one(manifests, "Deployment")


def pod_spec(manifests: list[Manifest], kind: str = "Deployment") -> dict[str, Any]:
    return dict(one(manifests, kind)["spec"]["template"]["spec"])


def container(manifests: list[Manifest], kind: str = "Deployment") -> dict[str, Any]:
    (only,) = pod_spec(manifests, kind)["containers"]
    return dict(only)


def env_of(manifests: list[Manifest]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifests)["env"]}


def is_simulator(manifest: Manifest) -> bool:
    return bool(SIMULATOR.items() <= manifest["metadata"]["labels"].items())


def rules_of(role: Manifest) -> dict[tuple[str, str, tuple[str, ...]], list[str]]:
    """(API group, resource, resourceNames) -> sorted verbs."""
    return {
        (group, resource, tuple(rule.get("resourceNames", ()))): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


# -- on and off ----------------------------------------------------------------------------


KEEP_OFF_KWOK = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": "type", "operator": "NotIn", "values": ["kwok"]}]}],
}}}  # fmt: skip


def test_simulate_is_off_by_default_and_the_daemonset_keeps_off_kwok_nodes(helm: str) -> None:
    """KWOK's nodes take DaemonSet pods and only pretend to run them: the DaemonSet keeps
    off them by default, whether or not this release simulates them."""
    manifests = render(helm)
    assert not [m for m in manifests if is_simulator(m)]
    assert "Deployment" not in {m["kind"] for m in manifests}
    assert pod_spec(manifests, "DaemonSet")["affinity"] == KEEP_OFF_KWOK


def test_the_deployment_runs_simulate_on_the_daemonsets_config(helm: str) -> None:
    manifests = render(helm, set_values=ON)
    sim = deployment(manifests)
    assert sim["metadata"]["name"] == NAME
    assert sim["spec"]["replicas"] == 1
    simulator = container(manifests)
    assert simulator["args"] == ["simulate", "--config", CONFIG_FILE]
    assert simulator["image"] == container(manifests, "DaemonSet")["image"]
    assert env_of(manifests) == {
        "WIDGET_NODE_SELECTOR": "type=kwok",
        "WIDGET_QPS": "5",
        "WIDGET_BURST": "10",
        "WIDGET_METRICS_ADDRESS": "0.0.0.0:9464",
        "WIDGET_LOG_LEVEL": "info",
        "WIDGET_LOG_FORMAT": "json",
        "WIDGET_STRICT_PERMS": "true",
    }
    # The DaemonSet's ConfigMap, mounted as the DaemonSet mounts it: a watched directory.
    ours = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    theirs = {v["name"]: v for v in pod_spec(manifests, "DaemonSet")["volumes"]}
    assert ours["config"] == theirs["config"]
    assert ours["config"]["configMap"]["name"] == "widget-widget-plugin-config"
    mounts = {m["name"]: m for m in simulator["volumeMounts"]}
    plugin_mounts = {m["name"]: m for m in container(manifests, "DaemonSet")["volumeMounts"]}
    assert mounts["config"] == plugin_mounts["config"]
    assert CONFIG_FILE.startswith(mounts["config"]["mountPath"] + "/")
    assert all("subPath" not in m and "subPathExpr" not in m for m in mounts.values())
    (port,) = simulator["ports"]
    assert port == {"name": "metrics", "containerPort": 9464, "protocol": "TCP"}
    assert simulator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert simulator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # The DaemonSet stays, for the real nodes.
    assert container(manifests, "DaemonSet")["args"][0] == "run"


def test_the_existing_configmap_is_the_simulators_too(helm: str, tmp_path: Path) -> None:
    values = write_values(tmp_path, {"simulate": {"enabled": True}})
    manifests = render(helm, values=[VALUES_DIR / "existing-configmap.yaml", values])
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == "my-widget-devices"


def test_values_reach_the_simulator(helm: str) -> None:
    manifests = render(helm, values=[SIM_VALUES])
    sim = deployment(manifests)
    assert sim["spec"]["replicas"] == 2
    simulator = container(manifests)
    assert simulator["args"] == ["simulate", "--config", CONFIG_FILE, "--log-level=debug"]
    env = env_of(manifests)
    assert (env["WIDGET_NODE_SELECTOR"], env["WIDGET_QPS"], env["WIDGET_BURST"]) == (
        "type=kwok",
        "20",
        "40",
    )
    assert env["EXTRA_SETTING"] == "simulated"
    template = sim["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.org/owner": "platform"}
    assert template["spec"]["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    # The DaemonSet's own extraArgs (for `run`) do not reach `simulate`, nor the other way.
    assert container(manifests, "DaemonSet")["args"] == ["run", "--config", CONFIG_FILE]


@pytest.mark.parametrize(
    ("replicas", "elects"), [(1, False), (2, True), (5, True)], ids=["one", "two", "five"]
)
def test_more_than_one_replica_elect_a_leader(helm: str, replicas: int, elects: bool) -> None:
    manifests = render(helm, set_values=(*ON, f"simulate.replicas={replicas}"))
    env = env_of(manifests)
    assert {k: v for k, v in env.items() if k in LEADER_ENV} == (LEADER_ENV if elects else {})
    assert deployment(manifests)["spec"]["replicas"] == replicas


def test_the_environment_is_what_simulate_reads() -> None:
    """Each WIDGET_* variable the chart sets is one of `simulate`'s options' (a name the CLI
    does not know would be ignored without a word)."""
    envvars = {p.envvar for p in cli.simulate.params if isinstance(p, click.Option)}
    rendered = {"WIDGET_NODE_SELECTOR", "WIDGET_QPS", "WIDGET_BURST", "WIDGET_METRICS_ADDRESS"}
    rendered |= {"WIDGET_LOG_LEVEL", "WIDGET_LOG_FORMAT", "WIDGET_STRICT_PERMS"}
    assert rendered <= envvars
    # Leader election's, where this CLI has it (it is being added beside this chart).
    if any(p.name == "leader_elect" for p in cli.simulate.params):
        assert {k for k in LEADER_ENV if k.startswith("WIDGET_")} <= envvars


# -- hardening, identity, RBAC -------------------------------------------------------------


@pytest.mark.parametrize("values", [(), (SIM_VALUES,)], ids=["defaults", "simulate"])
def test_the_simulator_is_hardened_and_not_root(helm: str, values: tuple[Path, ...]) -> None:
    manifests = render(helm, values=values, set_values=ON)
    spec = pod_spec(manifests)
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["runAsGroup"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(manifests)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # As the DaemonSet's container, save runAsNonRoot (the DaemonSet runs as root on purpose).
    daemonset = container(manifests, "DaemonSet")["securityContext"]
    assert {k: v for k, v in security.items() if k != "runAsNonRoot"} == daemonset
    mounts = {m["name"]: m["mountPath"] for m in container(manifests)["volumeMounts"]}
    assert mounts == {"config": "/etc/widget-plugin", "tmp": "/tmp"}


def test_the_simulator_has_its_own_service_account(helm: str) -> None:
    manifests = render(helm, set_values=ON)
    spec = pod_spec(manifests)
    assert spec["serviceAccountName"] == NAME
    assert spec["automountServiceAccountToken"] is True
    account = one(manifests, "ServiceAccount")
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == (NAME, NAMESPACE)
    assert account["automountServiceAccountToken"] is False  # only where the pod asks for it
    # The DaemonSet's pods still get no token in device-plugin mode.
    assert pod_spec(manifests, "DaemonSet")["automountServiceAccountToken"] is False


WATCH_AND_WRITE_NODES = {
    ("", "nodes", ()): ["get", "list", "watch"],
    ("", "nodes/status", ()): ["patch"],
    ("", "pods", ()): ["list", "watch"],
}
SLICES = {
    ("resource.k8s.io", "resourceslices", ()): sorted(
        ["get", "list", "watch", "create", "update", "patch", "delete"]
    )
}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param((), WATCH_AND_WRITE_NODES, id="device-plugin"),
        pytest.param((VALUES_DIR / "dra.yaml",), WATCH_AND_WRITE_NODES | SLICES, id="dra"),
    ],
)
def test_the_cluster_role_grants_what_the_simulator_does_and_no_more(
    helm: str, values: tuple[Path, ...], expected: dict[tuple[str, str, tuple[str, ...]], list[str]]
) -> None:
    """Nodes listed, watched and their status server-side applied, pods listed and watched;
    ResourceSlices only when some resource is DRA's (the chart's DRA detection)."""
    manifests = render(helm, values=values, set_values=ON)
    (role,) = [m for m in manifests if m["kind"] == "ClusterRole" and is_simulator(m)]
    assert role["metadata"]["name"] == NAME
    assert rules_of(role) == expected
    (binding,) = [m for m in manifests if m["kind"] == "ClusterRoleBinding" and is_simulator(m)]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME,
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    assert not [m for m in manifests if m["kind"] in {"Role", "RoleBinding"}]


def test_the_lease_role_comes_with_leader_election_only(helm: str) -> None:
    manifests = render(helm, values=[SIM_VALUES])
    role = one(manifests, "Role")
    assert (role["metadata"]["name"], role["metadata"]["namespace"]) == (NAME, NAMESPACE)
    # get and update only its own Lease (the id the replicas are given); create cannot be
    # narrowed to a name in RBAC.
    assert rules_of(role) == {
        ("coordination.k8s.io", "leases", (NAME,)): ["get", "update"],
        ("coordination.k8s.io", "leases", ()): ["create"],
    }
    assert env_of(manifests)["WIDGET_LEADER_ELECTION_ID"] == NAME
    binding = one(manifests, "RoleBinding")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": NAME}  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    single = render(helm, values=[SIM_VALUES], set_values=("simulate.replicas=1",))
    assert not [m for m in single if m["kind"] in {"Role", "RoleBinding"}]


def test_service_account_and_rbac_can_be_brought_along(helm: str, tmp_path: Path) -> None:
    values = {"rbac": {"create": False},
              "simulate": {"serviceAccount": {"create": False, "name": "sim-sa"}}}  # fmt: skip
    manifests = render(helm, values=[SIM_VALUES, write_values(tmp_path, values)])
    kinds = {m["kind"] for m in manifests if is_simulator(m)}
    assert kinds == {"Deployment", "Service", "ServiceMonitor"}
    assert pod_spec(manifests)["serviceAccountName"] == "sim-sa"
    named = render(helm, values=[SIM_VALUES], set_values=("simulate.serviceAccount.name=sim-sa",))
    assert one(named, "ServiceAccount")["metadata"]["name"] == "sim-sa"
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        assert one(named, kind)["subjects"][0]["name"] == "sim-sa", kind


def test_long_names_never_collide_with_the_daemonsets(helm: str) -> None:
    """With a 63-character full name, each simulator object still has a name of its own among
    its kind in its namespace (the DRA ServiceAccount and ClusterRole are named after the full
    name, which `-simulator` would be cut off from)."""
    manifests = render(
        helm, values=[VALUES_DIR / "dra.yaml", VALUES_DIR / "monitoring.yaml"],
        set_values=(*ON, "simulate.replicas=2", "fullnameOverride=" + "w" * 63),
    )  # fmt: skip

    def key(m: Manifest) -> tuple[str, str | None, str]:
        return m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]

    ours = {key(m) for m in manifests if is_simulator(m)}
    assert len(ours) == len([m for m in manifests if is_simulator(m)])
    assert not ours & {key(m) for m in manifests if not is_simulator(m)}
    assert all(len(name) <= 63 for _, _, name in ours)
    assert deployment(manifests)["metadata"]["name"] == "w" * 53 + "-simulator"


# -- labels and selectors ------------------------------------------------------------------


def test_the_daemonset_and_its_metrics_never_select_the_simulator(helm: str) -> None:
    manifests = render(helm, values=[SIM_VALUES])
    sim_pods = deployment(manifests)["spec"]["template"]["metadata"]["labels"]
    plugin_pods = one(manifests, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    daemonset_selector = one(manifests, "DaemonSet")["spec"]["selector"]["matchLabels"]
    sim_selector = deployment(manifests)["spec"]["selector"]["matchLabels"]
    assert sim_selector.items() <= sim_pods.items()
    assert not daemonset_selector.items() <= sim_pods.items()
    assert not sim_selector.items() <= plugin_pods.items()
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    plugin_service = services["widget-widget-plugin-metrics"]
    sim_service = services[f"{NAME}-metrics"]
    assert not plugin_service["spec"]["selector"].items() <= sim_pods.items()
    assert sim_service["spec"]["selector"].items() <= sim_pods.items()
    assert not sim_service["spec"]["selector"].items() <= plugin_pods.items()
    assert sim_service["spec"]["ports"] == plugin_service["spec"]["ports"]
    monitors = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ServiceMonitor"}
    plugin_monitor, sim_monitor = monitors["widget-widget-plugin"], monitors[NAME]

    def selects(monitor: Manifest, service: Manifest) -> bool:
        wanted = monitor["spec"]["selector"]["matchLabels"]
        return bool(wanted.items() <= service["metadata"]["labels"].items())

    assert selects(plugin_monitor, plugin_service)
    assert not selects(plugin_monitor, sim_service)
    assert selects(sim_monitor, sim_service)
    assert not selects(sim_monitor, plugin_service)
    test_pod = one(manifests, "Pod")
    assert not sim_selector.items() <= test_pod["metadata"]["labels"].items()


def test_the_simulators_service_monitor_keeps_its_node_label(helm: str) -> None:
    """The simulator's widget_devices_in_use carries the simulated node as `node`: its
    ServiceMonitor has no relabeling from the pod's node, and honors the scraped labels."""
    manifests = render(helm, values=[SIM_VALUES])
    monitors = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ServiceMonitor"}
    sim, plugin = monitors[NAME], monitors["widget-widget-plugin"]
    assert sim["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sim["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sim["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True
    # Only the user's relabelings (a namespace label here), none about `node`.
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "namespace"}
    ]
    assert not [
        r for r in endpoint.get("relabelings", ())
        if r.get("targetLabel") == "node" or "__meta_kubernetes_pod_node_name" in str(r)
    ]  # fmt: skip
    # ... while the DaemonSet's still copies the pod's node first.
    (plugin_endpoint,) = plugin["spec"]["endpoints"]
    assert plugin_endpoint["relabelings"][0]["targetLabel"] == "node"
    assert "honorLabels" not in plugin_endpoint
    bare = render(helm, set_values=(*ON, "metrics.service.enabled=true",
                                    "metrics.serviceMonitor.enabled=true"))  # fmt: skip
    (bare_sim,) = [m for m in bare if m["kind"] == "ServiceMonitor" and is_simulator(m)]
    assert "relabelings" not in bare_sim["spec"]["endpoints"][0]


def test_the_simulators_series_without_a_node_are_named_simulator(helm: str) -> None:
    """Its config and build series have no `node`: the alerts (`by (node)`) and the
    dashboard would name an empty node. The metric relabeling fills it only where empty."""
    manifests = render(helm, values=[SIM_VALUES])
    (sim,) = [m for m in manifests if m["kind"] == "ServiceMonitor" and is_simulator(m)]
    (endpoint,) = sim["spec"]["endpoints"]
    assert endpoint["metricRelabelings"][0] == {
        "sourceLabels": ["node"], "regex": "", "targetLabel": "node", "replacement": "simulator",
    }  # fmt: skip


def test_no_metrics_objects_without_the_switches(helm: str) -> None:
    kinds = {m["kind"] for m in render(helm, set_values=ON) if is_simulator(m)}
    assert kinds == {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


# -- node affinity -------------------------------------------------------------------------


def cli_selector(text: str) -> dict[str, str]:
    """The selector as `simulate --node-selector` reads it (through its click callback)."""
    (option,) = [p for p in cli.simulate.params if p.name == "node_selector"]
    return dict(option.process_value(click.Context(cli.simulate), text))


def expression_matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    if operator == "In":
        return key in labels and labels[key] in expression["values"]
    if operator == "NotIn":
        return key not in labels or labels[key] not in expression["values"]
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(operator)


def schedulable(affinity: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a node labelled `labels` passes the required node affinity, as the scheduler
    reads it: any term, each with all its expressions (a term with none matches nothing)."""
    node = (affinity or {}).get("nodeAffinity") or {}
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(
        term.get("matchExpressions")
        and all(expression_matches(e, labels) for e in term["matchExpressions"])
        for term in required["nodeSelectorTerms"]
    )


LINUX = {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
ARM = {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
# Nodes with every combination of these labels' values, each label also absent.
LABEL_KEYS = ("type", "zone", "kubernetes.io/os", "kubernetes.io/arch")
NODE_LABELS = [
    {key: value for key, value in zip(LABEL_KEYS, values, strict=True) if value is not None}
    for values in itertools.product(
        ["kwok", "real", None], ["a", "b", None], ["linux", "windows", None], ["arm64", None]
    )
]
AFFINITY_CASES = [
    pytest.param("type=kwok", None, id="default"),
    pytest.param("type=kwok", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [LINUX]}}}, id="and-the-users-term"),
    pytest.param(" type==kwok , zone=a", {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [LINUX, ARM]}}},
        id="two-selector-terms-and-two-user-terms"),
    pytest.param("zone=a", {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": LINUX}]}}, id="beside-a-preference"),
]  # fmt: skip


@pytest.mark.parametrize(("selector", "affinity"), AFFINITY_CASES)
@pytest.mark.parametrize("kind", ["DaemonSet", "Deployment"])
def test_pods_keep_off_the_simulated_nodes(
    helm: str, tmp_path: Path, kind: str, selector: str, affinity: dict[str, Any] | None
) -> None:
    """On every node the user's affinity allows, except those matching the whole selector (the
    simulated ones): the DaemonSet with `affinity`, the simulator with `simulate.affinity`."""
    simulate: dict[str, Any] = {"enabled": True, "nodeSelector": selector}
    values: dict[str, Any] = {"simulate": simulate}
    if affinity is not None and kind == "Deployment":
        simulate["affinity"] = affinity
    elif affinity is not None:
        values["affinity"] = affinity
    manifests = render(helm, values=[write_values(tmp_path, values)])
    rendered = pod_spec(manifests, kind)["affinity"]
    pairs = cli_selector(selector)
    for labels in NODE_LABELS:
        simulated = all(labels.get(k) == v for k, v in pairs.items())
        expected = schedulable(affinity, labels) and not simulated
        assert schedulable(rendered, labels) == expected, labels
    # What else the user asked for stays as it was.
    preferred = "preferredDuringSchedulingIgnoredDuringExecution"
    users = (affinity or {}).get("nodeAffinity", {})
    assert rendered["nodeAffinity"].get(preferred) == users.get(preferred)


def test_the_helm_test_pod_keeps_off_the_simulated_nodes(helm: str) -> None:
    """It checks what a node's device plugin hands out: a simulated node has none."""
    affinity = one(render(helm, values=[SIM_VALUES]), "Pod")["spec"]["affinity"]
    for labels in NODE_LABELS:
        assert schedulable(affinity, labels) == (labels.get("type") != "kwok"), labels
    assert one(render(helm), "Pod")["spec"]["affinity"] == KEEP_OFF_KWOK  # simulate off too


def test_the_users_affinity_merges_in_its_own_order(helm: str) -> None:
    """values/simulate.yaml: the user's term first, the simulated nodes' exclusion appended."""
    spec = pod_spec(render(helm, values=[SIM_VALUES]), "DaemonSet")
    assert spec["affinity"] == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            {"key": "type", "operator": "NotIn", "values": ["kwok"]},
        ]}],
    }}}  # fmt: skip


@pytest.mark.parametrize(
    ("values", "set_values"),
    [
        pytest.param(
            VALUES_DIR / "scheduling.yaml",
            (*ON, "simulate.daemonSetAffinity=false"),
            id="opted-out",
        ),
    ],
)
def test_the_users_affinity_is_untouched_otherwise(
    helm: str, values: Path, set_values: tuple[str, ...]
) -> None:
    spec = pod_spec(render(helm, values=[values], set_values=set_values), "DaemonSet")
    assert spec["affinity"] == yaml.safe_load(values.read_text())["affinity"]


def test_opted_out_without_an_affinity_there_is_none(helm: str) -> None:
    manifests = render(helm, set_values=(*ON, "simulate.daemonSetAffinity=false"))
    assert "affinity" not in pod_spec(manifests, "DaemonSet")
    assert "affinity" not in pod_spec(manifests)


# -- bad values, notes ---------------------------------------------------------------------


def render_status(helm: str, tmp_path: Path, simulate: dict[str, Any]) -> tuple[int, str]:
    done = helm_template(helm, values=[write_values(tmp_path, {"simulate": simulate})])
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("simulate", "expected"),
    [
        pytest.param({"nodeSelector": "type"}, "simulate.nodeSelector", id="no-value"),
        pytest.param({"nodeSelector": "type!=kwok"}, "simulate.nodeSelector", id="not-equal"),
        pytest.param({"nodeSelector": "ty pe=kwok"}, "simulate.nodeSelector", id="blank-in-key"),
        pytest.param({"nodeSelector": "type in (kwok)"}, "simulate.nodeSelector", id="set-based"),
        pytest.param({"replicas": 0}, "simulate.replicas", id="no-replicas"),
        pytest.param({"qps": 0}, "simulate.qps", id="no-qps"),
        pytest.param({"burst": 0}, "simulate.burst", id="no-burst"),
        pytest.param({"nodeselector": "type=kwok"}, "nodeselector", id="misspelt-key"),
    ],
)
def test_schema_rejects_bad_simulate_values(
    helm: str, tmp_path: Path, simulate: dict[str, Any], expected: str
) -> None:
    code, stderr = render_status(helm, tmp_path, {"enabled": True, **simulate})
    assert code != 0
    assert "values don't meet the specifications of the schema" in stderr, stderr
    assert expected in stderr, stderr


def test_an_empty_selector_is_refused_with_the_fix(helm: str, tmp_path: Path) -> None:
    code, stderr = render_status(helm, tmp_path, {"enabled": True, "nodeSelector": " "})
    assert code != 0
    assert "validate.yaml" in stderr, stderr
    assert "simulate.nodeSelector is empty" in stderr
    assert "simulate.nodeSelector=type=kwok" in stderr
    # Off, an empty one is nobody's business.
    assert render_status(helm, tmp_path, {"enabled": False, "nodeSelector": ""})[0] == 0


def test_sharing_the_daemonsets_account_under_the_admission_policy_is_refused(
    helm: str, tmp_path: Path
) -> None:
    """The DRA admission policy keeps the DaemonSet's account to its own node's slices: the
    simulator, writing the simulated nodes' slices, must not be that account."""
    shared = {"serviceAccount": {"create": False, "name": "widgets"},
              "simulate": {"enabled": True, "serviceAccount": {"create": False, "name": "widgets"}}}  # fmt: skip
    done = helm_template(helm, values=[VALUES_DIR / "dra.yaml", write_values(tmp_path, shared)])
    assert done.returncode != 0
    assert "would share the service account 'widgets'" in done.stderr, done.stderr
    assert "simulate.serviceAccount.create=true" in done.stderr
    # Without DRA (no policy), or with the policy off, sharing is the user's choice.
    assert (
        helm_template(helm, values=[write_values(tmp_path, shared, "plain.yaml")]).returncode == 0
    )
    off = {**shared, "dra": {"validatingAdmissionPolicy": {"enabled": False}}}
    assert (
        helm_template(
            helm, values=[VALUES_DIR / "dra.yaml", write_values(tmp_path, off, "off.yaml")]
        ).returncode
        == 0
    )


@pytest.mark.parametrize(
    "selector",
    ["type=kwok", "type==kwok", " type=kwok , zone=a ", "example.org/simulated=", "a.b/c-d=E_f.1"],
)
def test_selectors_the_cli_accepts_are_accepted(helm: str, tmp_path: Path, selector: str) -> None:
    code, stderr = render_status(helm, tmp_path, {"enabled": True, "nodeSelector": selector})
    assert code == 0, stderr


def test_notes_tell_how_to_see_the_simulated_nodes(helm: str, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, values=[SIM_VALUES])
    assert f"Deployment {NAMESPACE}/{NAME}" in notes
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{NAME}" in notes
    assert "kubectl get nodes -l type=kwok" in notes
    assert "{{" not in notes
    assert "Simulated nodes" not in render_notes(helm, tmp_path / "defaults")
