"""`widget-supervisor simulate` end to end: the real process against the API-server stand-in
(real HTTP, server-side apply on nodes/status): per-node globs, nodes coming and going,
reloads, faults, pods holding devices, other managers' fields, an API server restart and
an expired watch, and the client-side rate limit."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apiserver_standin.server import ApiServer
from tests.support import SupervisorProcess, eventually, http_get, sample

SNAFFLER, GIZMO, DOOHICKEY = (
    "ska-sdp.org/snaffler-v1", "ska-sdp.org/gizmo-mk2", "ska-sdp.org/doohickey-a100",
)  # fmt: skip
CONFIG = """\
devices:
- {type: snaffler, model: v1, device: /dev/wibble1}
- {type: snaffler, model: v1, device: /dev/wibble2, health: Unhealthy}
nodes:
- match: "gpu-node-*"
  devices:
  - {type: gizmo, model: mk2, device: /dev/gizmo0}
  - {type: gizmo, model: mk2, device: /dev/gizmo1}
  resources:
  - {type: gizmo, model: mk2, replicas: 3}
- match: "edge-*"
  mode: replace
  devices:
  - {type: doohickey, model: a100, device: /dev/doohickey0}
"""


def kwok_node(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels or {"type": "kwok"}},
        "status": {"capacity": {"cpu": "32", "pods": "110"},
                   "allocatable": {"cpu": "32", "pods": "110"}},
    }  # fmt: skip


@dataclass
class Fleet:
    api: ApiServer
    config: Path
    process: SupervisorProcess

    def status(self, node: str, field: str = "allocatable") -> dict[str, str]:
        found = [n for n in self.api.objects("nodes") if n["metadata"]["name"] == node]
        return dict(found[0].get("status", {}).get(field, {})) if found else {}

    def ours(self, node: str, field: str = "allocatable") -> dict[str, str]:
        return {k: v for k, v in self.status(node, field).items() if "/" in k}


async def start_fleet(api: ApiServer, root: Path, *extra: str) -> SupervisorProcess:
    process = SupervisorProcess(root / "widget.yml", root / "unused")
    process.args = [
        sys.executable, "-m", "supervisor", "simulate", "--config", str(root / "widget.yml"),
        "--kubeconfig", str(api.kubeconfig(root / "kubeconfig")),
        "--metrics-address", "127.0.0.1:0", "--log-level", "debug", *extra,
    ]  # fmt: skip
    return await process.start()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    api = ApiServer()
    await api.start()
    for name in ("plain-1", "gpu-node-1", "edge-7"):
        api.put_object(kwok_node(name))
    api.put_object(kwok_node("real-node", kubernetes_io_hostname="real-node"))
    config = tmp_path / "widget.yml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    process = await start_fleet(api, tmp_path, "--qps", "200", "--burst", "50")
    try:
        yield Fleet(api, config, process)
    finally:
        await process.stop()
        await api.stop()


async def test_each_node_gets_what_its_globs_give_it(fleet: Fleet) -> None:
    await eventually(lambda: fleet.ours("edge-7"), what="edge-7 written")
    assert fleet.ours("plain-1", "capacity") == {SNAFFLER: "2"}
    assert fleet.ours("plain-1") == {SNAFFLER: "1"}, "the Unhealthy device is not allocatable"
    assert fleet.ours("gpu-node-1", "capacity") == {SNAFFLER: "2", GIZMO: "6"}  # 2 x replicas 3
    assert fleet.ours("edge-7") == {DOOHICKEY: "1"}  # mode: replace
    assert fleet.ours("real-node") == {}, "not selected: type=kwok only"
    assert fleet.status("plain-1")["cpu"] == "32", "another manager's fields stay"
    nodes = fleet.api.objects("nodes")
    managers = {m["manager"] for n in nodes for m in n["metadata"].get("managedFields", ())}
    assert "widget-supervisor" in managers
    metrics = fleet.process.metrics()
    patches = [r.path for r in fleet.api.requests if r.method == "PATCH"]
    assert sorted(patches) == sorted(f"/api/v1/nodes/{n}/status"
                                     for n in ("plain-1", "gpu-node-1", "edge-7")), \
        "one write per node (its own write's event does not queue it again)"  # fmt: skip
    assert sample(metrics, "widget_simulated_node_writes_total", result="ok") == 3
    assert sample(metrics, "widget_simulated_nodes") == 3
    assert sample(metrics, "widget_simulated_capacity", resource=SNAFFLER) == 4  # not edge-7


async def test_nodes_come_and_go_and_reloads_reach_every_node(fleet: Fleet) -> None:
    await eventually(lambda: fleet.ours("edge-7"))
    fleet.api.put_object(kwok_node("gpu-node-2"))
    await eventually(lambda: fleet.ours("gpu-node-2").get(GIZMO) == "6", timeout=5,
                     what="a new node written within seconds")  # fmt: skip
    fleet.config.write_text(
        CONFIG.replace("replicas: 3", "replicas: 1").replace(
            "- {type: snaffler, model: v1, device: /dev/wibble2, health: Unhealthy}\n", ""
        )
    )
    for node in ("gpu-node-1", "gpu-node-2"):
        await eventually(lambda n=node: fleet.ours(n) == {SNAFFLER: "1", GIZMO: "2"},  # type: ignore[misc]
                         what=f"{node} reloaded")  # fmt: skip
    # A resource gone from the config goes from the nodes, and only our fields go.
    fleet.config.write_text("devices: [{type: snaffler, model: v1, device: /dev/wibble1}]\n")
    await eventually(lambda: fleet.ours("edge-7") == {SNAFFLER: "1"}, what="edge-7 reloaded")
    await eventually(lambda: GIZMO not in fleet.ours("gpu-node-1"), what="gizmo removed")
    assert fleet.status("gpu-node-1")["pods"] == "110"


async def test_pods_bound_to_a_node_count_as_in_use(fleet: Fleet) -> None:
    await eventually(lambda: fleet.ours("gpu-node-1"))
    fleet.api.put_object({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "gpu-node-1", "containers": [
            {"name": "a", "resources": {"limits": {GIZMO: "2"}}},
            {"name": "b", "resources": {"requests": {GIZMO: "1"}, "limits": {GIZMO: "1"}}}]},
        "status": {"phase": "Running"},
    })  # fmt: skip
    await eventually(lambda: sample(fleet.process.metrics(), "widget_devices_in_use",
                                    node="gpu-node-1", resource=GIZMO) == 3,
                     thread=False, what="3 gizmos in use on gpu-node-1")  # fmt: skip


async def test_an_api_server_restart_and_an_expired_watch(fleet: Fleet) -> None:
    await eventually(lambda: fleet.ours("edge-7"))
    await fleet.api.stop()
    fleet.config.write_text(
        CONFIG.replace(
            "/dev/doohickey0}",
            "/dev/doohickey0}\n  - {type: doohickey, model: a100, device: /dev/d1}",
        )
    )
    await fleet.process.wait_for_log("reloaded")
    await fleet.api.restart()
    await eventually(lambda: fleet.ours("edge-7") == {DOOHICKEY: "2"}, timeout=20,
                     what="written once the API server is back")  # fmt: skip
    fleet.api.compact()
    fleet.api.put_object(kwok_node("edge-8"))
    await eventually(lambda: fleet.ours("edge-8") == {DOOHICKEY: "2"}, timeout=20,
                     what="a node seen after the watch expired")  # fmt: skip


async def test_writes_keep_to_the_rate_limit(tmp_path: Path) -> None:
    api = ApiServer()
    await api.start()
    for i in range(30):
        api.put_object(kwok_node(f"n-{i:02d}"))
    (tmp_path / "widget.yml").write_text(CONFIG)
    (tmp_path / "widget.yml").chmod(0o644)
    process = await start_fleet(api, tmp_path, "--qps", "20", "--burst", "2")
    try:

        def written() -> bool:
            return all(n.get("status", {}).get("allocatable", {}).get(SNAFFLER)
                       for n in api.objects("nodes"))  # fmt: skip

        await eventually(written, timeout=20, what="30 nodes written")
        times = sorted(r.time for r in api.requests if r.method == "PATCH")
        assert len(times) == 30, len(times)
        # A token bucket of 2 refilled at 20/s: at most 2 + 20 t writes in any t seconds.
        for i, start in enumerate(times):
            within = [t for t in times[i:] if t - start <= 0.5]
            assert len(within) <= 2 + 20 * 0.5 + 1, (len(within), start)
        assert times[-1] - times[0] >= (30 - 2) / 20 * 0.9
    finally:
        await process.stop()
        await api.stop()


async def test_dra_resources_become_each_simulated_nodes_pool(fleet: Fleet) -> None:
    await eventually(lambda: fleet.ours("gpu-node-1"))
    fleet.config.write_text(CONFIG.replace("replicas: 3}", "replicas: 3, api: dra}"))

    def pool(node: str) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for s in fleet.api.objects("resourceslices")
                if s["spec"]["nodeName"] == node for d in s["spec"]["devices"]}  # fmt: skip

    offered = await eventually(lambda: pool("gpu-node-1"), what="gpu-node-1's slices")
    assert sorted(offered) == ["gizmo-mk2-gizmo0", "gizmo-mk2-gizmo1"]
    assert offered["gizmo-mk2-gizmo0"]["capacity"]["shares"]["value"] == "3"
    await eventually(lambda: GIZMO not in fleet.ours("gpu-node-1"), what="no longer a count")
    (one,) = [
        s for s in fleet.api.objects("resourceslices") if s["spec"]["nodeName"] == "gpu-node-1"
    ]
    node_uid = next(n["metadata"]["uid"] for n in fleet.api.objects("nodes")
                    if n["metadata"]["name"] == "gpu-node-1")  # fmt: skip
    assert one["metadata"]["ownerReferences"][0]["uid"] == node_uid
    assert one["spec"]["pool"] == {"name": "gpu-node-1", "generation": 1, "resourceSliceCount": 1}
    assert pool("plain-1") == {}, "no DRA resource there"
    url = f"{fleet.api.url}/api/v1/nodes/gpu-node-1"
    assert (await asyncio.to_thread(http_get, url, method="DELETE")).status == 200
    await eventually(lambda: not pool("gpu-node-1"), what="the deleted node's slices deleted")


async def test_throttled_and_failed_writes_are_retried(tmp_path: Path) -> None:
    api = ApiServer()
    await api.start()
    api.put_object(kwok_node("plain-1"))
    api.fail_next("PATCH", "/api/v1/nodes/*/status", 429, retry_after=0.3)
    api.fail_next("PATCH", "/api/v1/nodes/*/status", 503)
    (tmp_path / "widget.yml").write_text(CONFIG)
    (tmp_path / "widget.yml").chmod(0o644)
    process = await start_fleet(api, tmp_path)
    try:

        def written() -> bool:
            return SNAFFLER in api.objects("nodes")[0].get("status", {}).get("allocatable", {})

        await eventually(written, timeout=15, what="written after a 429 and a 503")
        statuses = [r.status for r in api.requests if r.method == "PATCH"]
        assert statuses == [429, 503, 200], statuses
        times = [r.time for r in api.requests if r.method == "PATCH"]
        assert times[1] - times[0] >= 0.3, "the 429's Retry-After was honoured"
        metrics = process.metrics()
        assert sample(metrics, "widget_simulated_node_writes_total", result="error") == 2
    finally:
        await process.stop()
        await api.stop()


async def test_a_node_with_only_dra_resources_gets_its_pool_from_the_start(
    tmp_path: Path,
) -> None:
    """Its status is right from the first sight (no counts of ours): it must be queued all
    the same, for its slices."""
    api = ApiServer()
    await api.start()
    (tmp_path / "widget.yml").write_text("api: dra\n" + CONFIG)
    (tmp_path / "widget.yml").chmod(0o644)
    process = await start_fleet(api, tmp_path)
    try:
        await process.wait_for_log("simulated nodes; writing them")
        api.put_object(kwok_node("plain-9"))

        def devices() -> list[str]:
            return [d["name"] for s in api.objects("resourceslices") for d in s["spec"]["devices"]]

        await eventually(lambda: devices() == ["snaffler-v1-wibble1"], what="plain-9's pool")
    finally:
        await process.stop()
        await api.stop()
