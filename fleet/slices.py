"""ResourceSlices of a simulated fleet: one pool per simulated node, for its DRA resources.

The same pools a node agent would publish (`dra_driver.publisher.Pool`: one per node,
named after it, 128-device slices, generations kept right, owned by the Node), but for
thousands of nodes through one watch: the driver's slices are watched once, each event
handed to its node's pool, and pools that differ from what is wanted are synced by a few
workers through the fleet's rate limit. Only pools of nodes this fleet simulates are
touched: a real node's agent may publish slices under the same driver name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lightkube import AsyncClient

from dra_driver.kube import (
    API_ERRORS,
    CONFLICT,
    Backoff,
    ResourceSlice,
    describe,
    follow,
    plain,
    status_code,
)
from dra_driver.publisher import Desired, Pool, WriteResult
from fleet.queue import CoalescingQueue

logger = logging.getLogger(__name__)

WORKERS = 8


class FleetSlices:
    def __init__(
        self,
        client: AsyncClient,
        *,
        driver: str,
        before_write: Callable[[], Awaitable[None]] | None = None,
        on_write: WriteResult | None = None,
    ) -> None:
        self._client, self.driver = client, driver
        self._before_write, self._on_write = before_write, on_write
        self.pools: dict[str, Pool] = {}
        self._wanted: dict[str, Desired] = {}
        self._seen: dict[str, dict[str, dict[str, Any]]] = {}
        """Slices listed or watched for pools not (yet) ours: a node seen later adopts them."""
        self._queue = CoalescingQueue()
        self._listed = asyncio.Event()

    def want(self, node: str, desired: Desired, owner: Mapping[str, str] | None) -> None:
        """Node `node`'s pool should offer `desired` (empty: no slices)."""
        pool = self.pools.get(node)
        if pool is None:
            pool = self.pools[node] = Pool(
                self._client, node=node, driver=self.driver, owner=owner,
                on_write=self._on_write, before_write=self._before_write,
            )  # fmt: skip
            pool.cache = self._seen.pop(node, {})
        pool.owner = owner
        if self._wanted.get(node) != desired or node not in self._wanted:
            self._wanted[node] = desired
            self._enqueue(node)

    async def forget(self, node: str) -> None:
        """The node is gone: delete its pool's slices."""
        self._wanted.pop(node, None)
        self._queue.discard(node)
        pool = self.pools.pop(node, None)
        if pool is not None:
            await pool.delete_all()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch(), name="fleet-slices-watch")
            for i in range(WORKERS):
                group.create_task(self._worker(), name=f"fleet-slices-{i}")

    def _enqueue(self, node: str) -> None:
        self._queue.put(node)

    async def _watch(self) -> None:
        await follow(
            self._client, ResourceSlice, fields={"spec.driver": self.driver},
            on_list=self._listed_now, on_error=self._lost,
            on_event=lambda kind, obj: self._observe(kind, plain(obj)),
        )  # fmt: skip

    def _listed_now(self, objects: list[Any]) -> None:
        by_pool: dict[str, dict[str, dict[str, Any]]] = {}
        for obj in objects:
            document = plain(obj)
            node = _pool_of(document)
            if node is not None:
                by_pool.setdefault(node, {})[document["metadata"]["name"]] = document
        for node, pool in self.pools.items():
            pool.cache = by_pool.pop(node, {})
            self._enqueue(node)
        self._seen = by_pool
        self._listed.set()

    def _lost(self, error: BaseException) -> None:
        logger.warning("ResourceSlices of simulated nodes: %s; retrying", describe(error))

    def _observe(self, kind: str, document: dict[str, Any]) -> None:
        node = _pool_of(document)
        if node is None:
            return
        pool = self.pools.get(node)
        if pool is None:
            seen = self._seen.setdefault(node, {})
            if kind == "DELETED":
                seen.pop(document["metadata"]["name"], None)
            else:
                seen[document["metadata"]["name"]] = document
            return
        if pool.observe(kind, document):
            self._enqueue(node)

    async def _worker(self) -> None:
        await self._listed.wait()
        backoff = Backoff()
        while True:
            node = await self._queue.take()
            pool, desired = self.pools.get(node), self._wanted.get(node)
            if pool is None or desired is None:
                continue
            try:
                await pool.sync(desired)
            except API_ERRORS as error:
                self._enqueue(node)
                if status_code(error) != CONFLICT:
                    logger.warning("ResourceSlices of simulated node %s: %s; retrying",
                                   node, describe(error))  # fmt: skip
                    await asyncio.sleep(backoff.delay(error))
            else:
                backoff.reset()


def _pool_of(document: Mapping[str, Any]) -> str | None:
    spec = document.get("spec", {})
    pool = spec.get("pool", {}).get("name")
    return pool if pool is not None and pool == spec.get("nodeName") else None
