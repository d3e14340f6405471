"""One DRA driver on one node, running: the mock driver, its kubelet plugin and its pool.

Wires `MockDriver` (what devices there are, their health, prepare) to `KubeletPlugin`
(kubelet's gRPC side) and `SlicePublisher` (the API server's side), and reads claims
through the Kubernetes client. The supervisor's DRA backend makes one while the config
has DRA resources.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node

from dra_driver.driver import ClaimError, DraEvents, MockDriver
from dra_driver.kube import API_ERRORS, ResourceClaim, describe, plain
from dra_driver.kubelet_plugin import KubeletPlugin
from dra_driver.publisher import SlicePublisher, WriteResult
from plugin_worker.api import Device, ResourceSpec

OWNER_TIMEOUT = 5.0
"""Seconds to learn the Node's UID (the slices' owner) before publishing without it."""


class NodeDriver:
    def __init__(
        self,
        *,
        driver: str,
        node: str,
        kubelet_root: Path,
        cdi_dir: Path,
        client: AsyncClient,
        events: DraEvents | None = None,
        on_write: WriteResult | None = None,
    ) -> None:
        self.name, self.client = driver, client
        self.driver = MockDriver(
            driver=driver, node=node, cdi_dir=cdi_dir, read_claim=self._read_claim,
            events=events, on_change=self._republish,
        )  # fmt: skip
        self.plugin = KubeletPlugin(driver, kubelet_root, self.driver)
        self.publisher = SlicePublisher(client, node=node, driver=driver, on_write=on_write)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve the kubelet plugin, and start publishing (in the background)."""
        await self.plugin.start()
        self._task = asyncio.create_task(self._publish(), name=f"dra-publisher {self.name}")

    def update(self, specs: Sequence[ResourceSpec]) -> None:
        self.driver.update(specs)

    def specs(self) -> list[ResourceSpec]:
        return self.driver.specs()

    def devices(self, resource: str) -> tuple[Device, ...]:
        return self.driver.devices(resource)

    async def stop(self) -> None:
        """Stop the plugin, then delete the pool's slices."""
        await self.plugin.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.publisher.delete_all()
        self.driver.close()

    def _republish(self) -> None:
        self.publisher.publish(self.driver.offered)  # computed once per write, not per change

    async def _read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        try:
            return plain(await self.client.get(ResourceClaim, name, namespace=namespace))
        except API_ERRORS as error:
            raise ClaimError(describe(error)) from error

    async def _publish(self) -> None:
        """Learn the Node's UID (so that the slices go with the node), then keep the
        slices in step until cancelled."""
        publisher = self.publisher
        with contextlib.suppress(*API_ERRORS, TimeoutError):
            async with asyncio.timeout(OWNER_TIMEOUT):
                node = await self.client.get(Node, publisher.node)
                if node.metadata is not None and node.metadata.uid:
                    publisher.owner = {"name": publisher.node, "uid": node.metadata.uid}
        await publisher.run()
