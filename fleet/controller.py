"""Keeps every simulated node's status carrying its mock resources, and counts what pods hold.

Informer-style, with manners: Nodes matching the label selector and all Pods are listed,
then watched from that resourceVersion (a 410 lists again; other errors back off); each
node's wanted counts (`status.node_resources` of the config's view of that node) are
compared with what was last written and with what the node shows, and only nodes that
differ are queued. A few writers drain the queue through one client-side rate limit
(`ratelimit.TokenBucket`), each write a server-side apply of ``nodes/status`` with field
manager ``widget-supervisor`` and force (so a resource removed from the config is removed
from the node, and nobody else's fields are touched). A node queued again while queued is
written once (coalescing); a failed write goes back in the queue after a backoff. Fault
timelines start when a node is first seen; a timer per node re-queues it when a count
changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lightkube import ALL_NS, AsyncClient
from lightkube.core.client import LabelSelector
from lightkube.models.core_v1 import NodeStatus as NodeStatusModel
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node, NodeStatus, Pod

from dra_driver.kube import API_ERRORS, FIELD_MANAGER, Backoff, describe, follow, status_code
from fleet.pods import pod_requests
from fleet.queue import CoalescingQueue
from fleet.ratelimit import TokenBucket
from fleet.slices import FleetSlices
from fleet.status import NodeResources, node_resources, node_slices
from plugin_worker.api import DRA
from supervisor.config import Fleet

logger = logging.getLogger(__name__)

DEFAULT_SELECTOR = {"type": "kwok"}
"""KWOK's convention for the nodes it simulates."""
WRITERS = 16
"""Writes in flight at once (the rate limit, not this, sets the pace)."""

Counts = tuple[tuple[str, str], ...]
WriteResult = Callable[[str], None]
"""Told each write's outcome: "ok" or "error"."""


@dataclass
class _Node:
    first_seen: float
    uid: str | None = None
    written: tuple[Counts, Counts] | None = None
    """(capacity, allocatable) of our last successful write."""
    shown: tuple[Counts, Counts] | None = None
    """Our resources' counts as the node's status last showed them."""
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Pod:
    node: str
    requests: dict[str, int] = field(default_factory=dict)


def _counts(values: Mapping[str, str]) -> Counts:
    return tuple(sorted(values.items()))


class FleetController:
    def __init__(
        self,
        client: AsyncClient,
        *,
        selector: Mapping[str, str] | None = None,
        bucket: TokenBucket | None = None,
        on_write: WriteResult | None = None,
        on_slice_write: WriteResult | None = None,
    ) -> None:
        self._client = client
        self.selector: LabelSelector = dict(DEFAULT_SELECTOR if selector is None else selector)
        self._bucket = bucket or TokenBucket()
        self._on_write = on_write or (lambda result: None)
        self._fleet: Fleet | None = None
        self.nodes: dict[str, _Node] = {}
        self._pods: dict[str, _Pod] = {}
        self._queue = CoalescingQueue()
        self._listed = asyncio.Event()
        self._slices_started = asyncio.Event()
        self._forgetting: set[asyncio.Task[None]] = set()
        self._on_slice_write = on_slice_write or (lambda result: None)
        self.problem: str | None = "not yet in touch with the API server"
        self.writes = 0
        self.slices: FleetSlices | None = None
        """The simulated nodes' ResourceSlices, once a config has DRA resources."""

    # -- public --------------------------------------------------------------------

    def configure(self, fleet: Fleet) -> None:
        """A new config: every node is computed again (and written where it changed)."""
        self._fleet = fleet
        if self.slices is not None and self.slices.driver != fleet.driver:
            logger.warning("the DRA driver changed to %s: the old driver's slices stay until "
                           "a restart", fleet.driver)  # fmt: skip
            self.slices = None
        if self.slices is None and self._uses_dra(fleet):
            self.slices = FleetSlices(
                self._client, driver=fleet.driver, before_write=self._bucket.take,
                on_write=self._on_slice_write,
            )  # fmt: skip
            self._slices_started.set()
        for name in self.nodes:
            self._enqueue(name)

    @staticmethod
    def _uses_dra(fleet: Fleet) -> bool:
        return fleet.api == DRA or any(
            s.api == DRA for section in fleet.sections for s in section.settings
        )

    def wanted(self, name: str) -> NodeResources:
        node = self.nodes[name]
        if self._fleet is None:
            return NodeResources({}, {}, None)
        specs = self._fleet.resources_for(name)
        return node_resources(specs, time.monotonic() - node.first_seen)

    def in_use(self) -> dict[tuple[str, str], int]:
        """(node, resource) -> our devices that pods bound to the node hold (another
        vendor's extended resources on the same nodes are not ours to count)."""
        held: dict[tuple[str, str], int] = {}
        for pod in self._pods.values():
            if pod.node not in self.nodes or self._fleet is None:
                continue
            ours = {s.name for s in self._fleet.resources_for(pod.node)}
            for resource, count in pod.requests.items():
                if resource in ours:
                    held[(pod.node, resource)] = held.get((pod.node, resource), 0) + count
        return held

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Watch and write until cancelled; never raises for an API server's failure."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_nodes(), name="fleet-nodes")
                group.create_task(self._watch_pods(), name="fleet-pods")
                for i in range(WRITERS):
                    group.create_task(self._writer(), name=f"fleet-writer-{i}")
                group.create_task(self._run_slices(), name="fleet-slices")
        finally:
            for node in self.nodes.values():
                if node.timer is not None:
                    node.timer.cancel()

    async def _run_slices(self) -> None:
        await self._slices_started.wait()  # the first config with a DRA resource
        assert self.slices is not None
        await self.slices.run()

    # -- nodes ---------------------------------------------------------------------

    async def _watch_nodes(self) -> None:
        await follow(
            self._client, Node, labels=self.selector,
            on_list=self._nodes_listed, on_event=self._node_event, on_error=self._lost,
        )  # fmt: skip

    def _nodes_listed(self, nodes: list[Node]) -> None:
        seen = {self._observe_node(node) for node in nodes}
        for gone in [n for n in self.nodes if n not in seen]:
            self._forget(gone)
        if not self._listed.is_set():
            self._say_how_long(len(seen))
        self._listed.set()
        self.problem = None

    def _node_event(self, kind: str, node: Node) -> None:
        if kind == "DELETED":
            self._forget(_name(node))
        else:
            self._observe_node(node)

    def _observe_node(self, node: Node) -> str:
        name = _name(node)
        known = self.nodes.get(name)
        new = known is None
        if known is None:
            known = self.nodes[name] = _Node(first_seen=time.monotonic())
            logger.debug("simulated node %s appeared", name)
        if node.metadata is not None and node.metadata.uid:
            known.uid = node.metadata.uid
        status = node.status
        capacity = dict(status.capacity or {}) if status is not None else {}
        allocatable = dict(status.allocatable or {}) if status is not None else {}
        ours = self._ours(name)
        known.shown = (
            _counts({k: v for k, v in capacity.items() if k in ours}),
            _counts({k: v for k, v in allocatable.items() if k in ours}),
        )
        # Compared with what is wanted, not with what was last written: the event of our
        # own write may come before the write's answer, and must not queue it again.
        # A new node is always queued: its status may be right already, not its slices.
        if new or (self._fleet is not None and known.shown != self._wanted_counts(name)):
            self._enqueue(name)
        return name

    def _wanted_counts(self, name: str) -> tuple[Counts, Counts]:
        wanted = self.wanted(name)
        return _counts(wanted.capacity), _counts(wanted.allocatable)

    def _say_how_long(self, nodes: int) -> None:
        rate = self._bucket.qps
        seconds = max(nodes - self._bucket.burst, 0) / rate
        hint = " (raise --qps, as far as your API server allows)" if seconds > 60 else ""
        logger.info("%d simulated nodes; writing them at %g per second takes about %.0f s%s",
                    nodes, rate, seconds, hint)  # fmt: skip

    def _ours(self, name: str) -> set[str]:
        """Resource names we write, or wrote, on this node."""
        known = self.nodes[name]
        names = {k for k, _ in known.written[0]} if known.written else set()
        if self._fleet is not None:
            names |= {s.name for s in self._fleet.resources_for(name)}
        return names

    def _forget(self, name: str) -> None:
        node = self.nodes.pop(name, None)
        if node is not None and node.timer is not None:
            node.timer.cancel()
        self._queue.discard(name)
        if self.slices is not None and name in self.slices.pools:
            # The Node owns its slices (garbage-collected with it); deleting them is for
            # an API server without that collector, and for a node that stays but no
            # longer matches the selector.
            task = asyncio.get_running_loop().create_task(self.slices.forget(name))
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)
        logger.debug("simulated node %s is gone", name)

    # -- writes --------------------------------------------------------------------

    def _enqueue(self, name: str) -> None:
        self._queue.put(name)

    async def _writer(self) -> None:
        backoff = Backoff()
        while True:
            name = await self._queue.take()
            if name not in self.nodes:
                continue
            try:
                await self._write(name)
            except API_ERRORS as error:
                if status_code(error) == 404:  # deleted meanwhile: its DELETED event follows
                    continue
                self._on_write("error")
                self._lost(error)
                await asyncio.sleep(backoff.delay(error))
                self._enqueue(name)
            else:
                backoff.reset()

    async def _write(self, name: str) -> None:
        if self._fleet is None:
            return  # before the first config: nothing is known to be wanted, not "nothing"
        wanted = self.wanted(name)
        node = self.nodes[name]
        next_change = wanted.next_change
        if self.slices is not None and self._fleet is not None:
            elapsed = time.monotonic() - node.first_seen
            offered, change = node_slices(self._fleet.resources_for(name), elapsed)
            owner = None if node.uid is None else {"name": name, "uid": node.uid}
            self.slices.want(name, offered, owner)
            if change is not None and (next_change is None or change < next_change):
                next_change = change
        self._arm_timer(name, node, next_change)
        counts = (_counts(wanted.capacity), _counts(wanted.allocatable))
        if counts == node.written and counts == node.shown:
            return
        await self._bucket.take()
        status = (
            NodeStatusModel(capacity=wanted.capacity, allocatable=wanted.allocatable)
            if wanted.capacity
            else NodeStatusModel()
        )
        await self._client.apply(
            NodeStatus(metadata=ObjectMeta(name=name), status=status),
            name,
            field_manager=FIELD_MANAGER,
            force=True,
        )
        self.writes += 1
        self._on_write("ok")
        if name in self.nodes:
            self.nodes[name].written = self.nodes[name].shown = counts

    def _arm_timer(self, name: str, node: _Node, next_change: float | None) -> None:
        if node.timer is not None:
            node.timer.cancel()
            node.timer = None
        if next_change is not None:
            loop = asyncio.get_running_loop()
            delay = node.first_seen + next_change - time.monotonic()
            node.timer = loop.call_later(max(delay, 0.0), self._enqueue, name)

    def _lost(self, error: BaseException) -> None:
        self.problem = f"API server: {describe(error)}"
        logger.warning("simulated nodes: %s; retrying", describe(error))

    # -- pods ----------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        await follow(
            self._client, Pod, namespace=ALL_NS,
            on_list=self._pods_listed, on_event=self._pod_event, on_error=self._lost,
        )  # fmt: skip

    def _pods_listed(self, pods: list[Pod]) -> None:
        self._pods = {_uid(pod): held for pod in pods if (held := _held(pod)) is not None}

    def _pod_event(self, kind: str, pod: Pod) -> None:
        held = _held(pod) if kind != "DELETED" else None
        if held is None:
            self._pods.pop(_uid(pod), None)
        else:
            self._pods[_uid(pod)] = held


def _name(obj: Node | Pod) -> str:
    assert obj.metadata is not None
    assert obj.metadata.name is not None
    return obj.metadata.name


def _uid(pod: Pod) -> str:
    assert pod.metadata is not None
    return pod.metadata.uid or f"{pod.metadata.namespace}/{pod.metadata.name}"


def _held(pod: Pod) -> _Pod | None:
    """What a bound pod holds; None for a pod not bound, or one that holds nothing."""
    node = pod.spec.nodeName if pod.spec is not None else None
    if not node:
        return None
    with contextlib.suppress(AttributeError):
        requests = pod_requests(pod.to_dict())
        if requests:
            return _Pod(node, requests)
    return None
