"""Keeps the node's ResourceSlices equal to the devices it should offer.

One pool per node, named after it, holding the devices of every DRA resource: each
resource's devices in slices of at most 128, a slice never mixing resources, so that a
change of one resource changes only its own slices' device lists. Any change makes a new
pool generation, written to every slice with the right ``resourceSliceCount`` (consumers
ignore slices of an older generation, so none may be left behind), then slices no longer
wanted are deleted — the order upstream's resourceslice controller uses.

Informer-style: the node's slices are listed, then watched from that resourceVersion into
a cache, and writes are computed against the cache (a slice is compared by a digest of
the devices we wrote, kept in an annotation, so server-side defaults never look like
drift). A write that conflicts (409) re-reads that slice; any error waits with backoff;
a watch that expires (410) lists again; a slice deleted or edited by someone else is
written back. Desired states that arrive while a write runs are coalesced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.core.client import FieldSelector

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
from dra_driver.objects import RESOURCE_ANNOTATION, chunks, slice_document

logger = logging.getLogger(__name__)

PART_ANNOTATION = "widget.ska-sdp.org/part"
"""Which of its resource's slices this is (0, 1, ...)."""
DIGEST_ANNOTATION = "widget.ska-sdp.org/devices-sha256"
SETTLE = 0.02
"""Seconds to gather changes that come together (a reload, faults flipping at once)."""

Key = tuple[str, int]
"""(resource name, part index)."""
Desired = Mapping[str, Sequence[Mapping[str, Any]]]
"""Resource name -> its devices, as ResourceSlice device entries."""
CONCURRENT_WRITES = 8
WriteResult = Callable[[str], None]
"""Told each write's outcome: "ok", "conflict" or "error"."""


def digest(devices: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(devices, sort_keys=True).encode()).hexdigest()


class SlicePublisher:
    """Publishes the devices given to `publish`; `run` does the work until cancelled."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        node: str,
        driver: str,
        owner: Mapping[str, str] | None = None,
        on_write: WriteResult | None = None,
    ) -> None:
        self._client, self.node, self.driver = client, node, driver
        self._pool = Pool(client, node=node, driver=driver, owner=owner, on_write=on_write)
        self._desired: Desired | Callable[[], Desired] = {}
        self._version = 0
        """Bumped by each `publish`: a sync knows whether it wrote the newest state."""
        self._listed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._in_sync = asyncio.Event()
        self.problem: str | None = "not yet in touch with the API server"
        """Why the slices may not match (None once they do, while they do)."""
        self.connected = False

    # -- public --------------------------------------------------------------------

    def publish(self, desired: Desired | Callable[[], Desired]) -> None:
        """From now on, offer exactly these devices: resource name -> slice devices. A
        callable is called when the next write is computed, so that changes coming
        together (a reload, faults flipping at once) are computed once."""
        self._desired = desired
        self._version += 1
        self._in_sync.clear()
        self._dirty.set()

    @property
    def in_sync(self) -> bool:
        return self._in_sync.is_set()

    async def wait_in_sync(self) -> None:
        await self._in_sync.wait()

    @property
    def owner(self) -> Mapping[str, str] | None:
        return self._pool.owner

    @owner.setter
    def owner(self, owner: Mapping[str, str] | None) -> None:
        self._pool.owner = owner

    def slices(self) -> list[dict[str, Any]]:
        """The pool's slices as last seen."""
        return list(self._pool.cache.values())

    async def run(self) -> None:
        """Watch and write until cancelled; never raises for an API server's failure."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_loop(), name="resourceslice-watch")
            group.create_task(self._sync_loop(), name="resourceslice-sync")

    async def delete_all(self) -> None:
        """Delete the pool's slices (at shutdown); failures are logged, not raised."""
        await self._pool.delete_all()

    # -- watch: the cache ----------------------------------------------------------

    def _selector(self) -> FieldSelector:
        return {"spec.nodeName": self.node, "spec.driver": self.driver}

    async def _watch_loop(self) -> None:
        await follow(
            self._client, ResourceSlice, fields=self._selector(),
            on_list=self._listed_now, on_error=self._lost,
            on_event=lambda kind, obj: self._observe(kind, plain(obj)),
        )  # fmt: skip

    def _listed_now(self, objects: list[Any]) -> None:
        found = {}
        for obj in objects:
            document = plain(obj)
            if _pool(document) == self.node:
                found[document["metadata"]["name"]] = document
        self._pool.cache = found
        self.connected = True
        self._listed.set()
        self._dirty.set()

    def _observe(self, kind: str, document: dict[str, Any]) -> None:
        if (kind == "DELETED" or _pool(document) == self.node) and self._pool.observe(
            kind, document
        ):
            self._dirty.set()

    def _lost(self, error: BaseException) -> None:
        self.connected = False
        self.problem = f"API server: {describe(error)}"
        self._in_sync.clear()
        logger.warning("ResourceSlices of node %s: %s; retrying", self.node, describe(error))

    # -- sync: the writes ----------------------------------------------------------

    async def _sync_loop(self) -> None:
        backoff = Backoff()
        await self._listed.wait()
        while True:
            await self._dirty.wait()
            await asyncio.sleep(SETTLE)
            self._dirty.clear()
            version = self._version
            try:
                desired = self._desired() if callable(self._desired) else self._desired
                wrote = await self._pool.sync(desired)
            except API_ERRORS as error:
                self._dirty.set()
                if status_code(error) == CONFLICT:
                    continue  # the cache was refreshed; compute again
                self._lost(error)
                await asyncio.sleep(backoff.delay(error))
                continue
            backoff.reset()
            if wrote:
                self._dirty.set()  # one more pass finds nothing to do: then it is in sync
            elif version == self._version:
                self.problem = None
                self._in_sync.set()


class Pool:
    """One node's pool of one driver: its slices as last seen, and the writes that make
    them what is wanted (see the module docstring). Shared by the node agent's publisher
    (one pool) and a simulated fleet's (one per node, one watch for all)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        node: str,
        driver: str,
        owner: Mapping[str, str] | None = None,
        on_write: WriteResult | None = None,
        before_write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client, self.node, self.driver, self.owner = client, node, driver, owner
        self._on_write = on_write or (lambda result: None)
        self._before_write = before_write
        self.cache: dict[str, dict[str, Any]] = {}
        """The pool's slices by name, as last seen (listed, watched or written)."""
        self._stored: dict[str, str] = {}
        """Slice name -> digest of its devices as the server stored our last write (the
        server may drop fields its feature gates disable: that is not someone's edit)."""

    def observe(self, kind: str, document: dict[str, Any]) -> bool:
        """A watch event of one of the pool's slices; whether the pool may need writes."""
        name = document["metadata"]["name"]
        if kind == "DELETED":
            return self.cache.pop(name, None) is not None
        known = self.cache.get(name)
        if known is not None and _older(document, known):
            return False  # an event from before our own write, which the cache already holds
        self.cache[name] = document
        return known is None or _version(known) != _version(document)

    async def delete_all(self) -> None:
        """Delete the pool's slices; failures are logged, not raised."""
        for name in list(self.cache):
            try:
                await self._delete(name)
            except API_ERRORS as error:
                logger.warning("cannot delete ResourceSlice %s: %s", name, describe(error))
                self.cache.pop(name, None)

    async def sync(self, desired: Desired) -> bool:
        """One pass: write what differs from `desired`; whether anything was written."""
        wanted = _parts(desired)
        have: dict[Key, dict[str, Any]] = {}
        extra: list[str] = []
        for name, document in sorted(self.cache.items()):
            key = _key(document)
            if key in wanted and key not in have:
                have[key] = document
            else:
                extra.append(name)
        pools = [document["spec"]["pool"] for document in self.cache.values()]
        current = max((int(p.get("generation", 0)) for p in pools), default=0)
        stale = (
            extra
            or have.keys() != wanted.keys()
            or any(_digest_of(have[k]) != digest(devices) for k, devices in wanted.items())
            or not all(self._untouched(document) for document in have.values())
            or any(p.get("generation") != current for p in pools)
            or any(p.get("resourceSliceCount") != len(wanted) for p in pools)
        )
        if not stale:
            return False
        generation = current + 1
        # Every slice first (several at once: a pool of 79 slices is 79 writes), then the
        # deletions, so that the new generation is complete before old slices go.
        await _bounded(
            self._write(key, devices, generation, len(wanted), have.get(key))
            for key, devices in wanted.items()
        )
        await _bounded(self._delete(name) for name in extra)
        logger.info(
            "ResourceSlices of node %s: pool generation %d, %d slices, %d devices",
            self.node, generation, len(wanted), sum(len(d) for d in wanted.values()),
        )  # fmt: skip
        return True

    async def _write(
        self,
        key: Key,
        devices: list[dict[str, Any]],
        generation: int,
        count: int,
        existing: dict[str, Any] | None,
    ) -> None:
        resource, index = key
        document = slice_document(
            node=self.node, driver=self.driver, resource=resource, devices=devices,
            generation=generation, slice_count=count, owner=self.owner,
        )  # fmt: skip
        annotations = document["metadata"]["annotations"]
        annotations[PART_ANNOTATION] = str(index)
        annotations[DIGEST_ANNOTATION] = digest(devices)
        if self._before_write is not None:
            await self._before_write()
        try:
            if existing is None:
                written = await self._client.create(ResourceSlice.from_dict(document))
            else:
                metadata = existing["metadata"]
                document["metadata"]["name"] = metadata["name"]
                document["metadata"]["resourceVersion"] = metadata["resourceVersion"]
                del document["metadata"]["generateName"]
                written = await self._client.replace(ResourceSlice.from_dict(document))
        except API_ERRORS as error:
            conflict = status_code(error) == CONFLICT
            self._on_write("conflict" if conflict else "error")
            if conflict and existing is not None:
                await self._refresh(existing["metadata"]["name"])
            raise
        self._on_write("ok")
        result = plain(written)
        name = result["metadata"]["name"]
        self.cache[name] = result
        self._stored[name] = digest(result["spec"].get("devices", []))

    def _untouched(self, document: Mapping[str, Any]) -> bool:
        """Whether the slice's devices are still those we wrote (no one else edited them)."""
        found = digest(document["spec"].get("devices", []))
        return found in (_digest_of(document), self._stored.get(document["metadata"]["name"]))

    async def _delete(self, name: str) -> None:
        if self._before_write is not None:
            await self._before_write()
        try:
            await self._client.delete(ResourceSlice, name)
        except API_ERRORS as error:
            if status_code(error) != 404:
                self._on_write("error")
                raise
        else:
            self._on_write("ok")
        self.cache.pop(name, None)

    async def _refresh(self, name: str) -> None:
        with contextlib.suppress(*API_ERRORS):
            try:
                self.cache[name] = plain(await self._client.get(ResourceSlice, name))
            except API_ERRORS as error:
                if status_code(error) == 404:
                    self.cache.pop(name, None)
                raise


async def _bounded(writes: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the writes, CONCURRENT_WRITES at a time; the first failure is raised once all
    have ended (the cache keeps what did succeed)."""
    gate = asyncio.Semaphore(CONCURRENT_WRITES)

    async def one(write: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await write

    outcomes = await asyncio.gather(*(one(w) for w in writes), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _parts(desired: Desired) -> dict[Key, list[dict[str, Any]]]:
    return {
        (resource, index): part
        for resource, devices in sorted(desired.items())
        for index, part in enumerate(chunks(devices))
    }


def _pool(document: Mapping[str, Any]) -> str | None:
    pool: str | None = document.get("spec", {}).get("pool", {}).get("name")
    return pool


def _key(document: Mapping[str, Any]) -> Key | None:
    annotations = document["metadata"].get("annotations") or {}
    resource, part = annotations.get(RESOURCE_ANNOTATION), annotations.get(PART_ANNOTATION)
    if resource is None or part is None or not part.isdigit():
        return None
    return resource, int(part)


def _digest_of(document: Mapping[str, Any]) -> str | None:
    annotations = document["metadata"].get("annotations") or {}
    found: str | None = annotations.get(DIGEST_ANNOTATION)
    return found


def _version(document: Mapping[str, Any]) -> str:
    version: str = document["metadata"].get("resourceVersion", "")
    return version


def _older(document: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Whether `document` is an older version of `than` (etcd's versions are integers;
    anything else is opaque, and then the newest event wins)."""
    a, b = _version(document), _version(than)
    return a.isdigit() and b.isdigit() and int(a) < int(b)
