"""The chart in DRA mode: what it adds when `config` serves resources through DRA.

The DaemonSet gets kubelet's plugin directories (at their host paths, where kubelet dials the
plugin), the CDI directory and a service-account token; the release gets a ServiceAccount, a
ClusterRole and its binding, a ValidatingAdmissionPolicy that keeps each pod to its own node's
ResourceSlices, and one DeviceClass per DRA (type, model), the same as the supervisor's
`resources -o dra` prints: the drift test keeps the Go template and the Python rule equal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import (
    NAMESPACE,
    REPO_ROOT,
    VALUES_DIR,
    Manifest,
    node_names,
    one,
    render,
    render_notes,
)

from dra_driver.api import PLUGINS_DIR, REGISTRY_DIR, SERVICE_SOCKET

DRA_VALUES = VALUES_DIR / "dra.yaml"
RESOURCES_DRA = [sys.executable, "-m", "supervisor", "resources", "--no-strict-perms", "-o", "dra"]
DRA_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "DeviceClass",
    "ResourceClaimTemplate",
}
SA = "widget-widget-plugin"


def snaffler(**extra: Any) -> dict[str, Any]:
    return {"type": "snaffler", "model": "v1", "device": "/dev/wibble1", **extra}


def gizmo(**extra: Any) -> dict[str, Any]:
    return {"type": "gizmo", "model": "mk2", "device": "/dev/gizmo0", **extra}


def write_values(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def render_values(helm: str, tmp_path: Path, values: dict[str, Any]) -> list[Manifest]:
    return render(helm, values=[write_values(tmp_path, values)])


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    return dict(one(manifests, "DaemonSet")["spec"]["template"]["spec"])


def container(manifests: list[Manifest]) -> dict[str, Any]:
    (only,) = pod_spec(manifests)["containers"]
    return dict(only)


def env_of(manifests: list[Manifest]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifests)["env"]}


def host_mounts(manifests: list[Manifest]) -> dict[str, tuple[str, str, str]]:
    """Each hostPath volume's (container path, host path, type), by volume name."""
    volumes = {v["name"]: v for v in pod_spec(manifests)["volumes"]}
    return {
        m["name"]: (m["mountPath"], volumes[m["name"]]["hostPath"]["path"],
                    volumes[m["name"]]["hostPath"].get("type", ""))
        for m in container(manifests)["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }  # fmt: skip


# -- on and off ----------------------------------------------------------------------------

DRA_SWITCHES = [
    pytest.param({"config": {"api": "dra", "devices": [snaffler()]}}, id="top-level-api"),
    pytest.param(
        {"config": {"devices": [snaffler(), gizmo()],
                    "resources": [{"type": "gizmo", "model": "mk2", "api": "dra"}]}},
        id="one-resource",
    ),
    pytest.param(
        {"config": {"devices": [snaffler()], "nodes": [{"match": "gpu-*", "resources": [
            {"type": "snaffler", "model": "v1", "api": "dra"}]}]}},
        id="in-a-nodes-entry",
    ),
    pytest.param(
        {"existingConfigMap": "mine", "dra": {"enabled": True},
         "tests": {"deviceClass": "snaffler-v1.ska-sdp.org"}},
        id="dra-enabled-with-existing-configmap",
    ),
]  # fmt: skip


@pytest.mark.parametrize("values", DRA_SWITCHES)
def test_any_dra_resource_turns_dra_mode_on(
    helm: str, tmp_path: Path, values: dict[str, Any]
) -> None:
    manifests = render_values(helm, tmp_path, values)
    assert {m["kind"] for m in manifests} >= DRA_KINDS - {"DeviceClass", "ResourceClaimTemplate"}
    mounts = host_mounts(manifests)
    assert mounts["plugins-registry"][1:] == (
        "/var/lib/kubelet/plugins_registry",
        "DirectoryOrCreate",
    )
    assert mounts["plugins"][1:] == ("/var/lib/kubelet/plugins", "DirectoryOrCreate")
    # DRA always writes CDI specs: the CDI directory is mounted without cdi.enabled.
    assert mounts["cdi"] == ("/var/run/cdi", "/var/run/cdi", "DirectoryOrCreate")
    env = env_of(manifests)
    assert env["WIDGET_CDI_DIR"] == "/var/run/cdi"
    assert env["WIDGET_KUBELET_ROOT_DIR"] == "/var/lib/kubelet"
    spec = pod_spec(manifests)
    assert spec["automountServiceAccountToken"] is True
    assert spec["serviceAccountName"] == SA
    # Still hardened: root without capabilities, as for the device-plugin sockets.
    security = container(manifests)["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(
    "values",
    [pytest.param((), id="defaults")]
    + [pytest.param((p,), id=p.stem) for p in sorted(VALUES_DIR.glob("*.yaml")) if p != DRA_VALUES],
)
def test_device_plugin_mode_gets_nothing_of_dra(helm: str, values: tuple[Path, ...]) -> None:
    manifests = render(helm, values=values)
    # The simulator (values/simulate.yaml) has a ServiceAccount and RBAC of its own, not DRA's.
    simulator = {"app.kubernetes.io/component": "simulator"}.items()
    kinds = {m["kind"] for m in manifests if not simulator <= m["metadata"]["labels"].items()}
    assert not kinds & DRA_KINDS
    assert not {"plugins-registry", "plugins"} & set(host_mounts(manifests))
    assert "WIDGET_KUBELET_ROOT_DIR" not in env_of(manifests)
    spec = pod_spec(manifests)
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec


def test_plugin_sockets_are_where_kubelet_looks_on_the_host(helm: str, tmp_path: Path) -> None:
    """kubelet finds `<root>/plugins_registry/<driver>-reg.sock` and dials the endpoint GetInfo
    reports, `<root>/plugins/<driver>/dra.sock`, both derived from WIDGET_KUBELET_ROOT_DIR: each
    must be inside a mount whose host path is its container path, for any kubeletRootDir."""
    root = "/var/snap/microk8s/common/var/lib/kubelet"
    manifests = render_values(
        helm, tmp_path,
        {"kubeletRootDir": root + "/", "config": {"api": "dra", "devices": [snaffler()],
                                                   "dra": {"driver": "widgets.example.org"}}},
    )  # fmt: skip
    env = env_of(manifests)
    assert env["WIDGET_KUBELET_ROOT_DIR"] == root
    driver = "widgets.example.org"
    sockets = [
        Path(env["WIDGET_KUBELET_ROOT_DIR"]) / REGISTRY_DIR / f"{driver}-reg.sock",
        Path(env["WIDGET_KUBELET_ROOT_DIR"]) / PLUGINS_DIR / driver / SERVICE_SOCKET,
    ]
    mounts = host_mounts(manifests)
    for socket in sockets:
        (holder,) = [m for m in mounts.values() if Path(m[0]) in socket.parents]
        assert holder[0] == holder[1], (socket, holder)
    assert mounts["device-plugins"][1] == f"{root}/device-plugins"


# -- RBAC and the admission policy ---------------------------------------------------------


def test_rbac_grants_what_the_supervisor_does_and_no_more(helm: str) -> None:
    manifests = render(helm, values=[DRA_VALUES])
    role = one(manifests, "ClusterRole")
    rules = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("resource.k8s.io", "resourceslices"): sorted(
            ["get", "list", "watch", "create", "update", "patch", "delete"]
        ),
        ("resource.k8s.io", "resourceclaims"): ["get"],
        ("", "nodes"): ["get"],
    }
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NAMESPACE}]
    account = one(manifests, "ServiceAccount")
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == (SA, NAMESPACE)
    assert pod_spec(manifests)["serviceAccountName"] == SA


def test_service_account_and_rbac_can_be_brought_along(helm: str, tmp_path: Path) -> None:
    values = {"serviceAccount": {"create": False, "name": "plugin-sa"}, "rbac": {"create": False},
              "dra": {"validatingAdmissionPolicy": {"enabled": False}}}  # fmt: skip
    manifests = render(helm, values=[DRA_VALUES, write_values(tmp_path, values)])
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert pod_spec(manifests)["serviceAccountName"] == "plugin-sa"
    assert "DeviceClass" in kinds
    named = render(helm, values=[DRA_VALUES, write_values(
        tmp_path, {"serviceAccount": {"name": "plugin-sa"}}, "named.yaml")])  # fmt: skip
    assert one(named, "ServiceAccount")["metadata"]["name"] == "plugin-sa"
    assert one(named, "ClusterRoleBinding")["subjects"][0]["name"] == "plugin-sa"


def test_admission_policy_keeps_each_pod_to_its_nodes_slices(helm: str) -> None:
    """As kubernetes-sigs/dra-example-driver's: slice writes by the plugin's service account
    must carry its token's node name in spec.nodeName (oldObject's for a DELETE)."""
    manifests = render(helm, values=[DRA_VALUES])
    policy = one(manifests, "ValidatingAdmissionPolicy")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["resource.k8s.io"]
    assert rule["resources"] == ["resourceslices"]
    assert sorted(rule["operations"]) == ["CREATE", "DELETE", "UPDATE"]
    assert rule["apiVersions"] == ["*"]
    (condition,) = spec["matchConditions"]
    user = f"system:serviceaccount:{NAMESPACE}:{SA}"
    assert condition["expression"] == f'request.userInfo.username == "{user}"'
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert variables == {
        "userNodeName": "request.userInfo.extra[?'authentication.kubernetes.io/node-name']"
        "[0].orValue('')",
        "objectNodeName": '(request.operation == "DELETE" ? oldObject : object)'
        '.spec.?nodeName.orValue("")',
    }
    checks = [v["expression"] for v in spec["validations"]]
    assert checks == [
        'variables.userNodeName != ""',
        "variables.userNodeName == variables.objectNodeName",
    ]
    binding = one(manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"], "validationActions": ["Deny"],
    }  # fmt: skip


# -- DeviceClasses: the drift test -----------------------------------------------------------

A100 = {"type": "doohickey", "model": "a100", "device": "/dev/d0"}
DRIFT_CONFIGS = [
    pytest.param({"devices": [snaffler(), gizmo()]}, id="device-plugin-only"),
    pytest.param({"api": "dra", "devices": [snaffler(), gizmo()]}, id="top-level-api"),
    pytest.param(
        {"domain": "example.org", "dra": {"driver": "widgets.example.org"}, "api": "dra",
         "devices": [{"type": "big_gizmo", "model": "mk_2.1", "device": "/dev/g"}, snaffler()]},
        id="driver-domain-and-underscores",
    ),
    pytest.param(
        {"devices": [snaffler(), gizmo(), A100],
         "resources": [{"type": "gizmo", "model": "mk2", "api": "dra", "replicas": 3,
                        "renameShared": True},
                       {"type": "doohickey", "model": "a100", "api": "device-plugin"}]},
        id="per-resource-api-and-sharing",
    ),
    pytest.param(
        {"api": "dra", "devices": [snaffler(), A100],
         "resources": [{"type": "doohickey", "model": "a100", "api": "device-plugin"}],
         "nodes": [
             {"match": "gpu-*", "devices": [gizmo()],
              "resources": [{"type": "doohickey", "model": "a100", "api": "dra"}]},
             {"match": "edge-?", "mode": "replace", "devices": [{**A100, "device": "/dev/d9"}],
              "resources": [{"type": "doohickey", "model": "a100"}]},
             {"match": "legacy-[0-9]", "resources": [
                 {"type": "snaffler", "model": "v1", "api": "device-plugin"}]},
         ]},
        id="nodes-entries",
    ),
    pytest.param(
        {"devices": [], "nodes": [{"match": "gpu-*", "devices": [gizmo()], "resources": [
            {"type": "gizmo", "model": "mk2", "api": "dra"}]}]},
        id="only-on-some-nodes",
    ),
    pytest.param(yaml.safe_load(DRA_VALUES.read_text())["config"], id="values-dra"),
] + [
    pytest.param(yaml.safe_load(example.read_text()), id=f"example-{example.stem}")
    for example in sorted((REPO_ROOT / "config" / "examples").glob("*.yml"))
]  # fmt: skip


def supervisor_classes(config: Path, nodes: list[str]) -> dict[str, Manifest]:
    """The DeviceClasses `widget-supervisor resources -o dra` prints, over `nodes`, by name."""
    found: dict[str, Manifest] = {}
    for node in nodes:
        done = subprocess.run(
            [*RESOURCES_DRA, "--config", str(config), "--node-name", node],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"node {node}:\n{done.stdout}{done.stderr}"
        for document in yaml.safe_load_all(done.stdout):
            if document:
                name = document["metadata"]["name"]
                assert found.setdefault(name, document) == document, f"{name} differs by node"
    return found


@pytest.mark.parametrize("config", DRIFT_CONFIGS)
def test_device_classes_are_the_supervisors(
    helm: str, tmp_path: Path, config: dict[str, Any]
) -> None:
    manifests = render_values(helm, tmp_path, {"config": config, "cdi": {"enabled": True}})
    rendered = yaml.safe_load(one(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rendered))
    want = supervisor_classes(path, node_names(rendered))
    got = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "DeviceClass"}
    assert sorted(got) == sorted(want)
    for name, chart in got.items():
        cli = want[name]
        assert (chart["apiVersion"], chart["kind"]) == (cli["apiVersion"], cli["kind"])
        assert chart["spec"] == cli["spec"], name
        # Helm owns the chart's (managed-by: Helm, so that it may adopt and delete them); the
        # supervisor labels its own managed-by widget-device-plugin; part-of tells both apart
        # from other drivers' classes.
        labels = chart["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert (
            labels["app.kubernetes.io/part-of"]
            == cli["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        )
    assert ("DeviceClass" in {m["kind"] for m in manifests}) == bool(want)


def test_device_classes_can_be_left_to_the_user(helm: str, tmp_path: Path) -> None:
    off = write_values(tmp_path, {"dra": {"deviceClasses": {"enabled": False}}})
    manifests = render(helm, values=[DRA_VALUES, off])
    assert "DeviceClass" not in {m["kind"] for m in manifests}
    assert "ClusterRole" in {m["kind"] for m in manifests}


# -- helm test ------------------------------------------------------------------------------


def test_helm_test_pod_claims_a_device_of_the_first_resources_class(helm: str) -> None:
    manifests = render(helm, values=[DRA_VALUES])
    template = one(manifests, "ResourceClaimTemplate")
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request == {"name": "device", "exactly": {"deviceClassName": "snaffler-v1.ska-sdp.org"}}
    classes = {m["metadata"]["name"] for m in manifests if m["kind"] == "DeviceClass"}
    assert request["exactly"]["deviceClassName"] in classes
    pod = one(manifests, "Pod")
    (claim,) = pod["spec"]["resourceClaims"]
    assert claim == {"name": "device", "resourceClaimTemplateName": template["metadata"]["name"]}
    (check,) = pod["spec"]["containers"]
    assert check["resources"]["claims"] == [{"name": request["name"]}]
    assert not [r for r in check["resources"]["limits"] if "/" in r], "no extended resource"
    # Both are test hooks; the template is created first (a lower weight) and kept on failure.
    for hook in (template, pod):
        assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert "hook-succeeded" in hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    weight = int(template["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert weight < int(pod["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
    assert "DeviceClass snaffler-v1.ska-sdp.org" in check["command"][-1]


@pytest.mark.parametrize(
    ("base", "values", "limit", "device_class"),
    [
        pytest.param((DRA_VALUES,), {"tests": {"resource": "ska-sdp.org/doohickey-a100"}},
                     "ska-sdp.org/doohickey-a100", None, id="resource-chosen"),
        pytest.param((DRA_VALUES,), {"tests": {"deviceClass": "gizmo-mk2.ska-sdp.org"}},
                     None, "gizmo-mk2.ska-sdp.org", id="class-chosen"),
        pytest.param((), {"config": {"devices": [A100, snaffler()], "resources": [
            {"type": "snaffler", "model": "v1", "api": "dra"}]}},
                     "ska-sdp.org/doohickey-a100", None, id="first-is-device-plugin"),
        pytest.param((), {"config": {"devices": [], "nodes": [{"match": "gpu-*", "devices": [
            gizmo()], "resources": [{"type": "gizmo", "model": "mk2", "api": "dra"}]}]}},
                     None, "gizmo-mk2.ska-sdp.org", id="first-in-a-nodes-entry"),
        pytest.param((), {"config": {"api": "dra", "devices": [], "nodes": [
            {"match": "gpu-*", "devices": [gizmo()], "resources": [
                {"type": "gizmo", "model": "mk2", "api": "device-plugin"}]}]}},
                     "ska-sdp.org/gizmo-mk2", None, id="nodes-entry-says-device-plugin"),
    ],
)  # fmt: skip
def test_helm_test_pod_follows_the_api_of_what_it_tests(
    helm: str,
    tmp_path: Path,
    base: tuple[Path, ...],
    values: dict[str, Any],
    limit: str | None,
    device_class: str | None,
) -> None:
    manifests = render(helm, values=[*base, write_values(tmp_path, values)])
    (check,) = one(manifests, "Pod")["spec"]["containers"]
    templates = [m for m in manifests if m["kind"] == "ResourceClaimTemplate"]
    if device_class is None:
        assert templates == []
        assert check["resources"]["limits"][limit] == 1
        assert "claims" not in check["resources"]
    else:
        (request,) = templates[0]["spec"]["spec"]["devices"]["requests"]
        assert request["exactly"]["deviceClassName"] == device_class
        assert check["resources"]["claims"] == [{"name": "device"}]


def test_notes_tell_how_to_see_slices_and_claim_a_device(helm: str, tmp_path: Path) -> None:
    notes = render_notes(helm, tmp_path, values=[DRA_VALUES])
    assert "kubectl get resourceslices --field-selector spec.driver=ska-sdp.org" in notes
    assert "kubectl get deviceclasses" in notes
    for name in ("snaffler-v1", "gizmo-mk2", "doohickey-a100", "thingamajig-x1"):
        assert f"     - {name}.ska-sdp.org\n" in notes, name
    assert "deviceClassName: snaffler-v1.ska-sdp.org" in notes
    assert "ska-sdp.org/snaffler-v1: 1" not in notes
    assert "{{" not in notes
    existing = {"existingConfigMap": "mine", "dra": {"enabled": True},
                "tests": {"deviceClass": "snaffler-v1.ska-sdp.org"}}  # fmt: skip
    (tmp_path / "existing").mkdir()
    text = render_notes(helm, tmp_path / "existing", values=[write_values(tmp_path, existing)])
    assert "widget-supervisor resources --config devices.yaml -o dra | kubectl apply -f -" in text
