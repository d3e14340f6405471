"""Every dashboard and alert query, evaluated by a real Prometheus scraping a real supervisor.

The static tests (test_grafana_dashboard.py, test_alert_rules.py) check that the queries are
well-formed and name only known metrics. This test checks that they *work*: a `prometheus`
process scrapes a running `widget-supervisor` that the kubelet stand-in has driven through
known allocations to named pods (reported back by the stand-in's pod-resources API), a refused
Allocate, an injected admission failure, a kubelet restart and two config reloads (one
rejected, one accepted). The same supervisor serves one resource through DRA, publishing its
ResourceSlices to the API-server stand-in, and the stand-in of kubelet's DRA side prepares two
claims through it (one allocated a device it has, one a device it does not). Beside it, a
`widget-supervisor simulate` serves two simulated (KWOK) nodes of the same API-server stand-in,
one with a bound pod holding devices, scraped as a second target without the `node` label
(as the chart's simulator ServiceMonitor does). Then each query goes to Prometheus' HTTP API and
must succeed, without warnings, with the data the dashboard and alerts are meant to show.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from promql_queries import Query, all_queries, dashboard_queries

from apiserver_standin.server import ApiServer
from kubelet_standin import KubeletStandIn
from kubelet_standin.dra import DraPluginWatcher
from tests.support import SupervisorProcess, eventually, free_port, http_get, sample, write_config

pytestmark = pytest.mark.slow

# The scrape target's `node` label, as the ServiceMonitor's relabeling would set it. The
# dashboard's Node variable defaults to All (`promql_queries` substitutes `.*`); the node
# selection is checked separately by substituting this name, and one that does not exist.
NODE = "live-node-1"
OTHER_NODE = "no-such-node"
SCRAPE_INTERVAL = 1.0

V1 = "ska-sdp.org/snaffler-v1"
V2 = "ska-sdp.org/snaffler-v2"
GIZMO = "ska-sdp.org/gizmo-mk2"
DOOHICKEY = "ska-sdp.org/doohickey-a100"
RESOURCES = [V1, V2, GIZMO, DOOHICKEY]

# multi.yml advertises 3 + 2 + 2 + 1 devices; the accepted reload adds /dev/doohickey1.
MULTI_DEVICES = [
    ("snaffler", "v1", "/dev/wibble1"),
    ("snaffler", "v1", "/dev/wibble2"),
    ("snaffler", "v1", "/dev/wibble3"),
    ("snaffler", "v2", "/dev/wibble4"),
    ("snaffler", "v2", "/dev/wibble5"),
    ("gizmo", "mk2", "/dev/gizmo0"),
    ("gizmo", "mk2", "/dev/gizmo1"),
    ("doohickey", "a100", "/dev/doohickey0"),
]
RELOADED_DEVICES = [*MULTI_DEVICES, ("doohickey", "a100", "/dev/doohickey1")]
# Admission faults (config/examples/admission-faults.yml): every doohickey Allocate fails.
INJECTED = "- {type: doohickey, model: a100, allocate: {failureRate: 1, seed: 7}}\n"
# Besides them, a resource served through DRA (docs/dra.md), in both configs the supervisor
# accepts: a type of its own, so that every device-plugin count above holds. Its devices are
# published in the node's pool; `widget_devices` and `widget_plugin_registered` count it too.
DRIVER = "ska-sdp.org"
DRA_RESOURCE = "ska-sdp.org/sprocket-s1"
DRA_DEVICES = [("sprocket", "s1", "/dev/sprocket0"), ("sprocket", "s1", "/dev/sprocket1")]
DRA_ENTRY = "- {type: sprocket, model: s1, api: dra}\n"
# The claims the scheduler "allocated": one a device of the pool (it is prepared), one a
# device the pool does not have (the plugin refuses it, as for a stale allocation).
PREPARED = "sprocket-s1-sprocket0"
UNKNOWN = "sprocket-s1-nope"
# The supervisor polls the stand-in's pod-resources API this often (seconds; default 10).
POD_RESOURCES_INTERVAL = "0.5"

# The simulator (`widget-supervisor simulate`), a second scrape target: two KWOK nodes, of which
# the GPU one also gets two gizmos, and 3 snafflers each (one Unhealthy: not allocatable). A
# pod bound to the GPU node holds 2 snafflers; nobody holds a simulated gizmo (while the node
# agent's gizmo-user does hold one of its own).
JOB, SIMULATOR_JOB = "widget-plugin", "widget-simulator"
SIMULATED_NODES = ["kwok-1", "kwok-gpu-1"]
SIMULATOR_CONFIG = """\
devices:
- {type: snaffler, model: v1, device: /dev/wibble1}
- {type: snaffler, model: v1, device: /dev/wibble2}
- {type: snaffler, model: v1, device: /dev/wibble3, health: Unhealthy}
nodes:
- match: "kwok-gpu-*"
  devices:
  - {type: gizmo, model: mk2, device: /dev/gizmo0}
  - {type: gizmo, model: mk2, device: /dev/gizmo1}
"""
SIMULATED_CAPACITY = {V1: 6, GIZMO: 2}
SIMULATED_ALLOCATABLE = {V1: 4, GIZMO: 2}
SIMULATED_IN_USE = {V1: 2, GIZMO: 0}

# Who holds what after the scenario: (resource, namespace, pod, container) -> device count.
HOLDERS = {
    (V1, "ml", "trainer-0", "main"): 2,
    (V1, "ml", "trainer-1", "main"): 1,
    (GIZMO, "sim", "gizmo-user", "worker"): 1,
}

# Alert expressions: which ones must return series after the scenario, and why.
ALERTS_FIRING = {
    # Every plugin re-registered after the kubelet restart: nothing is unregistered now.
    "alert WidgetPluginNotRegistered": False,
    # One reload was rejected (the failure counter went 0 -> 1 within 15 minutes), even though
    # the next one was accepted and the gauge is back to 1.
    "alert WidgetConfigReloadFailing": True,
    # Mock devices are always Healthy; the Unhealthy series exist at 0, which `> 0` drops.
    "alert WidgetDevicesUnhealthy": False,
    # The refused Allocate (unknown_device); the injected failure is left out by design.
    "alert WidgetAllocationErrors": True,
    # The stand-in's pod-resources API answers (the restart's short gap is far below 15m).
    "alert WidgetPodResourcesUnavailable": False,
}


# -- processes -----------------------------------------------------------------------


# Prometheus answers while it starts and between scrapes: a refused connection or a
# half-written JSON answer means "not yet" to `eventually`; the HTTP calls run in a thread.
NOT_YET = (OSError, ValueError)


def api_get(base: str, path: str, **params: str) -> dict[str, Any]:
    """GET a Prometheus API path; its JSON body, also for 4xx/5xx answers (they carry `error`)."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    payload: dict[str, Any] = json.loads(http_get(url).text)
    return payload


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def query(self, expr: str, **params: str) -> dict[str, Any]:
        return api_get(self.url, "/api/v1/query", query=expr, **params)

    def query_range(self, expr: str, *, seconds: float, step: str = "1s") -> dict[str, Any]:
        end = time.time()
        return api_get(
            self.url, "/api/v1/query_range",
            query=expr, start=f"{end - seconds:.3f}", end=f"{end:.3f}", step=step,
        )  # fmt: skip

    def target(self, job: str = JOB) -> dict[str, Any]:
        """The job's one scrape target; empty until the scrape manager has applied the config."""
        targets = api_get(self.url, "/api/v1/targets")["data"]["activeTargets"]
        found = [t for t in targets if t["labels"]["job"] == job]
        assert len(found) <= 1, targets
        return dict(found[0]) if found else {}


def write_prometheus_config(path: Path, target: str, simulator: str) -> None:
    """The node agent's target with the `node` label the chart's ServiceMonitor sets; the
    simulator's without (its ServiceMonitor has no node relabeling: its widget_devices_in_use
    carries the simulated node's name as `node`)."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [target], "labels": {"node": NODE}}],
            },
            {
                "job_name": SIMULATOR_JOB,
                "honor_labels": True,
                "static_configs": [{"targets": [simulator]}],
            },
        ],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML


def start_prometheus(binary: str, workdir: Path, target: str, simulator: str) -> Prometheus:
    config = workdir / "prometheus.yml"
    write_prometheus_config(config, target, simulator)
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    return Prometheus(f"http://127.0.0.1:{port}", process, log)


def stop_prometheus(prometheus: Prometheus) -> None:
    if prometheus.process.poll() is None:
        prometheus.process.terminate()
        try:
            prometheus.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prometheus.process.kill()
            prometheus.process.wait(timeout=5)


@pytest.fixture
def prometheus_binary(require_tool: Callable[[str], str]) -> str:
    return os.path.abspath(require_tool("prometheus"))  # it runs with its temp dir as cwd


def add_dra_resource(config: Path, *entries: str) -> None:
    """Append the DRA devices and `resources:` (`entries`, then the DRA resource) to a config
    that ends with its `devices:` list."""
    devices = "".join(f"- {{type: {t}, model: {m}, device: {d}}}\n" for t, m, d in DRA_DEVICES)
    with config.open("a") as handle:
        handle.write(devices + "resources:\n" + "".join(entries) + DRA_ENTRY)


@pytest.fixture
def config_file(short_tmp: Path, examples: Path) -> Path:
    config = short_tmp / "etc" / "config.yaml"
    config.parent.mkdir()
    shutil.copy(examples / "multi.yml", config)
    add_dra_resource(config, INJECTED)
    config.chmod(0o644)
    return config


@dataclass
class Dra:
    """The DRA side of the node: the API server holding its slices and claims, and kubelet's
    DRA plugin manager."""

    api: ApiServer
    kubelet: DraPluginWatcher

    def devices(self) -> list[str]:
        """The device names of the node's ResourceSlices."""
        slices = self.api.objects("resourceslices")
        return sorted(d["name"] for s in slices for d in s["spec"]["devices"])

    def claim(self, name: str, device: str) -> tuple[str, str, str]:
        """A ResourceClaim as the scheduler leaves it (allocated `device` of the node's pool);
        its (namespace, name, uid), as kubelet passes it to NodePrepareResources."""
        stored = self.api.put_object({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"devices": {"requests": [{"name": "sprocket", "exactly": {
                "deviceClassName": "sprocket-s1.ska-sdp.org"}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "sprocket", "driver": DRIVER, "pool": NODE, "device": device},
            ]}}},
        })  # fmt: skip
        return "ml", name, stored["metadata"]["uid"]


@pytest.fixture
async def dra(short_tmp: Path) -> AsyncIterator[Dra]:
    api = ApiServer()
    await api.start()
    watcher = DraPluginWatcher(short_tmp / "kubelet")
    try:
        api.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        await watcher.start()
        yield Dra(api, watcher)
    finally:
        await watcher.stop()
        await api.stop()


def kwok_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"type": "kwok"}},
        "status": {"capacity": {"cpu": "8", "pods": "110"},
                   "allocatable": {"cpu": "8", "pods": "110"}},
    }  # fmt: skip


@pytest.fixture
async def simulator(dra: Dra, short_tmp: Path) -> AsyncIterator[SupervisorProcess]:
    """`widget-supervisor simulate` against the DRA node's API-server stand-in (whose node,
    unlabelled, is not simulated). Started here and awaited in `prometheus`, so that it boots
    while the node agent does."""
    for name in SIMULATED_NODES:
        dra.api.put_object(kwok_node(name))
    dra.api.put_object({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim-trainer", "namespace": "ml"},
        "spec": {"nodeName": "kwok-gpu-1", "containers": [
            {"name": "main", "resources": {"limits": {V1: "2"}}}]},
        "status": {"phase": "Running"},
    })  # fmt: skip
    config = short_tmp / "sim" / "config.yaml"
    config.parent.mkdir()
    config.write_text(SIMULATOR_CONFIG)
    config.chmod(0o644)
    port = free_port()
    process = SupervisorProcess(config, short_tmp / "unused")
    process.args = [
        sys.executable, "-m", "supervisor", "simulate", "--config", str(config),
        "--kubeconfig", str(dra.api.kubeconfig(short_tmp / "sim" / "kubeconfig")),
        "--metrics-address", f"127.0.0.1:{port}", "--qps", "100", "--burst", "100",
    ]  # fmt: skip
    process.metrics_url = f"http://127.0.0.1:{port}"
    await process.start(wait_for_metrics=False)
    try:
        yield process
    finally:
        code = await process.stop()
    assert code in {0, None}, process.output


def status_patches(api: ApiServer) -> dict[str, int]:
    """How many status writes (PATCH of nodes/NAME/status) the API server took, by node."""
    found: dict[str, int] = {}
    for request in api.requests:
        parts = request.path.strip("/").split("/")
        if (
            request.method == "PATCH"
            and request.status < 300
            and parts[:3] == ["api", "v1", "nodes"]
            and parts[4:] == ["status"]
        ):
            found[parts[3]] = found.get(parts[3], 0) + 1
    return found


def simulated_status(api: ApiServer) -> dict[str, dict[str, str]]:
    """Each simulated node's allocatable extended resources, as the API server stores them."""
    return {
        n["metadata"]["name"]: {
            k: v for k, v in n.get("status", {}).get("allocatable", {}).items() if "/" in k
        }
        for n in api.objects("nodes")
        if n["metadata"]["name"] in SIMULATED_NODES
    }


@pytest.fixture
async def supervisor(
    config_file: Path, plugin_dir: Path, kubelet: KubeletStandIn, dra: Dra, short_tmp: Path
) -> AsyncIterator[SupervisorProcess]:
    # The stand-in serves pod-resources at plugin_dir/../pod-resources/kubelet.sock, where the
    # supervisor looks by default (as in the chart's pod); only the poll interval is shortened.
    # The DRA node is the scrape target's node.
    process = SupervisorProcess(
        config_file, plugin_dir, "--pod-resources-interval", POD_RESOURCES_INTERVAL,
        "--node-name", NODE, "--kubeconfig", str(dra.api.kubeconfig(short_tmp / "kubeconfig")),
        "--kubelet-root-dir", str(short_tmp / "kubelet"), "--cdi-dir", str(short_tmp / "cdi"),
    )  # fmt: skip
    try:
        await process.start()
        await kubelet.wait_registered(RESOURCES)
        await dra.kubelet.wait_registered(DRIVER, timeout=10)
        # Published before Prometheus' first scrape, as a starting pod does.
        await eventually(dra.devices, what="the node's ResourceSlices")
        yield process
    finally:
        code = await process.stop()
    assert code in {0, None}, process.output


@pytest.fixture
def prometheus_dir(short_tmp: Path) -> Path:
    path = short_tmp / "prometheus"
    path.mkdir()
    return path


@pytest.fixture
async def prometheus(
    prometheus_binary: str,
    prometheus_dir: Path,
    simulator: SupervisorProcess,
    supervisor: SupervisorProcess,
    dra: Dra,
) -> AsyncIterator[Prometheus]:
    """A Prometheus scraping the supervisor and the simulator every second, ready and with one
    scrape of each done. The simulator has written its nodes before: as a starting pod does,
    it writes before its first scrape."""
    wanted = {"kwok-1": {V1: "2"}, "kwok-gpu-1": {V1: "2", GIZMO: "2"}}
    await eventually(lambda: simulated_status(dra.api) == wanted, what="the simulated nodes")
    await eventually(
        lambda: sample(simulator.metrics(), "widget_devices_in_use", node="kwok-gpu-1",
                       resource=V1) == 2,
        what="the simulator's pod count", ignore=NOT_YET, thread=True,
    )  # fmt: skip
    target = supervisor.metrics_url.removeprefix("http://")
    sim_target = simulator.metrics_url.removeprefix("http://")
    server = start_prometheus(prometheus_binary, prometheus_dir, target, sim_target)
    try:

        def ready() -> bool:
            if server.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{server.output()}")
            return http_get(server.url + "/-/ready", timeout=2).status == 200

        await eventually(ready, what="prometheus /-/ready", every=0.2, ignore=NOT_YET, thread=True)
        # A first scrape before anything happens: counters that start at 0 (reload failures,
        # allocations) are then seen to rise, as they are in a long-running deployment.
        await eventually(
            lambda: all(server.target(job).get("health") == "up" for job in (JOB, SIMULATOR_JOB)),
            what="first scrapes", every=0.2, ignore=NOT_YET, thread=True,
        )  # fmt: skip
        yield server
    finally:
        stop_prometheus(server)
    assert server.process.returncode == 0, server.output()


# -- scenario ------------------------------------------------------------------------


def scrape_time(target: dict[str, Any]) -> float:
    """`lastScrape` (RFC 3339 with nanoseconds) as a Unix time."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", target["lastScrape"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


async def wait_for_scrapes(prometheus: Prometheus, *, after: float, count: int = 2) -> None:
    """Wait until Prometheus has finished `count` scrapes that started after `after`."""
    seen: set[float] = set()

    def scraped() -> bool:
        target = prometheus.target()
        assert target["health"] == "up", target
        started = scrape_time(target)
        if started > after:
            seen.add(started)
        return len(seen) >= count

    await eventually(
        scraped, what=f"{count} scrapes", timeout=count * SCRAPE_INTERVAL + 10, every=0.1,
        ignore=NOT_YET, thread=True,
    )  # fmt: skip


async def drive(
    supervisor: SupervisorProcess,
    kubelet: KubeletStandIn,
    dra: Dra,
    config: Path,
    prometheus: Prometheus,
) -> None:
    """The known history the queries are checked against (see the expected values below)."""
    await kubelet.allocate(V1, count=2, namespace="ml", pod="trainer-0", container="main")
    # rate() sees only observations after a first scrape of a series, so the latency panels
    # need an Allocate and a prepare after one.
    await wait_for_scrapes(prometheus, after=time.time(), count=1)
    await kubelet.allocate(V1, count=1, namespace="ml", pod="trainer-1", container="main")
    await prepare_claims(dra)
    await kubelet.allocate(GIZMO, count=1, namespace="sim", pod="gizmo-user", container="worker")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await kubelet.allocate(V2, device_ids=["snaffler-v2-nope"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as injected:
        await kubelet.allocate(DOOHICKEY, count=1, namespace="ml", pod="unlucky")
    assert injected.value.code() == grpc.StatusCode.INTERNAL

    await kubelet.restart()
    await kubelet.wait_registered(RESOURCES)

    # A rejected config (model missing), then an accepted one with one more device.
    mark = len(supervisor.lines)
    bad = config.with_name(".bad.yaml")
    bad.write_text("devices:\n- type: snaffler\n  device: /dev/x\n")
    bad.chmod(0o644)
    os.rename(bad, config)
    await supervisor.wait_for_log("rejected config", after=mark)
    mark = len(supervisor.lines)
    good = config.with_name(".good.yaml")
    write_config(good, RELOADED_DEVICES, domain="ska-sdp.org")
    add_dra_resource(good)  # unchanged: its slices and its prepared claim stay
    os.rename(good, config)
    await supervisor.wait_for_log(r"reloaded .*1 updated", after=mark)
    await kubelet.wait_for(lambda k: len(k.plugins[DOOHICKEY].devices) == 2)

    # The kubelet restart took the pod-resources socket away for a moment; wait until the
    # supervisor reports the holders again (the stand-in, like kubelet, remembers them).
    def holders_reported() -> bool:
        text = supervisor.metrics()
        return sample(text, "widget_pod_resources_up") == 1 and sample(
            text, "widget_devices_in_use", resource=V1
        ) == sum(n for (r, *_), n in HOLDERS.items() if r == V1)

    await eventually(
        holders_reported, what="the holders in the supervisor's metrics", every=0.2,
        ignore=NOT_YET, thread=True,
    )  # fmt: skip


async def prepare_claims(dra: Dra) -> None:
    """kubelet prepares a claim allocated a device of the pool, then one allocated a device
    the pool does not have (one NodePrepareResources call each, as for two pods)."""
    good = dra.claim("sprocket-user", PREPARED)
    prepared = (await dra.kubelet.prepare(DRIVER, [good])).claims[good[2]]
    assert prepared.error == ""
    assert [d.device_name for d in prepared.devices] == [PREPARED]
    bad = dra.claim("sprocket-stale", UNKNOWN)
    refused = (await dra.kubelet.prepare(DRIVER, [bad])).claims[bad[2]]
    assert f"{NODE}/{UNKNOWN}" in refused.error


# -- checks --------------------------------------------------------------------------


def result_of(query: Query, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The result list of a successful answer; fails naming the query otherwise."""
    where = f"{query.source}: {query.expr}"
    assert payload.get("status") == "success", f"{where}\n{payload}"
    assert "error" not in payload, f"{where}\n{payload}"
    assert not payload.get("warnings"), f"{where}\n{payload['warnings']}"
    assert not payload.get("infos"), f"{where}\n{payload['infos']}"
    data = payload["data"]
    if data["resultType"] in {"scalar", "string"}:
        return [{"value": data["result"]}]
    return list(data["result"])


def instant(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    return result_of(Query("check", expr), prometheus.query(expr))


def value(prometheus: Prometheus, expr: str) -> float:
    """The value of an expression that must give exactly one series."""
    result = instant(prometheus, expr)
    assert len(result) == 1, f"{expr}: {result}"
    return float(result[0]["value"][1])


def panel_value(prometheus: Prometheus, queries: dict[str, Query], source: str) -> float:
    return value(prometheus, queries[source].expr)


def expect_empty(query: Query) -> bool:
    """Whether this query must return nothing after the scenario (else: must return series).
    Every panel and variable must show data; alerts as ALERTS_FIRING says."""
    if query.source.startswith("alert "):
        assert query.source in ALERTS_FIRING, f"{query.source}: add its expectation"
        return not ALERTS_FIRING[query.source]
    return False


async def test_every_dashboard_and_alert_query_works_against_live_prometheus(
    prometheus: Prometheus,
    supervisor: SupervisorProcess,
    simulator: SupervisorProcess,
    kubelet: KubeletStandIn,
    dra: Dra,
    config_file: Path,
) -> None:
    await drive(supervisor, kubelet, dra, config_file, prometheus)
    await wait_for_scrapes(prometheus, after=time.time())

    # The supervisor's own view first, so a wrong value below points at Prometheus or a query.
    own = supervisor.metrics()
    assert sample(own, "widget_allocations_total", resource=V1) == 2
    assert sample(own, "widget_dra_prepared_claims", resource=DRA_RESOURCE) == 1
    assert dra.devices() == [f"sprocket-s1-sprocket{i}" for i in range(2)]

    await check_every_query(prometheus)
    check_exact_values(prometheus)
    check_panels(prometheus)
    check_holders(prometheus)
    check_dra(prometheus)
    check_fleet(prometheus, simulator, dra)
    check_alerts_and_variables(prometheus)


async def check_every_query(p: Prometheus) -> None:
    """Every query succeeds without warnings, and is empty only where it must be."""
    queries = all_queries()
    assert len(queries) >= 19
    problems = []
    for query in queries:
        payload = await asyncio.to_thread(p.query, query.expr)
        result = result_of(query, payload)
        if bool(result) == expect_empty(query):
            problems.append(f"{query.source}: {len(result)} series: {query.expr}")
        if query.source.startswith("panel "):
            payload = await asyncio.to_thread(p.query_range, query.expr, seconds=60)
            ranged = result_of(query, payload)
            if bool(ranged) == expect_empty(query):
                problems.append(f"{query.source} (range): {len(ranged)} series: {query.expr}")
    assert not problems, "\n".join(problems)


def check_exact_values(p: Prometheus) -> None:
    """The scenario's counts, read through Prometheus (with the target's `node` label)."""
    assert value(p, f'up{{job="widget-plugin", node="{NODE}"}}') == 1
    assert value(p, f'widget_allocations_total{{resource="{V1}", node="{NODE}"}}') == 2
    assert value(p, f'widget_allocated_devices_total{{resource="{V1}"}}') == 3
    assert value(p, f'widget_allocations_total{{resource="{GIZMO}"}}') == 1
    assert value(p, f'widget_allocations_total{{resource="{V2}"}}') == 0
    assert value(p, f'widget_allocate_duration_seconds_count{{resource="{V2}"}}') == 1
    errors = instant(p, "widget_allocation_errors_total != 0")  # every reason starts at 0
    assert sorted(
        (e["metric"]["resource"], e["metric"]["reason"], e["value"][1]) for e in errors
    ) == [(DOOHICKEY, "injected_failure", "1"), (V2, "unknown_device", "1")]
    reasons = {e["metric"]["reason"] for e in instant(p, "widget_allocation_errors_total")}
    assert reasons == {"unknown_device", "invalid_request", "injected_failure"}
    assert value(p, f'widget_allocate_duration_seconds_count{{resource="{DOOHICKEY}"}}') == 1
    for resource in RESOURCES:
        assert value(p, f'widget_registrations_total{{resource="{resource}"}}') == 2, resource
        assert value(p, f'widget_plugin_registered{{resource="{resource}"}}') == 1, resource
    # The simulator has config metrics of its own (no reload there): the node agent's job.
    assert value(p, f'widget_config_reloads_total{{result="success", job="{JOB}"}}') == 1
    assert value(p, f'widget_config_reloads_total{{result="failure", job="{JOB}"}}') == 1
    assert value(p, f'widget_config_last_reload_successful{{job="{JOB}"}}') == 1
    assert value(p, f'widget_pod_resources_up{{node="{NODE}"}}') == 1
    for resource in RESOURCES:
        held = sum(n for (r, *_), n in HOLDERS.items() if r == resource)
        in_use = f'widget_devices_in_use{{resource="{resource}", node="{NODE}"}}'
        assert value(p, in_use) == held, resource


def check_panels(p: Prometheus) -> None:
    """What the dashboard shows, panel by panel."""
    panels = {q.source: q for q in dashboard_queries()}
    # The reloaded config's 9 device-plugin devices and the 2 DRA ones.
    healthy = len(RELOADED_DEVICES) + len(DRA_DEVICES)
    assert panel_value(p, panels, "panel 'Healthy devices' target A") == healthy == 11
    assert panel_value(p, panels, "panel 'Unhealthy devices' target A") == 0
    assert panel_value(p, panels, "panel 'Plugins not registered' target A") == 0
    by_reason = instant(p, panels["panel 'Allocation errors by reason (range)' target A"].expr)
    assert {s["metric"]["reason"]: float(s["value"][1]) for s in by_reason} == {
        "unknown_device": 1,
        "injected_failure": 1,
        "invalid_request": 0,
    }
    # The per-interval panel must show the refused and the failed Allocate (its query also
    # counts a series born at 1, as supervisors that do not start them at 0 export them).
    per_interval = result_of(
        Query("errors", panels["panel 'Allocation errors' target A"].expr),
        p.query_range(panels["panel 'Allocation errors' target A"].expr, seconds=60),
    )
    peaks = {
        (s["metric"]["resource"], s["metric"]["reason"]): max(float(v) for _, v in s["values"])
        for s in per_interval
    }
    assert {key: round(peak) for key, peak in peaks.items() if peak} == {
        (V2, "unknown_device"): 1,
        (DOOHICKEY, "injected_failure"): 1,
    }
    state = instant(p, panels["panel 'Registration state per node and resource' target A"].expr)
    assert sorted((s["metric"]["node"], s["metric"]["resource"], s["value"][1]) for s in state) == [
        (NODE, resource, "1") for resource in sorted([*RESOURCES, DRA_RESOURCE])
    ]
    # The simulator reads a config too; it has no node, and shows as "simulator".
    newest = instant(p, panels["panel 'Newest config accepted per node' target A"].expr)
    assert sorted((s["metric"]["node"], s["value"][1]) for s in newest) == [
        (NODE, "1"),
        ("simulator", "1"),
    ]
    reloads = instant(p, panels["panel 'Config reloads' target A"].expr)
    assert {(s["metric"]["node"], s["metric"]["result"]) for s in reloads} == {
        (node, result) for node in (NODE, "simulator") for result in ("success", "failure")
    }
    # V1's latency is a number: it had an Allocate after a scrape had seen its histogram.
    latency = instant(p, panels["panel 'Allocate latency p50 / p99' target B"].expr)
    (v1_p99,) = [float(s["value"][1]) for s in latency if s["metric"]["resource"] == V1]
    assert not math.isnan(v1_p99)
    assert 0 < v1_p99 <= 2.5


def check_holders(p: Prometheus) -> None:
    """Who holds which device (the table), devices in use, and the pod-resources API state."""
    panels = {q.source: q for q in dashboard_queries()}
    rows = instant(p, panels["panel 'Who holds which device' target A"].expr)
    assert all(s["metric"]["node"] == NODE and s["value"][1] == "1" for s in rows), rows
    held: dict[tuple[str, str, str, str], int] = {}
    for s in rows:
        m = s["metric"]
        key = (m["resource"], m["namespace"], m["pod"], m["container"])
        held[key] = held.get(key, 0) + 1
    assert held == HOLDERS
    devices = [s["metric"]["device"] for s in rows]
    assert len(devices) == len(set(devices)), "a device held twice"
    assert all(d.startswith(("snaffler-v1-", "gizmo-mk2-")) for d in devices), devices
    in_use = instant(p, panels["panel 'Devices in use' target A"].expr)
    assert {s["metric"]["resource"]: float(s["value"][1]) for s in in_use} == {
        V1: 3,
        V2: 0,
        GIZMO: 1,
        DOOHICKEY: 0,
        # No series for the DRA resource: pod-resources reports only device-plugin
        # allocations, and a 0 would be false (widget_dra_prepared_claims counts its claims).
    }
    up = instant(p, panels["panel 'Pod-resources API per node' target A"].expr)
    assert [(s["metric"], s["value"][1]) for s in up] == [({"node": NODE}, "1")]


def check_alerts_and_variables(p: Prometheus) -> None:
    """The alerts that fire carry the labels their annotations use; the Node and Resource
    variables list this node, and selecting it (or another) filters the panels."""
    alerts = {q.source: q for q in all_queries() if q.source.startswith("alert ")}
    reload_failing = instant(p, alerts["alert WidgetConfigReloadFailing"].expr)
    assert [s["metric"] for s in reload_failing] == [{"node": NODE}]
    # The injected doohickey failure is counted (check_exact_values) but does not alert.
    allocation_errors = instant(p, alerts["alert WidgetAllocationErrors"].expr)
    assert [s["metric"] for s in allocation_errors] == [{"node": NODE, "resource": V2}]

    nodes = api_get(p.url, "/api/v1/label/node/values", **{"match[]": "widget_plugin_registered"})
    assert nodes["data"] == [NODE]
    selected = {q.source: q for q in dashboard_queries(node=NODE, resource=V1)}
    assert panel_value(p, selected, "panel 'Healthy devices' target A") == 3
    assert instant(p, selected["panel 'Prepared claims per node and resource' target A"].expr) == []
    other = {q.source: q for q in dashboard_queries(node=OTHER_NODE)}
    assert instant(p, other["panel 'Healthy devices' target A"].expr) == []
    assert instant(p, other["panel 'DRA plugin registered per node' target A"].expr) == []
    assert panel_value(p, other, "panel 'Plugins not registered' target A") == 0  # or vector(0)


def check_dra(p: Prometheus) -> None:
    """The DRA metrics after one claim prepared and one refused, and the DRA row's panels."""
    assert value(p, f'widget_dra_plugin_registered{{node="{NODE}"}}') == 1
    assert value(p, f'widget_plugin_registered{{resource="{DRA_RESOURCE}"}}') == 1
    assert value(p, f'widget_devices{{resource="{DRA_RESOURCE}", health="Healthy"}}') == 2
    assert value(p, f'widget_dra_prepared_claims{{resource="{DRA_RESOURCE}", node="{NODE}"}}') == 1
    # Every supervisor exports these from its start, the simulator too: the node agent's job.
    assert value(p, f'widget_dra_prepare_total{{result="success", job="{JOB}"}}') == 1
    assert value(p, f'widget_dra_prepare_total{{result="error", job="{JOB}"}}') == 1
    assert value(p, f'widget_dra_prepare_duration_seconds_count{{job="{JOB}"}}') == 2
    ok = value(p, f'widget_dra_resourceslice_writes_total{{result="ok", job="{JOB}"}}')
    assert ok >= 1  # the pool's first slice; an unchanged resource on reload writes nothing
    panels = {q.source: q for q in dashboard_queries()}

    def panel(title: str, ref: str = "A") -> dict[tuple[str, ...], float]:
        result = instant(p, panels[f"panel {title!r} target {ref}"].expr)
        return {tuple(s["metric"].values()): float(s["value"][1]) for s in result}

    assert panel("DRA plugin registered per node") == {(NODE,): 1}
    assert panel("Prepared claims per node and resource") == {(NODE, DRA_RESOURCE): 1}
    # The slices were written before Prometheus' first scrape, and the series is younger than
    # $__rate_interval: the panel counts every write (increase() alone would show 0).
    assert panel("ResourceSlice writes by result") == {("ok",): ok, ("conflict",): 0, ("error",): 0}
    rates = panel("Claims prepared per second by result")
    assert rates.keys() == {("success",), ("error",)}
    assert rates[("success",)] == rates[("error",)] > 0  # one each, at the same scrapes
    expr = panels["panel 'Claims prepared per second by result' target A"].expr
    ranged = result_of(Query("prepares", expr), p.query_range(expr, seconds=60))
    assert {s["metric"]["result"] for s in ranged if any(float(v) for _, v in s["values"])} == {
        "success",
        "error",
    }
    # A number, not NaN: both prepares came after a scrape had seen the histogram.
    for ref in ("A", "B"):
        (quantile,) = panel("Prepare latency p50 / p99", ref).values()
        assert not math.isnan(quantile)
        assert 0 < quantile <= 2.5, ref


def check_fleet(p: Prometheus, simulator: SupervisorProcess, dra: Dra) -> None:
    """The simulator's metrics, scraped without the node relabeling, and the fleet row: the
    devices of the simulated nodes apart from the node agent's (same resource names)."""
    assert value(p, f'up{{job="{SIMULATOR_JOB}"}}') == 1
    assert value(p, "widget_simulated_nodes") == len(SIMULATED_NODES)
    for name, expected in (
        ("widget_simulated_capacity", SIMULATED_CAPACITY),
        ("widget_simulated_allocatable", SIMULATED_ALLOCATABLE),
    ):
        series = instant(p, name)
        assert {s["metric"]["resource"]: float(s["value"][1]) for s in series} == expected, name
    # Its own `node` label, the simulated node's (honor_labels; no target label to override).
    held = instant(p, f'widget_devices_in_use{{job="{SIMULATOR_JOB}"}}')
    assert [(s["metric"]["node"], s["metric"]["resource"], s["value"][1]) for s in held] == [
        ("kwok-gpu-1", V1, "2")
    ]
    # One status write per node, counted ok (its own write's watch event does not queue it
    # again); the error series exists at 0 from the start.
    patches = status_patches(dra.api)
    assert patches == dict.fromkeys(SIMULATED_NODES, 1), patches
    writes = instant(p, "widget_simulated_node_writes_total")
    assert {s["metric"]["result"]: float(s["value"][1]) for s in writes} == {
        "ok": len(SIMULATED_NODES),
        "error": 0,
    }, patches
    assert simulated_status(dra.api) == {"kwok-1": {V1: "2"}, "kwok-gpu-1": {V1: "2", GIZMO: "2"}}

    panels = {q.source: q for q in dashboard_queries()}

    def panel(title: str, ref: str = "A") -> dict[tuple[str, ...], float]:
        result = instant(p, panels[f"panel {title!r} target {ref}"].expr)
        return {tuple(s["metric"].values()): float(s["value"][1]) for s in result}

    assert panel("Simulated nodes") == {(): 2}
    devices = "Simulated capacity, allocatable and in use"
    assert panel(devices, "A") == {(r,): n for r, n in SIMULATED_CAPACITY.items()}
    assert panel(devices, "B") == {(r,): n for r, n in SIMULATED_ALLOCATABLE.items()}
    # In use: the simulated nodes' pod only (the node agent's trainers hold 3 snafflers and
    # gizmo-user a gizmo), and 0 for the gizmos nobody holds there.
    assert panel(devices, "C") == {(r,): n for r, n in SIMULATED_IN_USE.items()}
    # Written before the first scrape, younger than $__rate_interval: counted whole.
    assert panel("Node status writes by result") == {("ok",): len(SIMULATED_NODES), ("error",): 0}
    # Selecting a (real) node leaves the fleet row alone: the simulator's series have none.
    selected = {q.source: q for q in dashboard_queries(node=NODE)}
    assert panel_value(p, selected, "panel 'Simulated nodes' target A") == 2
