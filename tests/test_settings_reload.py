"""Every setting of a resource reloads for real: turned on, then off, through the stand-in.

The stand-in reads a plugin's options only when it registers, and drops a registration
whose predecessor's ListAndWatch stream ends after it, as kubelet does. So a setting
kubelet caches (preferred allocation) must make the resource register again with its
old stream ended first; every other setting must take effect without re-registering.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kubelet_standin import KubeletStandIn
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker.api import HEALTHY, UNHEALTHY
from tests.support import SupervisorProcess

pytestmark = pytest.mark.slow

NAME = "ska-sdp.org/snaffler-v1"
SHARED = NAME + ".shared"
# Kubelet's default order picks w0 and w1 (NUMA 0 and 1); `packed` picks one NUMA node.
DEVICES = [("w0", 0), ("w1", 1), ("w2", 0), ("w3", 1)]


@dataclass
class Scene:
    kubelet: KubeletStandIn
    supervisor: SupervisorProcess
    cdi_dir: Path

    def registrations(self, resource: str = NAME) -> int:
        return sum(1 for _, name in self.kubelet.registrations if name == resource)

    async def allocate(self, count: int = 1) -> pb.ContainerAllocateResponse:
        self.kubelet.release(NAME, list(self.kubelet.plugins[NAME].allocated))
        return await self.kubelet.allocate(NAME, count=count)

    async def devices_are(self, health: dict[str, str], resource: str = NAME) -> None:
        await self.kubelet.wait_for(
            lambda k: (
                (p := k.plugins.get(resource)) is not None and p.connected and p.devices == health
            )
        )


Check = Callable[[Scene], Awaitable[None]]


def config(settings: str = "", device_extra: str = "") -> str:
    lines = ["devices:"]
    for device, numa in DEVICES:
        extra = device_extra if device == "w0" else ""
        lines.append(f"- {{type: snaffler, model: v1, device: /dev/{device}, numa: {numa}{extra}}}")
    if settings:
        lines += ["resources:", f"- {{type: snaffler, model: v1, {settings}}}"]
    return "\n".join(lines) + "\n"


def all_health(health: str, ids: list[str] | None = None) -> dict[str, str]:
    return dict.fromkeys(ids or [f"snaffler-v1-{d}" for d, _ in DEVICES], health)


# -- what each setting looks like when on, and when off ------------------------------


async def packed_on(scene: Scene) -> None:
    await scene.supervisor.wait_for_log(
        rf"\[{NAME}\] options changed: preferred allocation on; re-registered"
    )
    await scene.kubelet.wait_for(
        lambda k: (
            k.plugins[NAME].options.get_preferred_allocation_available
            and k.plugins[NAME].connected
            and k.plugins[NAME].updates > 0
        )
    )
    await scene.allocate(2)
    assert sorted(scene.kubelet.plugins[NAME].allocated) in (
        ["snaffler-v1-w0", "snaffler-v1-w2"],
        ["snaffler-v1-w1", "snaffler-v1-w3"],
    ), "the packed policy chose the devices"


async def packed_off(scene: Scene) -> None:
    await scene.supervisor.wait_for_log(
        rf"\[{NAME}\] options changed: preferred allocation off; re-registered"
    )
    await scene.kubelet.wait_for(
        lambda k: (
            not k.plugins[NAME].options.get_preferred_allocation_available
            and k.plugins[NAME].connected
            and k.plugins[NAME].updates > 0
        )
    )
    await scene.allocate(2)
    assert sorted(scene.kubelet.plugins[NAME].allocated) == ["snaffler-v1-w0", "snaffler-v1-w1"]


async def replicas_on(scene: Scene) -> None:
    ids = [f"snaffler-v1-{d}::{k}" for d, _ in DEVICES for k in (1, 2, 3)]
    await scene.devices_are(all_health(HEALTHY, ids))


async def plain_devices(scene: Scene) -> None:
    await scene.devices_are(all_health(HEALTHY))


async def shared_on(scene: Scene) -> None:
    ids = [f"snaffler-v1-{d}::{k}" for d, _ in DEVICES for k in (1, 2)]
    await scene.devices_are(all_health(HEALTHY, ids), resource=SHARED)
    await scene.kubelet.wait_for(lambda k: not k.plugins[NAME].connected)


async def shared_off(scene: Scene) -> None:
    await plain_devices(scene)
    await scene.kubelet.wait_for(lambda k: not k.plugins[SHARED].connected)


async def failing_on(scene: Scene) -> None:
    await scene.devices_are(all_health(UNHEALTHY))


async def unhealthy_w0(scene: Scene) -> None:
    await scene.devices_are({**all_health(HEALTHY), "snaffler-v1-w0": UNHEALTHY})


async def faults_on(scene: Scene) -> None:
    await unhealthy_w0(scene)  # unhealthyAfter 0s: Unhealthy from the reload on
    await scene.supervisor.wait_for_log("device snaffler-v1-w0 is now Healthy", timeout=10)


async def numa_on(scene: Scene) -> None:
    # numa: 3 on w0 replaces its NUMA node 0: a device list change kubelet must see.
    await scene.kubelet.wait_for(lambda k: k.plugins[NAME].numa.get("snaffler-v1-w0") == [3])


async def numa_off(scene: Scene) -> None:
    await scene.kubelet.wait_for(lambda k: k.plugins[NAME].numa.get("snaffler-v1-w0") == [0])


def allocation_check(on: bool, test: Callable[[pb.ContainerAllocateResponse], bool]) -> Check:
    async def check(scene: Scene) -> None:
        response = await scene.allocate()
        assert test(response) == on, response

    return check


async def cdi_on(scene: Scene) -> None:
    await scene.supervisor.wait_for_log("wrote CDI spec")
    assert (scene.cdi_dir / "widget-ska-sdp.org_snaffler-v1.json").is_file()
    response = await scene.allocate()
    assert [d.name for d in response.cdi_devices] == [f"{NAME}=snaffler-v1-w0"]


async def cdi_off(scene: Scene) -> None:
    await scene.supervisor.wait_for_log("removed CDI spec")
    assert list(scene.cdi_dir.iterdir()) == []
    response = await scene.allocate()
    assert not response.cdi_devices


async def always_fails(scene: Scene) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await scene.allocate()
    assert refused.value.code() == grpc.StatusCode.INTERNAL


async def succeeds(scene: Scene) -> None:
    await scene.allocate()


async def slow(scene: Scene) -> None:
    started = time.monotonic()
    await scene.allocate()
    assert time.monotonic() - started >= 0.3


@dataclass(frozen=True)
class Setting:
    id: str
    on: str
    """The whole config with the setting on; `config()` is the same with it off."""
    when_on: Check
    when_off: Check
    registrations: tuple[int, int] = (0, 0)
    """New registrations of NAME after turning it on, and after turning it off."""


def env_has(r: pb.ContainerAllocateResponse) -> bool:
    return r.envs.get("SNAFFLER_MODE") == "fast"


def mounted(r: pb.ContainerAllocateResponse) -> bool:
    return [m.host_path for m in r.mounts] == ["/opt/snaffler"]


def annotated(r: pb.ContainerAllocateResponse) -> bool:
    return r.annotations.get("ska-sdp.org/mock") == "yes"


SETTINGS = [
    Setting(
        "preferredAllocation", config("preferredAllocation: packed"), packed_on, packed_off, (1, 1)
    ),
    Setting("replicas", config("replicas: 3"), replicas_on, plain_devices),
    Setting(
        "renameShared", config("replicas: 2, renameShared: true"), shared_on, shared_off, (0, 1)
    ),
    Setting("failing", config("failing: true"), failing_on, plain_devices),
    Setting(
        "envs",
        config("envs: {SNAFFLER_MODE: fast}"),
        allocation_check(True, env_has),
        allocation_check(False, env_has),
    ),
    Setting(
        "mounts",
        config("mounts: [{hostPath: /opt/snaffler, containerPath: /opt/s}]"),
        allocation_check(True, mounted),
        allocation_check(False, mounted),
    ),
    Setting(
        "annotations",
        config("annotations: {ska-sdp.org/mock: 'yes'}"),
        allocation_check(True, annotated),
        allocation_check(False, annotated),
    ),
    Setting("cdi", config("cdi: true"), cdi_on, cdi_off),
    Setting("allocate.failureRate", config("allocate: {failureRate: 1}"), always_fails, succeeds),
    Setting("allocate.delay", config("allocate: {delay: 300ms}"), slow, succeeds),
    Setting(
        "device.health", config(device_extra=", health: Unhealthy"), unhealthy_w0, plain_devices
    ),
    Setting(
        "device.faults",
        config(device_extra=", faults: {unhealthyAfter: 0s, recoverAfter: 1s}"),
        faults_on,
        plain_devices,
    ),
    Setting(
        "device.numa", config().replace("/dev/w0, numa: 0", "/dev/w0, numa: 3"), numa_on, numa_off
    ),
]


def write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.id for s in SETTINGS])
async def test_setting_reloads_on_and_off(
    setting: Setting, short_tmp: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    path = short_tmp / "config.yaml"
    cdi_dir = short_tmp / "cdi"
    write(path, config())
    supervisor = await SupervisorProcess(path, plugin_dir, "--cdi-dir", str(cdi_dir)).start()
    scene = Scene(kubelet, supervisor, cdi_dir)
    try:
        await kubelet.wait_registered([NAME])
        await plain_devices(scene)
        steps = zip((setting.on, config()), (setting.when_on, setting.when_off),
                    setting.registrations, strict=True)  # fmt: skip
        for text, check, registered in steps:
            before = scene.registrations()
            mark = len(supervisor.lines)
            write(path, text)
            await supervisor.wait_for_log(r"reloaded .*: ", after=mark)
            await check(scene)
            assert scene.registrations() == before + registered
            assert kubelet.superseded == [], "an old ListAndWatch stream outlived a registration"
        assert "device list changed" not in supervisor.output
    finally:
        assert await supervisor.stop() == 0
