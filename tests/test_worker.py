"""One PluginWorker in-process against the kubelet stand-in, over real unix sockets."""

from __future__ import annotations

import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from kubelet_standin import KubeletStandIn
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto.deviceplugin_pb2_grpc import RegistrationStub
from plugin_worker.api import Device, NullEvents, ResourceSpec, socket_name_for
from plugin_worker.worker import PluginWorker, SocketInUseError, WorkerError
from tests.support import eventually

NAME = "ska-sdp.org/snaffler-v1"
SPEC = ResourceSpec(
    name=NAME,
    devices=(Device("snaffler-v1-a", "/dev/a"), Device("snaffler-v1-null", "/dev/null")),
    env_prefix="WIDGET_SNAFFLER_V1",
)


@pytest.fixture
async def worker(plugin_dir: Path) -> AsyncIterator[PluginWorker]:
    """A started worker; request `kubelet` first so that it registers at once (without a
    supervisor, nothing tells the worker that kubelet.sock appeared later)."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    started = PluginWorker(SPEC, plugin_dir=plugin_dir, events=NullEvents())
    await started.start()
    yield started
    await started.stop(0)


async def test_registers_and_serves_every_rpc(
    kubelet: KubeletStandIn, worker: PluginWorker
) -> None:
    await kubelet.wait_registered([NAME])
    assert worker.registered
    assert kubelet.plugins[NAME].endpoint == "widget-ska-sdp.org_snaffler-v1.sock"
    stub = kubelet.plugins[NAME].stub
    response = await kubelet.allocate(NAME, device_ids=["snaffler-v1-null"])
    assert [(d.host_path, d.container_path, d.permissions) for d in response.devices] == [
        ("/dev/null", "/dev/null", "rw")
    ]
    preferred = await stub.GetPreferredAllocation(
        pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=["snaffler-v1-a", "snaffler-v1-null"],
                    must_include_deviceIDs=["snaffler-v1-null"],
                    allocation_size=1,
                )
            ]
        )
    )
    assert list(preferred.container_responses[0].deviceIDs) == ["snaffler-v1-null"]
    assert await stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["x"])) == (
        pb.PreStartContainerResponse()
    )


async def test_update_is_pushed_on_the_open_stream(
    kubelet: KubeletStandIn, worker: PluginWorker
) -> None:
    await kubelet.wait_registered([NAME])
    worker.update(ResourceSpec(NAME, (Device("snaffler-v1-b", "/dev/b"),), SPEC.env_prefix))
    await kubelet.wait_for(lambda k: k.plugins[NAME].devices == {"snaffler-v1-b": "Healthy"})
    assert kubelet.plugins[NAME].updates == 2


async def test_garbage_on_the_socket_does_not_hurt(
    kubelet: KubeletStandIn, worker: PluginWorker
) -> None:
    await kubelet.wait_registered([NAME])
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(str(worker.socket_path))
        raw.sendall(b"\x00\xff garbage " * 1000)
    await kubelet.allocate(NAME, count=1)


async def test_stale_socket_is_replaced(plugin_dir: Path) -> None:
    plugin_dir.mkdir(parents=True)
    stale = plugin_dir / socket_name_for(NAME, str(plugin_dir))
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening: connections are refused
    worker = PluginWorker(SPEC, plugin_dir=plugin_dir, events=NullEvents())
    await worker.start()
    try:
        assert stale.stat().st_mode & 0o777 == 0o600
    finally:
        await worker.stop(0)
    assert not stale.exists()


async def test_live_socket_of_another_process_is_not_taken(worker: PluginWorker) -> None:
    second = PluginWorker(SPEC, plugin_dir=worker.socket_path.parent, events=NullEvents())
    with pytest.raises(SocketInUseError, match="served by another process"):
        await second.start()
    assert worker.socket_path.exists()


async def test_a_non_socket_file_in_the_way_is_left_alone(plugin_dir: Path) -> None:
    plugin_dir.mkdir(parents=True)
    path = plugin_dir / socket_name_for(NAME, str(plugin_dir))
    path.write_text("precious")
    with pytest.raises(WorkerError, match="is not a socket"):
        await PluginWorker(SPEC, plugin_dir=plugin_dir, events=NullEvents()).start()
    assert path.read_text() == "precious"


def test_socket_names_fit_sun_path() -> None:
    assert socket_name_for(NAME, "/var/lib/kubelet/device-plugins") == (
        "widget-ska-sdp.org_snaffler-v1.sock"
    )
    deep = "/x" * 34  # too deep for the readable name, not for the digest
    name = socket_name_for(NAME, deep)
    assert len(f"{deep}/{name}") <= 107
    assert name != socket_name_for("ska-sdp.org/snaffler-v2", deep)


async def test_kubelet_rejecting_a_bad_version_is_a_clean_error(kubelet: KubeletStandIn) -> None:
    async with grpc.aio.insecure_channel(f"unix://{kubelet.socket_path}") as channel:
        from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc

        with pytest.raises(grpc.aio.AioRpcError, match="not supported"):
            await pb_grpc.RegistrationStub(channel).Register(
                pb.RegisterRequest(version="v1alpha", endpoint="x.sock", resource_name=NAME)
            )


async def test_changed_options_end_the_stream_then_register_again(
    kubelet: KubeletStandIn, worker: PluginWorker
) -> None:
    await kubelet.wait_registered([NAME])
    first = kubelet.plugins[NAME]
    assert not first.options.get_preferred_allocation_available
    assert worker.update(replace(SPEC, preferred_policy="packed")) == "preferred allocation on"
    await kubelet.wait_for(lambda k: k.plugins[NAME] is not first and k.plugins[NAME].updates > 0)
    assert kubelet.plugins[NAME].options.get_preferred_allocation_available
    assert kubelet.plugins[NAME].connected
    assert not first.streaming, "the old stream ended before the new registration"
    assert kubelet.superseded == []
    # A change kubelet does not cache (packed -> spread) is served without registering.
    registrations = len(kubelet.registrations)
    assert worker.update(replace(SPEC, preferred_policy="spread")) is None
    assert len(kubelet.registrations) == registrations


async def test_standin_drops_a_registration_whose_predecessor_stream_ends_later(
    kubelet: KubeletStandIn, worker: PluginWorker, plugin_dir: Path
) -> None:
    """kubelet's contract (devicemanager runClient, by resource name), which the test above
    relies on: registering again while the old stream is open is a latent failure."""
    await kubelet.wait_registered([NAME])
    other = PluginWorker(
        replace(SPEC, name="ska-sdp.org/other"), plugin_dir=plugin_dir, events=NullEvents()
    )
    await other.start()
    try:
        # NAME registered again, at another live endpoint, while its first stream is open.
        async with grpc.aio.insecure_channel(f"unix://{kubelet.socket_path}") as channel:
            await RegistrationStub(channel).Register(
                pb.RegisterRequest(
                    version="v1beta1", endpoint=other.socket_name, resource_name=NAME
                )
            )
        await kubelet.wait_for(lambda k: len(k.superseded) == 1 and k.plugins[NAME].updates > 0)
        newest = kubelet.plugins[NAME]
        await worker.stop(0)  # the first stream ends now, after the newer registration
        await kubelet.wait_for(lambda k: not newest.connected)
        assert kubelet.superseded == []
    finally:
        await other.stop(0)


# -- serving_problem: what readiness reports -------------------------------------------


async def test_serving_problem_is_none_while_serving_and_through_a_kubelet_restart(
    kubelet: KubeletStandIn, worker: PluginWorker
) -> None:
    await kubelet.wait_registered([NAME])
    assert worker.serving_problem is None
    first = kubelet.plugins[NAME].registered_at
    await kubelet.restart()  # our socket is deleted, kubelet.sock created anew
    assert not worker.socket_path.exists()
    assert worker.serving_problem is None, "alive and meant to serve: not a problem yet"
    worker.socket_removed()  # what the supervisor's watch of the plugin dir does
    worker.kubelet_restarted()
    problems: list[str | None] = []

    def registered_again() -> bool:
        problems.append(worker.serving_problem)  # sampled all through the recreation
        return NAME in kubelet.plugins and kubelet.plugins[NAME].registered_at > first

    await eventually(registered_again, every=0.001, what="registered again")
    assert set(problems) == {None}


class CrashOnRegistration(NullEvents):
    """A collaborator that fails once, as a bug in the supervisor's metrics would."""

    def __init__(self) -> None:
        self.crashed = False

    def registration_changed(self, resource: str, *, registered: bool) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("metrics bug")


async def test_serving_problem_names_a_crashed_registration_loop(
    kubelet: KubeletStandIn, plugin_dir: Path
) -> None:
    worker = PluginWorker(SPEC, plugin_dir=plugin_dir, events=CrashOnRegistration())
    await worker.start()
    try:
        problem = await eventually(lambda: worker.serving_problem, what="the loop to crash")
        assert problem.startswith("registration loop crashed (RuntimeError: metrics bug)"), problem
    finally:
        await worker.stop(0)


async def test_serving_problem_names_a_socket_that_cannot_be_served_again(
    kubelet: KubeletStandIn, plugin_dir: Path
) -> None:
    worker = PluginWorker(SPEC, plugin_dir=plugin_dir, events=NullEvents(), serve_grace=0)
    await worker.start()
    try:
        await kubelet.wait_registered([NAME])
        await kubelet.stop()
        shutil.rmtree(plugin_dir)
        worker.socket_removed()  # what the supervisor's watch of the plugin dir does
        problem = await eventually(lambda: worker.serving_problem, what="a serving problem")
        assert problem.startswith(f"socket {worker.socket_name} not served for "), problem
        assert f"could not listen in {plugin_dir}" in problem, problem
        plugin_dir.mkdir()
        worker.socket_removed()
        await eventually(lambda: worker.serving_problem is None and worker.socket_path.exists())
    finally:
        await worker.stop(0)
