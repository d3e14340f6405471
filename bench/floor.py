"""The Allocate floor: a bare grpc.aio DevicePlugin server that returns a fixed response.

Run as its own process (``python -m bench.floor SOCKET``), as the supervisor is, so
that the floor and our server are measured with the same client under the same
conditions. Whatever our Allocate costs beyond this is ours to explain.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc

READY = "floor ready"


def fixed_response() -> pb.AllocateResponse:
    """The same shape as ours for one device: four environment variables, no device nodes."""
    ids, paths = "bench-m0-bench0-0", "/dev/bench0-0"
    envs = {
        "WIDGET_VISIBLE_DEVICE_IDS": ids,
        "WIDGET_VISIBLE_DEVICES": paths,
        "WIDGET_BENCH_M0_VISIBLE_DEVICE_IDS": ids,
        "WIDGET_BENCH_M0_VISIBLE_DEVICES": paths,
    }
    return pb.AllocateResponse(container_responses=[pb.ContainerAllocateResponse(envs=envs)])


class FloorService(pb_grpc.DevicePluginServicer):
    """Allocate only; the other methods are never called by the benchmark."""

    def __init__(self) -> None:
        self._response = fixed_response()

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.DevicePluginOptions]
    ) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions()

    async def ListAndWatch(
        self,
        request: pb.Empty,
        context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse],
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        yield pb.ListAndWatchResponse()

    async def GetPreferredAllocation(
        self,
        request: pb.PreferredAllocationRequest,
        context: grpc.aio.ServicerContext[
            pb.PreferredAllocationRequest, pb.PreferredAllocationResponse
        ],
    ) -> pb.PreferredAllocationResponse:
        return pb.PreferredAllocationResponse()

    async def PreStartContainer(
        self,
        request: pb.PreStartContainerRequest,
        context: grpc.aio.ServicerContext[
            pb.PreStartContainerRequest, pb.PreStartContainerResponse
        ],
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()

    async def Allocate(
        self,
        request: pb.AllocateRequest,
        context: grpc.aio.ServicerContext[pb.AllocateRequest, pb.AllocateResponse],
    ) -> pb.AllocateResponse:
        return self._response


async def serve(socket_path: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_DevicePluginServicer_to_server(FloorService(), server)
    if not server.add_insecure_port(f"unix://{socket_path}"):
        raise SystemExit(f"cannot listen on {socket_path}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(READY, flush=True)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
