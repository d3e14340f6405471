"""A kubelet stand-in: the device manager's side of deviceplugin/v1beta1 over real sockets.

Behaves as kubelet's device manager does (pkg/kubelet/cm/devicemanager): on start
it clears the plugin directory of sockets and serves `Registration` on
``kubelet.sock``; `Register` checks the version and resource name, dials the
plugin's endpoint (up to 10 s), calls GetDevicePluginOptions and only then answers;
afterwards it follows the plugin's ListAndWatch stream. It can also allocate like
kubelet does (pick healthy free devices, call Allocate) and restart like kubelet
does (delete the plugin sockets, recreate ``kubelet.sock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kubelet_standin.podresources import PodResourcesService
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker._proto import podresources_pb2_grpc as pr_grpc
from plugin_worker.api import API_VERSION, HEALTHY, KUBELET_SOCKET
from plugin_worker.k8s_names import extended_resource_name_problems

logger = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0  # kubelet's own dial timeout for a registering plugin
CHECKPOINT_FILE = "kubelet_internal_checkpoint"


@dataclass
class PluginEndpoint:
    """What the stand-in knows of one registered resource."""

    resource: str
    endpoint: str
    options: pb.DevicePluginOptions
    channel: grpc.aio.Channel
    stub: pb_grpc.DevicePluginAsyncStub
    registered_at: float
    devices: dict[str, str] = field(default_factory=dict)
    """Device ID -> health, as last received on ListAndWatch."""
    numa: dict[str, list[int]] = field(default_factory=dict)
    """Device ID -> NUMA nodes from its topology (only devices that have one)."""
    updates: int = 0
    """How many ListAndWatch lists were received."""
    allocated: set[str] = field(default_factory=set)
    watch: asyncio.Task[None] | None = None
    connected: bool = True
    streaming: bool = False
    """True while this registration's ListAndWatch stream is open."""

    @property
    def healthy(self) -> list[str]:
        return [i for i, h in self.devices.items() if h == HEALTHY]


class KubeletStandIn(pb_grpc.RegistrationServicer):
    """Registration server plus ListAndWatch/Allocate client for every plugin."""

    def __init__(
        self,
        plugin_dir: Path,
        *,
        on_change: Callable[[], None] | None = None,
        pod_resources_socket: Path | None = None,
    ) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.pod_resources_socket = (
            pod_resources_socket or self.plugin_dir.parent / "pod-resources" / KUBELET_SOCKET
        )
        self.assignments: dict[tuple[str, str, str], dict[str, list[str]]] = {}
        """(namespace, pod, container) -> resource -> device IDs, as pod-resources reports."""
        self.plugins: dict[str, PluginEndpoint] = {}
        self.registrations: list[tuple[float, str]] = []
        self.superseded: list[PluginEndpoint] = []
        """Registrations replaced by a newer one of their resource while their stream was
        still open: when such a stream ends, kubelet drops the newer registration."""
        self._server: grpc.aio.Server | None = None
        self._changed = asyncio.Condition()
        self._on_change = on_change

    @property
    def socket_path(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Clear the plugin dir of sockets (as kubelet does) and serve kubelet.sock."""
        self.plugin_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._remove_sockets()
        server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(self, server)
        pr_grpc.add_PodResourcesListerServicer_to_server(
            PodResourcesService(lambda: self.assignments, self._allocatable), server
        )
        self.pod_resources_socket.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        with contextlib.suppress(FileNotFoundError):
            self.pod_resources_socket.unlink()
        for path in (self.socket_path, self.pod_resources_socket):
            if not server.add_insecure_port(f"unix://{path}"):
                raise RuntimeError(f"cannot listen on {path}")
        await server.start()
        self._server = server
        logger.info("kubelet stand-in listening on %s", self.socket_path)

    async def stop(self) -> None:
        """Stop serving and disconnect from every plugin, like a dying kubelet."""
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        for plugin in [*self.plugins.values(), *self.superseded]:
            await self._disconnect(plugin)
        self.superseded.clear()
        for path in (self.socket_path, self.pod_resources_socket):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        await self._notify()

    async def restart(self) -> None:
        """What a kubelet restart looks like to plugins: sockets deleted, kubelet.sock anew."""
        await self.stop()
        self.plugins.clear()
        await self.start()

    def _remove_sockets(self) -> None:
        # kubelet removes everything but its checkpoint; the stand-in removes only
        # sockets, so that pointing it at a real directory cannot destroy data.
        for entry in os.scandir(self.plugin_dir):
            if entry.name == CHECKPOINT_FILE:
                continue
            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                os.unlink(entry.path)

    async def _disconnect(self, plugin: PluginEndpoint) -> None:
        plugin.connected = False
        if plugin.watch is not None and plugin.watch is not asyncio.current_task():
            plugin.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin.watch
        await plugin.channel.close()

    # -- Registration service ------------------------------------------------------

    async def Register(
        self,
        request: pb.RegisterRequest,
        context: grpc.aio.ServicerContext[pb.RegisterRequest, pb.Empty],
    ) -> pb.Empty:
        resource = request.resource_name
        if request.version != API_VERSION:
            await context.abort(
                grpc.StatusCode.UNKNOWN,
                f"requested device plugin version {request.version!r} is not supported; "
                f"kubelet supports {API_VERSION}",
            )
        problems = extended_resource_name_problems(resource)
        if problems:
            await context.abort(
                grpc.StatusCode.UNKNOWN, f"invalid resource name {resource!r}: {problems[0]}"
            )
        try:
            plugin = await self._connect(request)
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            await context.abort(
                grpc.StatusCode.UNKNOWN, f"failed to dial device plugin {request.endpoint}: {error}"
            )
        # As kubelet does, a new registration replaces the old one by name without
        # closing it; the old stream keeps running, and when it ends, kubelet
        # disconnects whatever is registered under the name then: this one.
        previous = self.plugins.get(resource)
        if previous is not None and previous.streaming:
            self.superseded.append(previous)
        self.plugins[resource] = plugin
        self.registrations.append((plugin.registered_at, resource))
        plugin.watch = asyncio.create_task(self._follow(plugin), name=f"standin:{resource}")
        logger.info("registered %s at %s", resource, request.endpoint)
        await self._notify()
        return pb.Empty()

    async def _connect(self, request: pb.RegisterRequest) -> PluginEndpoint:
        channel = grpc.aio.insecure_channel(f"unix://{self.plugin_dir / request.endpoint}")
        try:
            await asyncio.wait_for(channel.channel_ready(), DIAL_TIMEOUT)
            stub = pb_grpc.DevicePluginStub(channel)
            options = await stub.GetDevicePluginOptions(pb.Empty(), timeout=DIAL_TIMEOUT)
        except BaseException:
            await channel.close()
            raise
        return PluginEndpoint(
            resource=request.resource_name,
            endpoint=request.endpoint,
            options=options,
            channel=channel,
            stub=stub,
            registered_at=time.monotonic(),
        )

    async def _follow(self, plugin: PluginEndpoint) -> None:
        plugin.streaming = True
        try:
            async for response in plugin.stub.ListAndWatch(pb.Empty()):
                plugin.devices = {d.ID: d.health for d in response.devices}
                plugin.numa = {
                    d.ID: [n.ID for n in d.topology.nodes]
                    for d in response.devices
                    if d.HasField("topology")
                }
                plugin.updates += 1
                await self._notify()
        except grpc.aio.AioRpcError as error:
            logger.info("ListAndWatch of %s ended: %s", plugin.resource, error.code().name)
        finally:
            plugin.streaming = False
        # kubelet's runClient: the stream ended, so disconnect the client registered
        # under this resource name now, even if that is a newer registration.
        current = self.plugins.get(plugin.resource, plugin)
        if current is not plugin and current.connected:
            logger.warning(
                "an old ListAndWatch stream of %s ended after it registered again: "
                "kubelet drops the new registration", plugin.resource,
            )  # fmt: skip
        if plugin in self.superseded:
            self.superseded.remove(plugin)
        for endpoint in {id(plugin): plugin, id(current): current}.values():
            await self._disconnect(endpoint)
        await self._notify()

    # -- observation ---------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
        if self._on_change is not None:
            self._on_change()

    async def wait_for(
        self, predicate: Callable[[KubeletStandIn], bool], timeout: float = 10.0
    ) -> None:
        """Wait until `predicate(self)` holds after some change; TimeoutError otherwise."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def wait_registered(self, resources: Sequence[str], timeout: float = 10.0) -> None:
        """Wait until every resource is registered, connected and has sent its list."""
        wanted = set(resources)

        def ready(kubelet: KubeletStandIn) -> bool:
            return all(
                (p := kubelet.plugins.get(r)) is not None and p.connected and p.updates > 0
                for r in wanted
            )

        await self.wait_for(ready, timeout)

    # -- allocation ----------------------------------------------------------------

    def _allocatable(self) -> dict[str, list[str]]:
        return {name: sorted(p.devices) for name, p in self.plugins.items()}

    async def allocate(
        self,
        resource: str,
        *,
        count: int | None = None,
        device_ids: Sequence[str] | None = None,
        pod: str = "pod",
        namespace: str = "default",
        container: str = "main",
        timeout: float = 5.0,
    ) -> pb.ContainerAllocateResponse:
        """Allocate for one container, as kubelet does at pod admission.

        Without `device_ids`, picks `count` healthy free devices: by the plugin's
        GetPreferredAllocation when it offers one, else in kubelet's default order.
        """
        plugin = self.plugins[resource]
        if device_ids is None:
            device_ids = await self._choose(plugin, 1 if count is None else count, timeout)
        request = pb.AllocateRequest(
            container_requests=[pb.ContainerAllocateRequest(devices_ids=list(device_ids))]
        )
        response = await plugin.stub.Allocate(request, timeout=timeout)
        # A device has one holder: allocating it again (tests may name held devices
        # explicitly) moves it, as if the previous pod had ended.
        self.release(resource, device_ids)
        plugin.allocated.update(device_ids)
        held = self.assignments.setdefault((namespace, pod, container), {})
        held.setdefault(resource, []).extend(device_ids)
        return response.container_responses[0]

    async def _choose(self, plugin: PluginEndpoint, wanted: int, timeout: float) -> list[str]:
        free = [i for i in plugin.healthy if i not in plugin.allocated]
        if len(free) < wanted:
            raise RuntimeError(f"{plugin.resource}: {wanted} wanted, {len(free)} healthy and free")
        if not plugin.options.get_preferred_allocation_available:
            return free[:wanted]
        request = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=free, allocation_size=wanted
                )
            ]
        )
        response = await plugin.stub.GetPreferredAllocation(request, timeout=timeout)
        return list(response.container_responses[0].deviceIDs)

    def release(self, resource: str, device_ids: Sequence[str]) -> None:
        """Forget an allocation (the pod ended)."""
        self.plugins[resource].allocated.difference_update(device_ids)
        gone = set(device_ids)
        for key, held in list(self.assignments.items()):
            if resource in held:
                held[resource] = [i for i in held[resource] if i not in gone]
                if not held[resource]:
                    del held[resource]
            if not held:
                del self.assignments[key]
