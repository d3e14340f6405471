"""A simulated fleet for the benchmarks: the API-server stand-in here, the simulator a child.

Owns the heterogeneous fleet (node names, the config whose ``nodes:`` globs give each kind
of node different resources, and the status each node should then carry, written out by
hand so that the product is not checked against itself), starting and always stopping
the stand-in seeded with the Nodes and ``widget-supervisor simulate`` against it, and
`FleetWatch`, which follows the nodes through the stand-in's own event queue
(`Store.subscribe`) so that a figure ends when the store holds the last node's status,
with no polling interval in it. `bench.simulate` decides what to measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiserver_standin.resources import by_plural
from apiserver_standin.server import ApiServer
from apiserver_standin.store import Event
from bench.dra_node import Served, time_requests
from bench.harness import DOMAIN, Child, child

NODES = by_plural("nodes").qualified
JSON = dict[str, Any]
Counts = tuple[tuple[str, str], ...]
Status = tuple[Counts, Counts]
"""(capacity, allocatable) of our resources (names with a "/") on a node, sorted."""

SNAFFLER, GIZMO, HBM, DOOHICKEY = (
    f"{DOMAIN}/snaffler-v1", f"{DOMAIN}/gizmo-mk2", f"{DOMAIN}/hbm-x1", f"{DOMAIN}/doohickey-a100",
)  # fmt: skip
KINDS = ("cpu", "cpu", "cpu", "cpu", "gpu", "gpu", "gpu", "gpu-hbm", "edge", "edge")
"""Node kinds, one in ten each: 40 % plain, 30 % gpu, 10 % gpu with HBM, 20 % edge."""
UNSELECTED = 10
"""Nodes without the kwok label (real nodes): never written."""


def node_names(count: int) -> list[str]:
    return [f"{KINDS[i % len(KINDS)]}-{i:05d}" for i in range(count)]


def config(version: int) -> str:
    """The fleet's config; version 2 changes what every kind of node gets."""
    extra = "- {type: snaffler, model: v1, device: /dev/wibble3}\n" if version == 2 else ""
    replicas = 3 if version == 1 else 2
    hbm = "" if version == 1 else "  - {type: hbm, model: x1, device: /dev/hbm1}\n"
    doohickey = "" if version == 1 else "  - {type: doohickey, model: a100, device: /dev/d1}\n"
    return (
        "devices:\n"
        "- {type: snaffler, model: v1, device: /dev/wibble1}\n"
        "- {type: snaffler, model: v1, device: /dev/wibble2, health: Unhealthy}\n"
        f"{extra}"
        "nodes:\n"
        '- match: "gpu-*"\n'
        "  devices:\n"
        "  - {type: gizmo, model: mk2, device: /dev/gizmo0}\n"
        "  - {type: gizmo, model: mk2, device: /dev/gizmo1}\n"
        "  resources:\n"
        f"  - {{type: gizmo, model: mk2, replicas: {replicas}}}\n"
        '- match: "*-hbm-*"\n'
        "  devices:\n"
        "  - {type: hbm, model: x1, device: /dev/hbm0}\n"
        f"{hbm}"
        '- match: "edge-*"\n'
        "  mode: replace\n"
        "  devices:\n"
        "  - {type: doohickey, model: a100, device: /dev/d0}\n"
        f"{doohickey}"
    )


def _status(capacity: Mapping[str, int], allocatable: Mapping[str, int]) -> Status:
    return (
        tuple(sorted((k, str(v)) for k, v in capacity.items())),
        tuple(sorted((k, str(v)) for k, v in allocatable.items())),
    )


def expected(name: str, version: int) -> Status:
    """What node `name` carries under `config(version)`, counted by hand: the Unhealthy
    snaffler is in capacity only; a gizmo with replicas r counts 2 r."""
    kind = name.rsplit("-", 1)[0]
    snaffler = 2 if version == 1 else 3
    if kind == "edge":
        return _status({DOOHICKEY: version}, {DOOHICKEY: version})
    capacity = {SNAFFLER: snaffler}
    allocatable = {SNAFFLER: snaffler - 1}
    if kind.startswith("gpu"):
        capacity[GIZMO] = allocatable[GIZMO] = 2 * (3 if version == 1 else 2)
    if kind == "gpu-hbm":
        capacity[HBM] = allocatable[HBM] = version
    return _status(capacity, allocatable)


def kwok_node(name: str, *, selected: bool = True) -> JSON:
    """A Node as KWOK creates one: its own capacity, and the label the selector picks."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"type": "kwok"} if selected else {}},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }  # fmt: skip


def shown(obj: JSON) -> Status:
    status = obj.get("status") or {}
    return (
        tuple(sorted((k, v) for k, v in (status.get("capacity") or {}).items() if "/" in k)),
        tuple(sorted((k, v) for k, v in (status.get("allocatable") or {}).items() if "/" in k)),
    )


@dataclass
class FleetWatch:
    """Which selected nodes do not yet carry the status the current config gives them,
    kept from the store's events."""

    api: ApiServer
    names: Sequence[str]
    """The selected nodes (for messages)."""
    version: int = 1
    pending: set[str] = field(default_factory=set)
    wrong: set[str] = field(default_factory=set)
    """Unselected nodes that carry any of our resources (should stay empty)."""
    queue: asyncio.Queue[Event] | None = None

    def __enter__(self) -> FleetWatch:
        _, self.queue = self.api.store.subscribe(NODES, since=self.api.store.rv)
        self.expect(self.version)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.queue is not None:
            self.api.store.unsubscribe(self.queue)

    def expect(self, version: int) -> None:
        """From now on, wait for `config(version)`'s status (as the store holds it now)."""
        self.version = version
        self.pending = set()
        while self.queue is not None and not self.queue.empty():
            self.queue.get_nowait()  # older than the store's state read below
        for obj in self.api.store.current(NODES).values():
            self._take(obj)

    def _take(self, obj: JSON) -> None:
        name = obj["metadata"]["name"]
        if (obj["metadata"].get("labels") or {}).get("type") != "kwok":
            if any(shown(obj)):
                self.wrong.add(name)
        elif shown(obj) == expected(name, self.version):
            self.pending.discard(name)
        else:
            self.pending.add(name)

    async def wait_all(self, proc: Child, timeout: float) -> float:
        """Wait until no node is pending; the perf_counter time that happened."""
        assert self.queue is not None
        deadline = time.perf_counter() + timeout
        while self.pending:
            try:
                event = await asyncio.wait_for(self.queue.get(), 0.5)
            except TimeoutError:
                proc.check_alive()
                if time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"{len(self.pending)} of {len(self.names)} nodes still lack config "
                        f"version {self.version}'s status after {timeout} s; "
                        f"log:\n{proc.log()}"
                    ) from None
                continue
            self._take(event.obj)
        return time.perf_counter()


@dataclass
class Fleet:
    api: ApiServer
    root: Path
    proc: Child
    served: list[Served]

    @property
    def config(self) -> Path:
        return self.root / "etc" / "config.yaml"


@contextlib.asynccontextmanager
async def stand_in(names: Sequence[str]) -> AsyncIterator[ApiServer]:
    """The API server stand-in holding the selected nodes and `UNSELECTED` others."""
    api = ApiServer()
    await api.start()
    try:
        for name in names:
            api.put_object(kwok_node(name))
        for i in range(UNSELECTED):
            api.put_object(kwok_node(f"real-{i}", selected=False))
        yield api
    finally:
        await api.stop()


@contextlib.asynccontextmanager
async def simulator(root: Path, api: ApiServer, *extra: str) -> AsyncIterator[Fleet]:
    """``widget-supervisor simulate`` on ``root/etc/config.yaml``, every request timed."""
    args = [
        "-m", "supervisor", "simulate", "--config", str(root / "etc" / "config.yaml"),
        "--kubeconfig", str(api.kubeconfig(root / "kubeconfig")),
        "--node-selector", "type=kwok", "--metrics-address", "127.0.0.1:0",
        "--log-level", "info", *extra,
    ]  # fmt: skip
    served = time_requests(api)
    async with child(*args) as proc:
        yield Fleet(api, root, proc, served)


def write_rename(config_dir: Path, version: int) -> Path:
    """An atomic save of `config(version)`: a temporary file renamed over the config."""
    target, temporary = config_dir / "config.yaml", config_dir / ".config.yaml.tmp"
    temporary.write_text(config(version))
    temporary.chmod(0o644)
    temporary.rename(target)
    return target
