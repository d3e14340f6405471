"""Who holds which device: kubelet's pod-resources API (v1 `List`), polled and on demand.

kubelet knows which pod and container each allocated device ID went to; plugins
do not. The monitor asks kubelet every `interval` seconds, and shortly after every
Allocate, and keeps the answer for the metrics collector. Without the socket (or
with kubelet not answering) it idles: one log line, `widget_pod_resources_up 0`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import grpc

from plugin_worker._proto import podresources_pb2 as pr
from plugin_worker._proto import podresources_pb2_grpc as pr_grpc

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_INTERVAL = 10.0
AFTER_ALLOCATE = 0.2
"""kubelet records an allocation right after Allocate returns; ask a moment later."""
CALL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Holder:
    resource: str
    device: str
    namespace: str
    pod: str
    container: str


class PodResourcesMonitor:
    """Keeps `holders` current for the resources `ours()` names."""

    def __init__(self, socket: Path, interval: float, ours: Callable[[], Collection[str]]) -> None:
        self.socket = socket
        self.interval = interval
        self.available = False
        self.holders: tuple[Holder, ...] = ()
        self._ours = ours
        self._wake = asyncio.Event()
        self._pending: asyncio.TimerHandle | None = None
        self._channel: grpc.aio.Channel | None = None
        self._reported: str | None = None

    def allocated(self) -> None:
        """An Allocate succeeded: refresh soon (coalescing bursts)."""
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(AFTER_ALLOCATE, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._wake.set()

    async def run(self) -> None:
        """Poll until cancelled."""
        try:
            while True:
                self._wake.clear()
                await self.refresh()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:
            if self._pending is not None:
                self._pending.cancel()
            if self._channel is not None:
                await self._channel.close()

    async def refresh(self) -> None:
        try:
            present = self.socket.exists()
        except OSError as error:  # e.g. no search permission on the directory
            self._unavailable(f"cannot look at {self.socket}: {error.strerror}")
            return
        if not present:
            self._unavailable(f"{self.socket} does not exist")
            return
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(f"unix://{self.socket}")
        stub = pr_grpc.PodResourcesListerStub(self._channel)
        try:
            response = await stub.List(pr.ListPodResourcesRequest(), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            self._unavailable(f"List failed: {error.code().name} {error.details()}")
            return
        ours = set(self._ours())
        self.holders = tuple(
            Holder(d.resource_name, device, pod.namespace, pod.name, container.name)
            for pod in response.pod_resources
            for container in pod.containers
            for d in container.devices
            if d.resource_name in ours
            for device in d.device_ids
        )
        self.available = True
        if self._reported is not None:
            logger.info("pod-resources API at %s answers again", self.socket)
            self._reported = None

    def _unavailable(self, why: str) -> None:
        self.available = False
        self.holders = ()
        if self._reported is None:
            logger.warning(
                "pod-resources API unavailable (%s); devices in use are not reported "
                "until it answers",
                why,
            )
        self._reported = why
