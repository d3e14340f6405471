"""A DRA node for the benchmarks: both stand-ins in this process, the supervisor a child.

Owns starting and always stopping the API-server stand-in (with the node's Node object),
kubelet's DRA plugin watcher stand-in and ``widget-supervisor run`` in DRA mode; writing
DRA configs; seeding ResourceClaims; and `PoolWatch`, which follows the node's
ResourceSlices through the stand-in's own event queue (`Store.subscribe`), so a figure
ends the moment the API server stores the last slice, with no polling interval in it.
`bench.dra` decides what to measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiserver_standin.http_server import Request, Response, Stream
from apiserver_standin.resources import by_plural
from apiserver_standin.server import ApiServer
from apiserver_standin.store import Event
from bench.harness import DOMAIN, Child, Device, child, config_text, supervisor_args
from dra_driver.names import device_name
from kubelet_standin.dra import DraPluginWatcher
from supervisor.resources import device_id

NODE = "bench-node"
DRIVER = DOMAIN
SLICES = by_plural("resourceslices").qualified
JSON = dict[str, Any]
Claim = tuple[str, str, str]
"""(namespace, name, uid), as kubelet names a claim to the plugin."""


def dra_config(devices: Sequence[Device]) -> str:
    return "api: dra\n" + config_text(devices)


def slice_names(devices: Sequence[Device]) -> frozenset[str]:
    """The names the devices get in the node's ResourceSlices."""
    return frozenset(device_name(device_id(t, m, p)) for t, m, p in devices)


@dataclass
class _Slice:
    generation: int
    count: int
    devices: frozenset[str]


@dataclass
class PoolWatch:
    """The node's pool as the stand-in stores it, updated from the store's events."""

    api: ApiServer
    slices: dict[str, _Slice] = field(default_factory=dict)
    queue: asyncio.Queue[Event] | None = None

    def __enter__(self) -> PoolWatch:
        _, self.queue = self.api.store.subscribe(SLICES, since=self.api.store.rv)
        for obj in self.api.store.current(SLICES).values():
            self._take(obj)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.queue is not None:
            self.api.store.unsubscribe(self.queue)

    def _take(self, obj: JSON, deleted: bool = False) -> None:
        spec, name = obj["spec"], obj["metadata"]["name"]
        if deleted or spec.get("nodeName") != NODE or spec["pool"]["name"] != NODE:
            self.slices.pop(name, None)
            return
        pool = spec["pool"]
        self.slices[name] = _Slice(
            int(pool["generation"]), int(pool["resourceSliceCount"]),
            frozenset(d["name"] for d in spec.get("devices", ())),
        )  # fmt: skip

    def devices(self) -> frozenset[str] | None:
        """The pool's devices, once its newest generation is complete (consumers ignore
        slices of older generations); None while it is not."""
        if not self.slices:
            return None
        newest = max(s.generation for s in self.slices.values())
        current = [s for s in self.slices.values() if s.generation == newest]
        if any(s.count != len(current) for s in current):
            return None
        return frozenset().union(*(s.devices for s in current))

    async def wait_for(self, wanted: frozenset[str], proc: Child, timeout: float) -> float:
        """Wait until the pool offers exactly `wanted`; the perf_counter time it did."""
        assert self.queue is not None
        deadline = time.perf_counter() + timeout
        while self.devices() != wanted:
            try:
                event = await asyncio.wait_for(self.queue.get(), 0.5)
            except TimeoutError:
                proc.check_alive()
                if time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"the pool never offered the {len(wanted)} devices within {timeout} s "
                        f"(it offers {len(self.devices() or ())}); log:\n{proc.log()}"
                    ) from None
                continue
            self._take(event.obj, deleted=event.type == "DELETED")
        return time.perf_counter()


@dataclass(frozen=True, slots=True)
class Served:
    method: str
    path: str
    start: float
    """time.perf_counter() when the stand-in began handling the request."""
    seconds: float
    """How long the stand-in (in this process, on this event loop) took to answer."""


def time_requests(api: ApiServer) -> list[Served]:
    """Time every request the stand-in handles from now on: its share of a figure. Wraps
    the `Api` instance's handler; the stand-in's code is unchanged."""
    served: list[Served] = []
    handle = api.api.handle

    async def timed(request: Request) -> Response | Stream:
        start = time.perf_counter()
        try:
            return await handle(request)
        finally:
            served.append(Served(request.method, request.path, start, time.perf_counter() - start))

    api.api.handle = timed  # type: ignore[method-assign]
    return served


@dataclass
class DraNode:
    api: ApiServer
    kubelet: DraPluginWatcher
    root: Path
    proc: Child
    served: list[Served] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "etc" / "config.yaml"

    def seed_claims(self, devices: Sequence[Device], prefix: str) -> list[Claim]:
        """One allocated ResourceClaim per device, as the scheduler leaves them."""
        claims = []
        for index, (type_, model, path) in enumerate(devices):
            name = f"{prefix}-{index}"
            result = {"request": "r", "driver": DRIVER, "pool": NODE,
                      "device": device_name(device_id(type_, model, path))}  # fmt: skip
            stored = self.api.put_object({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"devices": {"requests": [{"name": "r", "exactly": {
                    "deviceClassName": f"{type_}-{model}.{DRIVER}"}}]}},
                "status": {"allocation": {"devices": {"results": [result]}}},
            })  # fmt: skip
            claims.append(("default", name, stored["metadata"]["uid"]))
        return claims


@contextlib.asynccontextmanager
async def stand_ins(root: Path) -> AsyncIterator[tuple[ApiServer, DraPluginWatcher]]:
    """The API server (holding the Node) and kubelet's DRA plugin watcher."""
    api = ApiServer()
    await api.start()
    try:
        api.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        kubelet = DraPluginWatcher(root / "kubelet")
        await kubelet.start()
        try:
            yield api, kubelet
        finally:
            await kubelet.stop()
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def supervisor(
    root: Path, api: ApiServer, kubelet: DraPluginWatcher
) -> AsyncIterator[DraNode]:
    """``widget-supervisor run`` in DRA mode on the config in ``root/etc/config.yaml``."""
    config = root / "etc" / "config.yaml"
    args = [
        *supervisor_args(config, root / "dp"), "--node-name", NODE,
        "--kubeconfig", str(api.kubeconfig(root / "kubeconfig")),
        "--kubelet-root-dir", str(root / "kubelet"), "--pod-resources-interval", "0",
    ]  # fmt: skip
    served = time_requests(api)
    async with child(*args) as proc:
        yield DraNode(api, kubelet, root, proc, served)


def write_rename(config_dir: Path, devices: Sequence[Device]) -> Path:
    """An atomic save of a DRA config (as `bench.harness.write_rename`)."""
    target, temporary = config_dir / "config.yaml", config_dir / ".config.yaml.tmp"
    temporary.write_text(dra_config(devices))
    temporary.rename(target)
    return target
