"""The DevicePlugin gRPC service of one resource: translation between gRPC and `Inventory`.

Owns request/response mapping and status codes. Owns no sockets and no lifecycle
(`worker` does), and no allocation rules (`inventory` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator

import grpc

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker.api import Device, ResourceSpec, WorkerEvents
from plugin_worker.inventory import (
    DEVICE_PERMISSIONS,
    AllocationError,
    ContainerAllocation,
    Inventory,
)

logger = logging.getLogger(__name__)


def device_message(device: Device) -> pb.Device:
    if device.numa is None:
        return pb.Device(ID=device.id, health=device.health)
    topology = pb.TopologyInfo(nodes=[pb.NUMANode(ID=device.numa)])
    return pb.Device(ID=device.id, health=device.health, topology=topology)


def plugin_options(spec: ResourceSpec) -> pb.DevicePluginOptions:
    # Without a policy only kubelet's own default choice would come out of
    # GetPreferredAllocation, so kubelet is not asked to spend a round trip on it.
    return pb.DevicePluginOptions(
        pre_start_required=False,
        get_preferred_allocation_available=spec.preferred_policy != "none",
    )


_OPTION_NAMES = {
    "pre_start_required": "pre-start",
    "get_preferred_allocation_available": "preferred allocation",
}


def options_change(before: pb.DevicePluginOptions, after: pb.DevicePluginOptions) -> str | None:
    """How the options kubelet caches changed, in words ("preferred allocation on"), or None."""
    changed = [
        f"{words} {'on' if getattr(after, field) else 'off'}"
        for field, words in _OPTION_NAMES.items()
        if getattr(before, field) != getattr(after, field)
    ]
    return ", ".join(changed) or None


def container_response(allocation: ContainerAllocation) -> pb.ContainerAllocateResponse:
    # Only non-empty fields are passed: this runs on every Allocate.
    response = pb.ContainerAllocateResponse(envs=allocation.envs)
    if allocation.device_nodes:
        response.devices.extend(
            pb.DeviceSpec(container_path=p, host_path=p, permissions=DEVICE_PERMISSIONS)
            for p in allocation.device_nodes
        )
    if allocation.mounts:
        response.mounts.extend(
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in allocation.mounts
        )
    if allocation.annotations:
        response.annotations.update(allocation.annotations)
    if allocation.cdi_devices:
        response.cdi_devices.extend(pb.CDIDevice(name=n) for n in allocation.cdi_devices)
    return response


class InjectedFailureError(Exception):
    reason = "injected_failure"


class DevicePluginService(pb_grpc.DevicePluginServicer):
    """Serves one resource's inventory to kubelet."""

    def __init__(self, inventory: Inventory, events: WorkerEvents) -> None:
        self._inventory = inventory
        self._events = events
        self._faults = inventory.spec.allocate_faults
        self._random = random.Random(self._faults.seed)
        self._message_cache: dict[Device, pb.Device] = {}
        self._allocating = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Return once no Allocate is being served."""
        await self._idle.wait()

    def _messages(self, devices: tuple[Device, ...]) -> list[pb.Device]:
        # Lists are re-sent whole on every change; unchanged devices keep their message
        # (Device is a frozen value), so a one-device change to 10,000 builds one.
        cache = self._message_cache
        fresh = {d: cache.get(d) or device_message(d) for d in devices}
        self._message_cache = fresh
        return list(fresh.values())

    @property
    def _resource(self) -> str:
        return self._inventory.spec.name

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.DevicePluginOptions]
    ) -> pb.DevicePluginOptions:
        return plugin_options(self._inventory.spec)

    async def ListAndWatch(
        self,
        request: pb.Empty,
        context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse],
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        logger.info("[%s] kubelet opened ListAndWatch", self._resource)
        # aclosing: however the stream ends (kubelet gone, cancelled mid-send), the watch
        # ends with it, so that `Inventory.watches_ended` never waits for a dead stream.
        try:
            async with contextlib.aclosing(self._inventory.watch()) as lists:
                async for devices in lists:
                    logger.debug("[%s] sending %d devices", self._resource, len(devices))
                    yield pb.ListAndWatchResponse(devices=self._messages(devices))
        finally:
            logger.info("[%s] ListAndWatch stream closed", self._resource)

    async def Allocate(
        self,
        request: pb.AllocateRequest,
        context: grpc.aio.ServicerContext[pb.AllocateRequest, pb.AllocateResponse],
    ) -> pb.AllocateResponse:
        self._allocating += 1
        self._idle.clear()
        try:
            return await self._allocate(request, context)
        finally:
            self._allocating -= 1
            if not self._allocating:
                self._idle.set()

    async def _allocate(
        self,
        request: pb.AllocateRequest,
        context: grpc.aio.ServicerContext[pb.AllocateRequest, pb.AllocateResponse],
    ) -> pb.AllocateResponse:
        started = time.perf_counter()
        response = pb.AllocateResponse()
        handed_out = 0
        try:
            await self._admission_faults()
            for container in request.container_requests:
                allocation = self._inventory.allocate(container.devices_ids)
                response.container_responses.append(container_response(allocation))
                handed_out += len(container.devices_ids)
        except (AllocationError, InjectedFailureError) as error:
            self._events.allocation_failed(
                self._resource, reason=error.reason, seconds=time.perf_counter() - started
            )
            logger.warning("[%s] refused Allocate: %s", self._resource, error)
            code = (
                grpc.StatusCode.INTERNAL
                if isinstance(error, InjectedFailureError)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            await context.abort(code, str(error))
        self._events.allocated(
            self._resource,
            containers=len(request.container_requests),
            devices=handed_out,
            seconds=time.perf_counter() - started,
        )
        return response

    async def _admission_faults(self) -> None:
        faults = self._inventory.spec.allocate_faults
        if faults != self._faults:  # reloaded with other faults: their seed starts anew
            self._faults = faults
            self._random = random.Random(faults.seed)
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.failure_rate and self._random.random() < faults.failure_rate:
            raise InjectedFailureError(
                f"injected allocation failure for {self._resource} "
                f"(allocate.failureRate is {faults.failure_rate})"
            )

    async def GetPreferredAllocation(
        self,
        request: pb.PreferredAllocationRequest,
        context: grpc.aio.ServicerContext[
            pb.PreferredAllocationRequest, pb.PreferredAllocationResponse
        ],
    ) -> pb.PreferredAllocationResponse:
        response = pb.PreferredAllocationResponse()
        try:
            for container in request.container_requests:
                chosen = self._inventory.preferred(
                    container.available_deviceIDs,
                    container.must_include_deviceIDs,
                    container.allocation_size,
                )
                response.container_responses.append(
                    pb.ContainerPreferredAllocationResponse(deviceIDs=chosen)
                )
        except AllocationError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return response

    async def PreStartContainer(
        self,
        request: pb.PreStartContainerRequest,
        context: grpc.aio.ServicerContext[
            pb.PreStartContainerRequest, pb.PreStartContainerResponse
        ],
    ) -> pb.PreStartContainerResponse:
        # Mock devices need no reset before a container starts.
        return pb.PreStartContainerResponse()
