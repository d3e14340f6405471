"""The chart's container, run here: its args and env, a ConfigMap-shaped config directory,
and the kubelet stand-in in place of the real kubelet.

Shows that what the chart renders is what the supervisor understands: the WIDGET_* variables,
the config path, the `/healthz` and `/readyz` probes and `/metrics` on the named port, the
allocation the `helm test` pod checks for, and a ConfigMap update reaching the running process
(kubelet's atomic `..data` symlink swap), with no restart. In DRA mode, against the API-server
stand-in and kubelet's DRA plugin watcher stand-in: the plugin registers where the chart mounts
kubelet's directories, every API request it makes is one the chart's ClusterRole grants, every
slice it writes is its own node's (what the admission policy demands), and the claim the
`helm test` pod would make is prepared with WIDGET_VISIBLE_DEVICES in its CDI spec. The
simulator's Deployment (`simulate.enabled`), against the API-server stand-in with two KWOK
nodes and a real one: the simulated nodes' status gets their devices (a ConfigMap update too),
and every request it makes is one its ClusterRole (or, electing a leader, its Role) grants.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import NAMESPACE, REPO_ROOT, VALUES_DIR, Manifest, one, render

from apiserver_standin.server import ApiServer, RequestRecord
from kubelet_standin import KubeletStandIn
from kubelet_standin.dra import DraPluginWatcher
from supervisor import cli
from tests.support import eventually, free_port, http_get

SNAFFLER = "ska-sdp.org/snaffler-v1"
GIZMO = "ska-sdp.org/gizmo-mk2"
CHART_CONFIG_DIR = "/etc/widget-plugin"

pytestmark = pytest.mark.slow


class ConfigMapDir:
    """A directory laid out as kubelet lays out a ConfigMap volume, updated as kubelet does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()

    def publish(self, text: str) -> None:
        self.generation += 1
        payload = self.root / f"..2026_01_01_00_00_0{self.generation}.000"
        payload.mkdir()
        (payload / "config.yaml").write_text(text)
        (payload / "config.yaml").chmod(0o444)  # the chart's defaultMode
        staging = self.root / "..data_tmp"
        staging.symlink_to(payload.name)
        staging.rename(self.root / "..data")  # atomic swap, as AtomicWriter does
        link = self.root / "config.yaml"
        if not link.is_symlink():
            link.symlink_to("..data/config.yaml")


def devices_yaml(*devices: tuple[str, str, str]) -> str:
    lines = ["domain: ska-sdp.org", "devices:"]
    for type_, model, path in devices:
        lines += [f"  - type: {type_}", f"    model: {model}", f"    device: {path}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def chart_container(helm: str) -> dict[str, object]:
    (container,) = one(render(helm), "DaemonSet")["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture
def supervisor_command(
    chart_container: dict[str, object], short_tmp: Path
) -> tuple[list[str], dict[str, str], ConfigMapDir, str]:
    """The chart's container command and env, with host paths pointed into `short_tmp`."""
    config_dir = ConfigMapDir(short_tmp / "config")
    port = free_port()
    env = {}
    for item in chart_container["env"]:  # type: ignore[attr-defined]
        if "valueFrom" in item:
            assert item["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
            env[item["name"]] = "node-a"
        else:
            env[item["name"]] = item["value"]
    assert env["WIDGET_METRICS_ADDRESS"] == "0.0.0.0:9464"
    env["WIDGET_METRICS_ADDRESS"] = f"127.0.0.1:{port}"
    assert env["WIDGET_PLUGIN_DIR"] == "/var/lib/kubelet/device-plugins"
    env["WIDGET_PLUGIN_DIR"] = str(short_tmp / "device-plugins")
    args = [
        str(a).replace(CHART_CONFIG_DIR, str(config_dir.root))
        for a in chart_container["args"]  # type: ignore[attr-defined]
    ]
    # The image's ENTRYPOINT is widget-supervisor; `python -m supervisor` is the same CLI.
    return [sys.executable, "-m", "supervisor", *args], env, config_dir, f"http://127.0.0.1:{port}"


Process = asyncio.subprocess.Process


async def poll_http(url: str, process: Process, until: str, timeout: float = 15.0) -> str:
    """GET `url` until it answers 200 with `until` in the body; fails at once if the
    supervisor exits."""

    bodies = [""]

    def answered() -> str:
        assert process.returncode is None, "the supervisor exited"
        answer = http_get(url)
        bodies.append(answer.text)
        return answer.text if answer.status == 200 and until in answer.text else ""

    return await eventually(
        answered, timeout=timeout, every=0.1, ignore=(OSError,), thread=True,
        what=lambda: f"{url} answering 200 with {until!r}; last body:\n{bodies[-1]}",
    )  # fmt: skip


async def test_chart_container_serves_probes_metrics_and_reloads_live(
    supervisor_command: tuple[list[str], dict[str, str], ConfigMapDir, str],
    chart_container: dict[str, object],
    short_tmp: Path,
) -> None:
    command, env, config_dir, base = supervisor_command
    config_dir.publish(devices_yaml(("snaffler", "v1", "/dev/wibble1")))
    kubelet = KubeletStandIn(short_tmp / "device-plugins")
    await kubelet.start()
    log = short_tmp / "supervisor.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **env}, cwd=REPO_ROOT, stdout=sink, stderr=sink
        )
    try:
        probe = chart_container["livenessProbe"]["httpGet"]  # type: ignore[index]
        assert (await poll_http(base + probe["path"], process, "ok")).startswith("ok")
        await kubelet.wait_registered([SNAFFLER])
        ready = chart_container["readinessProbe"]["httpGet"]  # type: ignore[index]
        await poll_http(base + ready["path"], process, "ok: 1 resources serving")
        registered = f'widget_plugin_registered{{resource="{SNAFFLER}"}} 1.0'
        await poll_http(base + "/metrics", process, registered)

        # The chart passes no pod-resources socket: the supervisor derives it from the plugin
        # dir (<plugin dir>/../pod-resources/kubelet.sock), where the chart mounts kubelet's
        # pod-resources dir and where the stand-in serves it here.
        await poll_http(base + "/metrics", process, "widget_pod_resources_up 1.0")

        # What `helm test` checks in its pod.
        response = await kubelet.allocate(SNAFFLER, count=1, namespace="widget-system", pod="t")
        assert response.envs["WIDGET_VISIBLE_DEVICES"] == "/dev/wibble1"
        # Who holds it, reported shortly after the Allocate (not at the 10 s poll).
        await poll_http(base + "/metrics", process, 'namespace="widget-system",pod="t"')

        # `helm upgrade` with one more device type: kubelet swaps the ConfigMap's `..data`.
        config_dir.publish(
            devices_yaml(("snaffler", "v1", "/dev/wibble1"), ("gizmo", "mk2", "/dev/gizmo0"))
        )
        await kubelet.wait_registered([GIZMO], timeout=15)
        reloaded = 'widget_config_reloads_total{result="success"} 1.0'
        await poll_http(base + "/metrics", process, reloaded)
        assert process.returncode is None, "the config change restarted the supervisor"
    finally:
        await kubelet.stop()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        print(log.read_text())  # pytest shows captured output only for a failure
    assert process.returncode == 0, log.read_text()
    assert '"level": "info"' in log.read_text(), "the chart asks for json logs"


async def test_chart_container_writes_cdi_specs_where_the_chart_mounts_them(
    helm: str, short_tmp: Path
) -> None:
    """With cdi.enabled, the supervisor writes its CDI spec file into the mounted directory."""
    manifests = render(helm, values=[VALUES_DIR / "realistic-mocks.yaml"])
    (container,) = one(manifests, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_dir = ConfigMapDir(short_tmp / "config")
    config_dir.publish(one(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    host_cdi = short_tmp / "cdi"  # stands for the host's cdi.hostPath, mounted at mounts["cdi"]
    env = {}
    for item in container["env"]:
        env[item["name"]] = item.get("value", "gpu-node-1")  # WIDGET_NODE_NAME: a gpu node
    assert env["WIDGET_CDI_DIR"] == mounts["cdi"]
    env |= {
        "WIDGET_CDI_DIR": str(host_cdi),
        "WIDGET_PLUGIN_DIR": str(short_tmp / "device-plugins"),
        "WIDGET_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    args = [str(a).replace(CHART_CONFIG_DIR, str(config_dir.root)) for a in container["args"]]
    kubelet = KubeletStandIn(short_tmp / "device-plugins")
    await kubelet.start()
    log = short_tmp / "supervisor.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "supervisor", *args,
            env={**os.environ, **env}, cwd=REPO_ROOT, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        shared, doohickey = "ska-sdp.org/snaffler-v1.shared", "ska-sdp.org/doohickey-a100"
        await kubelet.wait_registered([shared, doohickey])
        written = sorted(p.name for p in host_cdi.glob("widget-*.json"))
        assert len(written) == 2, written
        response = await kubelet.allocate(doohickey, count=1)
        assert [d.name for d in response.cdi_devices] == [
            f"{doohickey}={response.envs['WIDGET_VISIBLE_DEVICE_IDS']}"
        ]
    finally:
        await kubelet.stop()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 15)
        print(log.read_text())
    assert process.returncode == 0, log.read_text()


def request_parts(record: RequestRecord) -> tuple[str, str | None, list[str]]:
    """(API group, namespace or None, [resource, name, subresource] as far as given)."""
    parts = record.path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    else:
        assert parts[0] == "apis", record
        group, rest = parts[1], parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        return group, rest[1], rest[2:]
    return group, None, rest


def rbac_request(record: RequestRecord) -> tuple[str, str, str]:
    """The (API group, resource, verb) RBAC checks for one request the supervisor made; a
    subresource is `resource/subresource`, as RBAC rules name it (`nodes/status`)."""
    group, _, rest = request_parts(record)
    resource, named = rest[0], len(rest) > 1
    if len(rest) > 2:
        resource = f"{rest[0]}/{rest[2]}"
    if record.method == "GET":
        watching = record.query.get("watch") in ("true", "1")
        verb = "get" if named else ("watch" if watching else "list")
    else:
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        verb = verbs[record.method] if named or record.method == "POST" else "deletecollection"
    return group, resource, verb


def granted(role: Manifest) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def dra_env(
    container: dict[str, Any], node: str, host: Path, *, port: int, kubeconfig: Path
) -> dict[str, str]:
    """The chart's container env with its host paths in `host` (`host/kubelet` for the kubelet
    root) and the API server reached through `kubeconfig`."""
    env = {item["name"]: item.get("value", node) for item in container["env"]}
    assert env["WIDGET_KUBELET_ROOT_DIR"] == "/var/lib/kubelet"
    return env | {
        "WIDGET_KUBELET_ROOT_DIR": str(host / "kubelet"),
        "WIDGET_CDI_DIR": str(host / "cdi"),
        "WIDGET_PLUGIN_DIR": str(host / "device-plugins"),
        "WIDGET_METRICS_ADDRESS": f"127.0.0.1:{port}",
        # Stands for the pod's service account, which a process here cannot have.
        "WIDGET_KUBECONFIG": str(kubeconfig),
    }


async def prepare_claim(
    api: ApiServer,
    kubelet: DraPluginWatcher,
    claim_spec: dict[str, Any],
    allocated: tuple[str, str, str],
) -> str:
    """Store a claim of `claim_spec` allocated (driver, pool, device), have kubelet prepare it,
    and return its UID."""
    driver, pool, device = allocated
    (request,) = claim_spec["devices"]["requests"]
    stored = api.put_object({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "widget-test-device-x", "namespace": "widget-system"},
        "spec": claim_spec,
        "status": {"allocation": {"devices": {"results": [
            {"request": request["name"], "driver": driver, "pool": pool, "device": device},
        ]}}},
    })  # fmt: skip
    uid = str(stored["metadata"]["uid"])
    claim = ("widget-system", "widget-test-device-x", uid)
    prepared = (await kubelet.prepare(driver, [claim])).claims[uid]
    assert prepared.error == ""
    return uid


async def test_chart_container_serves_dra_within_its_rbac(helm: str, short_tmp: Path) -> None:
    manifests = render(helm, values=[VALUES_DIR / "dra.yaml"])
    (container,) = one(manifests, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    config_dir = ConfigMapDir(short_tmp / "config")
    config_dir.publish(one(manifests, "ConfigMap", "-config")["data"]["config.yaml"])
    node, driver = "gpu-node-1", "ska-sdp.org"  # on gpu nodes every resource is DRA's
    api = ApiServer()
    await api.start()
    api.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    # short_tmp/kubelet stands for kubeletRootDir, mounted at its host path.
    kubelet = DraPluginWatcher(short_tmp / "kubelet")
    await kubelet.start()
    (short_tmp / "device-plugins").mkdir()
    port = free_port()
    env = dra_env(
        container, node, short_tmp, port=port, kubeconfig=api.kubeconfig(short_tmp / "kc")
    )
    args = [str(a).replace(CHART_CONFIG_DIR, str(config_dir.root)) for a in container["args"]]
    log = short_tmp / "supervisor.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "supervisor", *args,
            env={**os.environ, **env}, cwd=REPO_ROOT, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        await kubelet.wait_registered(driver, timeout=15)

        def offered() -> dict[str, dict[str, Any]] | None:
            slices = api.objects("resourceslices")
            found = {d["name"]: d for s in slices for d in s["spec"]["devices"]}
            types = {d["attributes"]["type"]["string"] for d in found.values()}
            return found if types == {"snaffler", "gizmo", "doohickey", "thingamajig"} else None

        devices = await eventually(offered, timeout=15, what="every resource's ResourceSlice")
        await poll_http(f"http://127.0.0.1:{port}/readyz", process, "ok")
        # The admission policy lets the pod write only slices whose spec.nodeName is its node's.
        written = api.objects("resourceslices")
        assert written, "no slices"
        assert {s["spec"]["nodeName"] for s in written} == {node}

        # The claim `helm test` makes: one device of the chart's ResourceClaimTemplate's class.
        template = one(manifests, "ResourceClaimTemplate")["spec"]["spec"]
        name = next(n for n, d in devices.items() if d["attributes"]["model"]["string"] == "v1")
        uid = await prepare_claim(api, kubelet, template, (driver, node, name))
        (spec_file,) = (short_tmp / "cdi").glob(f"*{uid}*.json")
        edits = json.loads(spec_file.read_text())["devices"][0]["containerEdits"]
        assert any(e.startswith("WIDGET_VISIBLE_DEVICES=/dev/wibble") for e in edits["env"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 15)
        await kubelet.stop()
        await api.stop()
        print(log.read_text())
    assert process.returncode == 0, log.read_text()
    made = {rbac_request(r) for r in api.requests}
    allowed = granted(one(manifests, "ClusterRole"))
    assert made <= allowed, made - allowed
    slices = {("resource.k8s.io", "resourceslices", v) for v in ("list", "watch", "create")}
    assert slices | {("resource.k8s.io", "resourceclaims", "get"), ("", "nodes", "get")} <= made
    # SIGTERM deletes the node's slices (granted too, above).
    assert ("resource.k8s.io", "resourceslices", "delete") in made
    assert api.objects("resourceslices") == []


# -- the simulator (simulate.enabled) ------------------------------------------------------


def kwok_node(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "status": {"capacity": {"cpu": "8"}, "allocatable": {"cpu": "8"}},
    }  # fmt: skip


def allows(rules: list[dict[str, Any]], record: RequestRecord) -> bool:
    """Whether one of `rules` grants the request (resourceNames included: a create, which
    names no object in its path, never matches a rule restricted to names)."""
    group, resource, verb = rbac_request(record)
    rest = request_parts(record)[2]
    name = rest[1] if len(rest) > 1 else None
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        for rule in rules
    )  # fmt: skip


@dataclass(frozen=True)
class SimulatedCase:
    values: tuple[Path, ...]
    set_values: tuple[str, ...]
    nodes: dict[str, dict[str, str]]
    """Each simulated node's extended resources in its status (allocatable = capacity)."""
    slices: dict[str, set[str]]
    """Each simulated node's ResourceSlice devices' types (DRA resources)."""


SIMULATED_CASES = [
    pytest.param(
        SimulatedCase(
            (VALUES_DIR / "simulate.yaml",), (),
            {"kwok-1": {SNAFFLER: "2"}, "kwok-gpu-1": {SNAFFLER: "2", GIZMO: "2"}}, {},
        ),
        id="simulate",
    ),
    # The DRA values: the simulator publishes each simulated node's slices too (its
    # ClusterRole then grants resourceslices); on gpu nodes every resource is DRA's.
    pytest.param(
        SimulatedCase(
            (VALUES_DIR / "dra.yaml",), ("simulate.enabled=true",),
            {"kwok-1": {"ska-sdp.org/doohickey-a100": "1"}, "gpu-node-9": {}},
            {"kwok-1": {"snaffler", "gizmo"},
             "gpu-node-9": {"snaffler", "gizmo", "thingamajig", "doohickey"}},
        ),
        id="dra",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", SIMULATED_CASES)
async def test_chart_simulator_serves_simulated_nodes_within_its_rbac(
    helm: str, short_tmp: Path, case: SimulatedCase
) -> None:
    manifests = render(helm, values=case.values, set_values=case.set_values)
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    config_dir = ConfigMapDir(short_tmp / "config")
    config = one(manifests, "ConfigMap", "-config")["data"]["config.yaml"]
    config_dir.publish(config)
    api = ApiServer()
    await api.start()
    for name in case.nodes:
        api.put_object(kwok_node(name, type="kwok"))
    api.put_object(kwok_node("real-1", **{"kubernetes.io/os": "linux"}))
    port = free_port()
    env = simulator_env(container, port=port, kubeconfig=api.kubeconfig(short_tmp / "kc"))
    args = [str(a).replace(CHART_CONFIG_DIR, str(config_dir.root)) for a in container["args"]]
    log = short_tmp / "simulator.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "supervisor", *args,
            env={**os.environ, **env}, cwd=REPO_ROOT, stdout=sink, stderr=sink,
        )  # fmt: skip

    def ours(node: str, field: str = "allocatable") -> dict[str, str]:
        return extended_resources(api, node, field)

    base = f"http://127.0.0.1:{port}"
    try:
        for probe in ("livenessProbe", "readinessProbe"):
            await poll_http(base + container[probe]["httpGet"]["path"], process, "ok")
        await eventually(lambda: {n: ours(n) for n in case.nodes} == case.nodes, what="status")
        assert {n: ours(n, "capacity") for n in case.nodes} == case.nodes
        await eventually(lambda: slice_types(api) == case.slices, what="each node's slices")
        assert ours("real-1") == {}, "not labelled type=kwok"
        await poll_http(base + "/metrics", process, f"widget_simulated_nodes {len(case.nodes)}.0")
        # `helm upgrade` with one more snaffler: the ConfigMap's `..data` swap, no restart.
        reloaded = yaml.safe_load(config)
        reloaded["devices"].append({"type": "snaffler", "model": "v1", "device": "/dev/wibble9"})
        config_dir.publish(yaml.safe_dump(reloaded))
        if case.slices:
            count = slice_devices(api)
            await eventually(
                lambda: slice_devices(api) == count + len(case.nodes), what="the reload"
            )
        else:
            await eventually(lambda: ours("kwok-1") == {SNAFFLER: "3"}, what="the reload")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 15)
        await api.stop()
        print(log.read_text())
    assert process.returncode == 0, log.read_text()
    check_simulator_requests(manifests, api.requests, dra=bool(case.slices))


def simulator_env(container: dict[str, Any], *, port: int, kubeconfig: Path) -> dict[str, str]:
    """The simulator container's env with the downward API's values, its metrics on `port`
    and the API server reached through `kubeconfig` (for the pod's service account)."""
    fields = {"metadata.namespace": NAMESPACE, "metadata.name": "widget-sim-7c9d-x2x9q"}
    env = {
        item["name"]: item["value"] if "value" in item
        else fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        for item in container["env"]
    }  # fmt: skip
    assert env["WIDGET_METRICS_ADDRESS"] == "0.0.0.0:9464"
    return env | {
        "WIDGET_METRICS_ADDRESS": f"127.0.0.1:{port}",
        "WIDGET_KUBECONFIG": str(kubeconfig),
    }


def extended_resources(api: ApiServer, node: str, field: str) -> dict[str, str]:
    (found,) = [n for n in api.objects("nodes") if n["metadata"]["name"] == node]
    return {k: v for k, v in found["status"].get(field, {}).items() if "/" in k}


def slice_types(api: ApiServer) -> dict[str, set[str]]:
    """The device types of each node's ResourceSlices."""
    found: dict[str, set[str]] = {}
    for s in api.objects("resourceslices"):
        types = {d["attributes"]["type"]["string"] for d in s["spec"]["devices"]}
        found.setdefault(s["spec"]["nodeName"], set()).update(types)
    return found


def slice_devices(api: ApiServer) -> int:
    return sum(len(s["spec"]["devices"]) for s in api.objects("resourceslices"))


def check_simulator_requests(
    manifests: list[Manifest], requests: list[RequestRecord], *, dra: bool
) -> None:
    """Every request the simulator made is granted by its ClusterRole, or (namespaced, in the
    release namespace) by its Role; and it made the ones it needs."""
    cluster_role = one(manifests, "ClusterRole", "-simulator")
    roles = [m for m in manifests if m["kind"] == "Role"]
    refused = [
        r for r in requests
        if not allows(cluster_role["rules"], r)
        and not (request_parts(r)[1] == NAMESPACE and any(allows(x["rules"], r) for x in roles))
    ]  # fmt: skip
    assert not refused, [(r.method, r.path) for r in refused]
    made = {rbac_request(r) for r in requests}
    assert {("", "nodes", "list"), ("", "nodes", "watch"), ("", "nodes/status", "patch"),
            ("", "pods", "list"), ("", "pods", "watch")} <= made  # fmt: skip
    if dra:
        assert {("resource.k8s.io", "resourceslices", v) for v in ("list", "create")} <= made
    # Two replicas elect a leader through the Lease (where this CLI has leader election: it
    # is being added beside this chart).
    if roles and any(p.name == "leader_elect" for p in cli.simulate.params):
        assert {("coordination.k8s.io", "leases", v) for v in ("get", "create")} <= made
