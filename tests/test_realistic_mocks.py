"""Realistic mocks end to end: the real process, the kubelet stand-in, real sockets and files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import jsonschema
import pytest

from kubelet_standin import KubeletStandIn
from tests.support import SupervisorProcess, eventually, sample, sockets_in

pytestmark = pytest.mark.slow

SNAFFLER = "ska-sdp.org/snaffler-v1"
GIZMO = "ska-sdp.org/gizmo-mk2"
CDI_SCHEMA = json.loads((Path(__file__).parent / "data" / "cdi-spec.schema.json").read_text())


def config_file(directory: Path, text: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


async def start(config: Path, plugin_dir: Path, *extra: str) -> SupervisorProcess:
    return await SupervisorProcess(config, plugin_dir, *extra).start()


async def test_devices_in_use_per_pod(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    config = config_file(
        short_tmp,
        "devices:\n"
        + "".join(f"- {{type: snaffler, model: v1, device: /dev/w{i}}}\n" for i in range(3)),
    )
    supervisor = await start(config, plugin_dir, "--pod-resources-interval", "30")
    try:
        await kubelet.wait_registered([SNAFFLER])
        # None in use, once the first poll (at start, racing the registration) has answered.
        await eventually(
            lambda: sample(supervisor.metrics(), "widget_devices_in_use", resource=SNAFFLER) == 0,
            what="widget_devices_in_use 0 after the first pod-resources poll",
        )
        await kubelet.allocate(SNAFFLER, device_ids=["snaffler-v1-w0"], pod="train", container="c1")
        await kubelet.allocate(SNAFFLER, device_ids=["snaffler-v1-w2"], pod="infer", namespace="ml")
        # Refreshed right after Allocate, long before the 30 s poll.
        await eventually(
            lambda: sample(supervisor.metrics(), "widget_devices_in_use", resource=SNAFFLER) == 2
        )
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_devices_in_use", resource=SNAFFLER) == 2
        assert sample(metrics, "widget_pod_resources_up") == 1
        held = {"resource": SNAFFLER, "device": "snaffler-v1-w0", "namespace": "default",
                "pod": "train", "container": "c1"}  # fmt: skip
        assert sample(metrics, "widget_device_allocation", **held) == 1
        kubelet.release(SNAFFLER, ["snaffler-v1-w0"])
        await kubelet.allocate(
            SNAFFLER, device_ids=["snaffler-v1-w1"], pod="next"
        )  # triggers a poll
        await eventually(
            lambda: sample(supervisor.metrics(), "widget_device_allocation", **held) is None
        )
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_device_allocation", **held) is None  # freed: gone
        assert sample(metrics, "widget_devices_in_use", resource=SNAFFLER) == 2
    finally:
        assert await supervisor.stop() == 0


async def test_pod_resources_socket_absent_idles(short_tmp: Path, plugin_dir: Path) -> None:
    kubelet = KubeletStandIn(plugin_dir, pod_resources_socket=short_tmp / "elsewhere.sock")
    await kubelet.start()
    config = config_file(short_tmp, "devices:\n- {type: snaffler, model: v1, device: /dev/w}\n")
    supervisor = await start(
        config, plugin_dir, "--pod-resources-socket", str(short_tmp / "none.sock")
    )
    try:
        await kubelet.wait_registered([SNAFFLER])
        await supervisor.wait_for_log("pod-resources API unavailable .*none.sock does not exist")
        await kubelet.allocate(SNAFFLER, count=1)  # a refresh after Allocate; no second line
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_pod_resources_up") == 0
        # Unknown is not "none in use": no series rather than a misleading 0.
        assert sample(metrics, "widget_devices_in_use", resource=SNAFFLER) is None
        assert supervisor.output.count("pod-resources API unavailable") == 1
    finally:
        assert await supervisor.stop() == 0
        await kubelet.stop()


async def test_health_faults_reach_kubelet_and_heal_on_reload(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    faulty = (
        "resources:\n- {type: gizmo, model: mk2, failing: true}\n"
        "devices:\n"
        "- {type: snaffler, model: v1, device: /dev/w0, health: Unhealthy}\n"
        "- {type: snaffler, model: v1, device: /dev/w1, faults: {unhealthyAfter: 300ms, recoverAfter: 400ms}}\n"
        "- {type: snaffler, model: v1, device: /dev/w2, faults: {flapPeriod: 200ms}}\n"
        "- {type: gizmo, model: mk2, device: /dev/g0}\n"
    )
    config = config_file(short_tmp, faulty)
    supervisor = await start(config, plugin_dir)
    try:
        await kubelet.wait_registered([SNAFFLER, GIZMO])
        assert kubelet.plugins[GIZMO].devices == {"gizmo-mk2-g0": "Unhealthy"}
        assert kubelet.plugins[SNAFFLER].devices["snaffler-v1-w0"] == "Unhealthy"

        def health_of(device: str, health: str) -> Callable[[KubeletStandIn], bool]:
            return lambda k: k.plugins[SNAFFLER].devices.get(device) == health

        await kubelet.wait_for(health_of("snaffler-v1-w1", "Unhealthy"), timeout=5)
        await kubelet.wait_for(health_of("snaffler-v1-w1", "Healthy"), timeout=5)
        for state in ("Unhealthy", "Healthy", "Unhealthy", "Healthy"):  # flapping
            await kubelet.wait_for(health_of("snaffler-v1-w2", state), timeout=5)
        await supervisor.wait_for_log(r"device snaffler-v1-w1 is now Unhealthy")
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_devices", resource=GIZMO, health="Unhealthy") == 1
        assert sample(metrics, "widget_devices", resource=GIZMO, health="Healthy") == 0

        config.write_text(faulty.replace(", failing: true", "").replace(", health: Unhealthy", ""))
        await kubelet.wait_for(
            lambda k: (
                k.plugins[GIZMO].devices == {"gizmo-mk2-g0": "Healthy"}
                and k.plugins[SNAFFLER].devices["snaffler-v1-w0"] == "Healthy"
            )
        )
        assert sample(supervisor.metrics(), "widget_devices", resource=GIZMO, health="Healthy") == 1
    finally:
        assert await supervisor.stop() == 0


async def test_shared_devices_map_back_to_one_path(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    config = config_file(
        short_tmp,
        "resources:\n- {type: snaffler, model: v1, replicas: 3, renameShared: true}\n"
        "devices:\n- {type: snaffler, model: v1, device: /dev/w0}\n"
        "- {type: snaffler, model: v1, device: /dev/w1}\n",
    )
    shared = SNAFFLER + ".shared"
    supervisor = await start(config, plugin_dir)
    try:
        await kubelet.wait_registered([shared])
        assert len(kubelet.plugins[shared].devices) == 6
        response = await kubelet.allocate(
            shared, device_ids=["snaffler-v1-w0::1", "snaffler-v1-w0::3", "snaffler-v1-w1::2"]
        )
        assert response.envs["WIDGET_VISIBLE_DEVICES"] == "/dev/w0,/dev/w1"
        assert response.envs["WIDGET_VISIBLE_DEVICE_IDS"] == (
            "snaffler-v1-w0::1,snaffler-v1-w0::3,snaffler-v1-w1::2"
        )
    finally:
        assert await supervisor.stop() == 0


async def test_topology_and_packed_preferred_allocation(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn, examples: Path
) -> None:
    config = config_file(short_tmp, (examples / "topology.yml").read_text())
    supervisor = await start(config, plugin_dir)
    try:
        await kubelet.wait_registered([SNAFFLER, GIZMO])
        assert kubelet.plugins[SNAFFLER].options.get_preferred_allocation_available
        assert kubelet.plugins[SNAFFLER].numa["snaffler-v1-wibble0"] == [0]
        assert kubelet.plugins[SNAFFLER].numa["snaffler-v1-wibble3"] == [1]
        packed = await kubelet.allocate(SNAFFLER, count=2)  # asks GetPreferredAllocation first
        assert packed.envs["WIDGET_VISIBLE_DEVICES"] == "/dev/wibble1,/dev/wibble2"  # both NUMA 1
        spread = await kubelet.allocate(GIZMO, count=2)
        assert spread.envs["WIDGET_VISIBLE_DEVICES"] == "/dev/gizmo0,/dev/gizmo2"  # NUMA 0 and 1
    finally:
        assert await supervisor.stop() == 0


async def test_container_edits_and_cdi(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn, examples: Path
) -> None:
    config = config_file(short_tmp, (examples / "container-edits.yml").read_text())
    cdi_dir = short_tmp / "cdi"
    resource = "ska-sdp.org/doohickey-a100"
    supervisor = await start(config, plugin_dir, "--cdi-dir", str(cdi_dir))
    try:
        await kubelet.wait_registered([resource])
        response = await kubelet.allocate(
            resource, device_ids=["doohickey-a100-null", "doohickey-a100-doohickey1"]
        )
        assert response.envs["DOOHICKEY_MODE"] == "simulation"
        assert [(m.host_path, m.container_path, m.read_only) for m in response.mounts] == [
            ("/etc/os-release", "/etc/doohickey/host-os-release", True)
        ]
        assert dict(response.annotations) == {"ska-sdp.org/mock-device": "true"}
        assert [d.host_path for d in response.devices] == ["/dev/null"]  # the only real node
        assert [c.name for c in response.cdi_devices] == [
            "ska-sdp.org/doohickey-a100=doohickey-a100-null",
            "ska-sdp.org/doohickey-a100=doohickey-a100-doohickey1",
        ]
        (spec_file,) = cdi_dir.glob("*.json")
        document = json.loads(spec_file.read_text())
        jsonschema.validate(document, CDI_SCHEMA)
        assert spec_file.stat().st_mode & 0o777 == 0o644
        names = {d["name"] for d in document["devices"]}
        assert {c.name.split("=", 1)[1] for c in response.cdi_devices} <= names
        nodes = [n for d in document["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
        assert nodes == [{"path": "/dev/null", "permissions": "rw"}]

        config.write_text("devices:\n- {type: snaffler, model: v1, device: /dev/w}\n")
        await kubelet.wait_registered([SNAFFLER])
        await kubelet.wait_for(lambda k: not k.plugins[resource].connected)
        assert list(cdi_dir.glob("*.json")) == []  # removed with its resource
    finally:
        assert await supervisor.stop() == 0


def test_cdi_schema_rejects_what_a_runtime_would() -> None:
    good = {
        "cdiVersion": "0.6.0",
        "kind": "a.org/b",
        "devices": [{"name": "d", "containerEdits": {}}],
    }
    jsonschema.validate(good, CDI_SCHEMA)
    for bad in (
        {**good, "kind": "nodomain"},
        {**good, "devices": [{"name": "-d", "containerEdits": {}}]},
        {**good, "devices": [{"name": "d"}]},
        {
            **good,
            "devices": [{"name": "d", "containerEdits": {"deviceNodes": [{"permissions": "rw"}]}}],
        },
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, CDI_SCHEMA)


async def test_admission_faults(short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn) -> None:
    config = config_file(
        short_tmp,
        "resources:\n"
        "- {type: snaffler, model: v1, allocate: {delay: 300ms}}\n"
        "- {type: gizmo, model: mk2, allocate: {failureRate: 1}}\n"
        "devices:\n- {type: snaffler, model: v1, device: /dev/w}\n"
        "- {type: gizmo, model: mk2, device: /dev/g}\n",
    )
    supervisor = await start(config, plugin_dir)
    try:
        await kubelet.wait_registered([SNAFFLER, GIZMO])
        started = time.monotonic()
        await kubelet.allocate(SNAFFLER, count=1)
        assert time.monotonic() - started >= 0.3
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await kubelet.allocate(GIZMO, count=1)
        assert refused.value.code() == grpc.StatusCode.INTERNAL
        assert "injected allocation failure" in (refused.value.details() or "")
        metrics = supervisor.metrics()
        assert (
            sample(
                metrics, "widget_allocation_errors_total", resource=GIZMO, reason="injected_failure"
            )
            == 1
        )
        assert (
            sample(
                metrics, "widget_allocation_errors_total", resource=GIZMO, reason="unknown_device"
            )
            == 0
        )
        slow = sample(metrics, "widget_allocate_duration_seconds_sum", resource=SNAFFLER)
        assert slow is not None
        assert slow >= 0.3
    finally:
        assert await supervisor.stop() == 0


async def test_seeded_failure_rate_is_repeatable(short_tmp: Path) -> None:
    outcomes = []
    for run in range(2):
        plugin_dir = short_tmp / f"dp{run}"
        kubelet = KubeletStandIn(plugin_dir)
        await kubelet.start()
        config = config_file(
            short_tmp,
            "resources:\n- {type: gizmo, model: mk2, allocate: {failureRate: 0.5, seed: 7}}\n"
            "devices:\n- {type: gizmo, model: mk2, device: /dev/g}\n",
        )
        supervisor = await start(config, plugin_dir)
        try:
            await kubelet.wait_registered([GIZMO])
            seen = []
            for _ in range(12):
                try:
                    await kubelet.allocate(GIZMO, device_ids=["gizmo-mk2-g"])
                    seen.append(True)
                except grpc.aio.AioRpcError:
                    seen.append(False)
            outcomes.append(seen)
        finally:
            await supervisor.stop()
            await kubelet.stop()
    assert outcomes[0] == outcomes[1]
    assert True in outcomes[0]
    assert False in outcomes[0]


async def test_node_name_selects_the_devices(
    short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn, examples: Path
) -> None:
    config = config_file(short_tmp, (examples / "per-node.yml").read_text())
    supervisor = await start(config, plugin_dir, "--node-name", "gpu-node-3")
    try:
        await kubelet.wait_registered([SNAFFLER, GIZMO])
        assert len(sockets_in(plugin_dir)) == 3
    finally:
        assert await supervisor.stop() == 0
