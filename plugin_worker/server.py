"""The DevicePlugin gRPC service of one resource: translation between gRPC and `Inventory`.

Owns request/response mapping and status codes. Owns no sockets and no lifecycle
(`worker` does), and no allocation rules (`inventory` does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker.api import Device, WorkerEvents
from plugin_worker.inventory import AllocationError, Inventory

logger = logging.getLogger(__name__)


def device_message(device: Device) -> pb.Device:
    return pb.Device(ID=device.id, health=device.health)


def plugin_options() -> pb.DevicePluginOptions:
    # GetPreferredAllocation is served, but only kubelet's own default choice would
    # come out of it, so kubelet is not asked to spend a round trip on it.
    return pb.DevicePluginOptions(
        pre_start_required=False, get_preferred_allocation_available=False
    )


class DevicePluginService(pb_grpc.DevicePluginServicer):
    """Serves one resource's inventory to kubelet."""

    def __init__(self, inventory: Inventory, events: WorkerEvents) -> None:
        self._inventory = inventory
        self._events = events

    @property
    def _resource(self) -> str:
        return self._inventory.spec.name

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.DevicePluginOptions]
    ) -> pb.DevicePluginOptions:
        return plugin_options()

    async def ListAndWatch(
        self,
        request: pb.Empty,
        context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse],
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        logger.info("[%s] kubelet opened ListAndWatch", self._resource)
        try:
            async for devices in self._inventory.watch():
                logger.debug("[%s] sending %d devices", self._resource, len(devices))
                yield pb.ListAndWatchResponse(devices=[device_message(d) for d in devices])
        finally:
            logger.info("[%s] ListAndWatch stream closed", self._resource)

    async def Allocate(
        self,
        request: pb.AllocateRequest,
        context: grpc.aio.ServicerContext[pb.AllocateRequest, pb.AllocateResponse],
    ) -> pb.AllocateResponse:
        started = time.perf_counter()
        response = pb.AllocateResponse()
        handed_out = 0
        try:
            for container in request.container_requests:
                allocation = self._inventory.allocate(container.devices_ids)
                response.container_responses.append(
                    pb.ContainerAllocateResponse(
                        envs=allocation.envs,
                        devices=[
                            pb.DeviceSpec(container_path=p, host_path=p, permissions="rw")
                            for p in allocation.device_nodes
                        ],
                    )
                )
                handed_out += len(container.devices_ids)
        except AllocationError as error:
            self._events.allocation_failed(
                self._resource, reason=error.reason, seconds=time.perf_counter() - started
            )
            logger.warning("[%s] refused Allocate: %s", self._resource, error)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        self._events.allocated(
            self._resource,
            containers=len(request.container_requests),
            devices=handed_out,
            seconds=time.perf_counter() - started,
        )
        return response

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
