"""DRA mode end to end: the real `widget-supervisor run` process against the API-server
stand-in (real HTTP) and kubelet's DRA plugin watcher stand-in (real gRPC over unix
sockets): slices published from the config, claims prepared and unprepared, reloads,
health, an API server restart, and SIGTERM cleanup."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apiserver_standin.server import ApiServer
from kubelet_standin.dra import DraPluginWatcher
from tests.support import SupervisorProcess, eventually, http_get, sample

DRIVER = "ska-sdp.org"
NODE = "node-a"

CONFIG = """\
api: dra
devices:
- {type: snaffler, model: v1, device: /dev/w1, numa: 1, attributes: {cores: 128}}
- {type: snaffler, model: v1, device: /dev/w2, numa: 0}
- {type: snaffler, model: v1, device: /dev/w3, numa: 1, health: Unhealthy}
- {type: gizmo, model: mk2, device: /dev/g0}
resources:
- {type: gizmo, model: mk2, api: device-plugin}
- {type: snaffler, model: v1, envs: {SNAFFLER_MODE: fast}}
"""


@dataclass
class Node:
    api: ApiServer
    kubelet: DraPluginWatcher
    root: Path
    config: Path
    cdi: Path
    supervisor: SupervisorProcess

    def slices(self) -> list[dict[str, Any]]:
        return [s for s in self.api.objects("resourceslices") if s["spec"]["nodeName"] == NODE]

    def offered(self) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for s in self.slices() for d in s["spec"]["devices"]}

    def claim(self, *devices: str, request: str = "gpu") -> tuple[str, str, str]:
        name = f"claim-{uuid.uuid4().hex[:8]}"
        stored = self.api.put_object({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"devices": {"requests": [{"name": request, "exactly": {
                "deviceClassName": "snaffler-v1.ska-sdp.org"}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": request, "driver": DRIVER, "pool": NODE, "device": d}
                for d in devices
            ]}}},
        })  # fmt: skip
        return "default", name, stored["metadata"]["uid"]


@pytest.fixture
async def node(short_tmp: Path) -> AsyncIterator[Node]:
    api = ApiServer()
    await api.start()
    api.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    kubelet = DraPluginWatcher(short_tmp / "kubelet")
    await kubelet.start()
    config = short_tmp / "widget.yml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    supervisor = SupervisorProcess(
        config, short_tmp / "device-plugins", "--node-name", NODE,
        "--kubeconfig", str(api.kubeconfig(short_tmp / "kubeconfig")),
        "--kubelet-root-dir", str(short_tmp / "kubelet"), "--cdi-dir", str(short_tmp / "cdi"),
        "--pod-resources-interval", "0",
    )  # fmt: skip
    await supervisor.start()
    try:
        yield Node(api, kubelet, short_tmp / "kubelet", config, short_tmp / "cdi", supervisor)
    finally:
        await supervisor.stop()
        await kubelet.stop()
        await api.stop()


async def test_slices_match_the_config(node: Node) -> None:
    await node.kubelet.wait_registered(DRIVER, timeout=10)
    offered = await eventually(node.offered, what="the node's ResourceSlices")
    # The Unhealthy device is not offered; the device-plugin resource is not in DRA.
    assert sorted(offered) == ["snaffler-v1-w1", "snaffler-v1-w2"]
    w1 = offered["snaffler-v1-w1"]["attributes"]
    assert w1["numa"] == {"int": 1}
    assert w1["cores"] == {"int": 128}
    assert w1["type"] == {"string": "snaffler"}
    (only,) = node.slices()
    assert only["spec"]["driver"] == DRIVER
    assert only["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    (owner,) = only["metadata"]["ownerReferences"]
    node_uid = node.api.objects("nodes")[0]["metadata"]["uid"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Node", NODE, node_uid)
    # The health stream tells kubelet of every device, the Unhealthy one too.
    await node.kubelet.wait_health(DRIVER, NODE, "snaffler-v1-w3", "Unhealthy")
    assert node.kubelet.health(DRIVER)[(NODE, "snaffler-v1-w1")] == "Healthy"
    metrics = node.supervisor.metrics()
    assert sample(metrics, "widget_dra_plugin_registered") == 1
    assert sample(metrics, "widget_plugin_registered", resource="ska-sdp.org/snaffler-v1") == 1
    assert sample(metrics, "widget_devices", resource="ska-sdp.org/snaffler-v1",
                  health="Unhealthy") == 1  # fmt: skip


async def test_prepare_unprepare_idempotent_and_errors(node: Node) -> None:
    await node.kubelet.wait_registered(DRIVER, timeout=10)
    await eventually(node.offered)
    claim = node.claim("snaffler-v1-w1", "snaffler-v1-w2")
    first = await node.kubelet.prepare(DRIVER, [claim])
    uid = claim[2]
    prepared = first.claims[uid]
    assert prepared.error == ""
    assert sorted(d.device_name for d in prepared.devices) == ["snaffler-v1-w1", "snaffler-v1-w2"]
    cdi_ids = [i for d in prepared.devices for i in d.cdi_device_ids]
    assert cdi_ids == [f"{DRIVER}/claim={uid}-0"]
    spec = json.loads((node.cdi / f"widget-claim-{uid}.json").read_text())
    env = set(spec["devices"][0]["containerEdits"]["env"])
    assert "WIDGET_VISIBLE_DEVICES=/dev/w1,/dev/w2" in env
    assert "WIDGET_SNAFFLER_V1_VISIBLE_DEVICE_IDS=snaffler-v1-w1,snaffler-v1-w2" in env
    assert "SNAFFLER_MODE=fast" in env
    again = await node.kubelet.prepare(DRIVER, [claim])  # kubelet retries: same answer
    assert again.claims[uid] == prepared
    metrics = node.supervisor.metrics()
    assert sample(metrics, "widget_dra_prepared_claims", resource="ska-sdp.org/snaffler-v1") == 1
    assert sample(metrics, "widget_dra_prepare_total", result="success") == 2

    unknown = node.claim("snaffler-v1-w9")
    refused = (await node.kubelet.prepare(DRIVER, [unknown])).claims[unknown[2]]
    assert f"{NODE}/snaffler-v1-w9" in refused.error
    assert not (node.cdi / f"widget-claim-{unknown[2]}.json").exists(), "nothing half-written"
    missing = ("default", "nobody", "0000")
    gone = (await node.kubelet.prepare(DRIVER, [missing])).claims["0000"]
    assert "cannot read ResourceClaim default/nobody: 404 NotFound" in gone.error

    done = await node.kubelet.unprepare(DRIVER, [claim])
    assert done.claims[uid].error == ""
    assert not (node.cdi / f"widget-claim-{uid}.json").exists()
    again_done = await node.kubelet.unprepare(DRIVER, [claim])  # idempotent too
    assert again_done.claims[uid].error == ""


async def test_reload_updates_the_pool_and_splits_at_128(node: Node) -> None:
    await eventually(node.offered)
    many = "".join(f"- {{type: snaffler, model: v1, device: /dev/m{i:03d}}}\n" for i in range(300))
    node.config.write_text(CONFIG.replace("resources:\n", many + "resources:\n", 1))

    def three_of_generation_2() -> list[dict[str, Any]] | None:
        found = node.slices()
        fresh = len(found) == 3 and all(s["spec"]["pool"]["generation"] == 2 for s in found)
        return found if fresh else None

    slices = await eventually(three_of_generation_2, what="302 devices in 3 slices, generation 2")
    assert sorted(len(s["spec"]["devices"]) for s in slices) == [46, 128, 128]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {3}
    names = [d["name"] for s in slices for d in s["spec"]["devices"]]
    assert len(set(names)) == 302
    node.config.write_text(CONFIG)
    await eventually(lambda: len(node.slices()) == 1, what="back to one slice")
    assert node.slices()[0]["spec"]["pool"]["generation"] == 3


async def test_api_server_restart_and_expired_watch(node: Node) -> None:
    await eventually(node.offered)
    await node.api.stop()
    node.config.write_text(CONFIG.replace("health: Unhealthy", "health: Healthy"))
    await node.supervisor.wait_for_log("reloaded")
    await node.api.restart()  # the same port, the data kept (etcd's)
    await eventually(lambda: "snaffler-v1-w3" in node.offered(), timeout=20,
                     what="the reload published once the API server is back")  # fmt: skip
    node.api.compact()  # the watch must list again, and still follow changes
    for s in node.slices():  # someone deletes our slice: it is written back
        url = f"{node.api.url}/apis/resource.k8s.io/v1/resourceslices/{s['metadata']['name']}"
        assert (await asyncio.to_thread(http_get, url, method="DELETE")).status == 200
    await eventually(lambda: len(node.offered()) == 3, timeout=20, what="slices recreated")


async def test_readiness_says_why_slices_wait_while_the_api_server_is_down(node: Node) -> None:
    await eventually(node.offered)
    ready = node.supervisor.metrics_url + "/readyz"
    await eventually(lambda: http_get(ready).status == 200, thread=True, what="ready")
    await node.api.stop()
    node.config.write_text(CONFIG.replace("/dev/w2", "/dev/w4"))

    def not_ready() -> str | None:
        answer = http_get(ready)
        return answer.text if answer.status == 503 else None

    text = await eventually(not_ready, thread=True, timeout=20, what="/readyz: slices wait")
    assert "ska-sdp.org/snaffler-v1: DRA ResourceSlices not published: API server" in text
    await node.api.restart()
    await eventually(lambda: "snaffler-v1-w4" in node.offered(), timeout=20)
    await eventually(lambda: http_get(ready).status == 200, thread=True, what="ready again")


async def test_sigterm_removes_slices_and_sockets(node: Node) -> None:
    await node.kubelet.wait_registered(DRIVER, timeout=10)
    await eventually(node.slices)
    assert await node.supervisor.stop() == 0
    assert node.slices() == []
    assert not list((node.root / "plugins_registry").glob("*.sock"))
    await eventually(lambda: DRIVER not in node.kubelet.plugins(), what="deregistered")


async def test_a_restarted_kubelet_registers_the_plugin_again(node: Node) -> None:
    await node.kubelet.wait_registered(DRIVER, timeout=10)
    await node.kubelet.stop()
    restarted = DraPluginWatcher(node.root)  # kubelet finds the socket still in place
    await restarted.start()
    try:
        await restarted.wait_registered(DRIVER, timeout=10)
        claim = node.claim("snaffler-v1-w1")
        assert (await restarted.prepare(DRIVER, [claim])).claims[claim[2]].error == ""
    finally:
        await restarted.stop()
        node.kubelet = DraPluginWatcher(node.root)  # the fixture stops a started one
        await node.kubelet.start()
