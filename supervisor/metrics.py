"""Prometheus metrics: declarations, scrape-time state, and the `WorkerEvents` sink.

The metric names and labels are an interface that dashboards and alerts use; change
them only with those. Values that describe current state (devices, registration)
are computed at scrape time from the supervisor's snapshot, never stored twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plugin_worker.api import DEVICE_PLUGIN, HEALTHY, UNHEALTHY, Device
from supervisor import __version__
from supervisor.podresources import Holder

PREPARE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Prepare reads the claim from the API server, and allocate.delay may be seconds long."""
ALLOCATE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ResourceState:
    """What a scrape needs to know of one running resource."""

    name: str
    devices: tuple[Device, ...]
    registered: bool
    api: str = DEVICE_PLUGIN


@dataclass(frozen=True, slots=True)
class DraState:
    """The DRA backend's state, while it has DRA resources."""

    registered: bool
    prepared: dict[str, int]
    """Claims prepared now, by resource."""


@dataclass(frozen=True, slots=True)
class FleetState:
    """A simulated fleet (`widget-supervisor simulate`)."""

    nodes: int
    in_use: dict[tuple[str, str], int]
    """(node, resource) -> devices held by pods bound to the node."""
    capacity: dict[str, int]
    """Per resource, summed over the nodes (as written to their status)."""
    allocatable: dict[str, int]


@dataclass(frozen=True, slots=True)
class SupervisorState:
    resources: tuple[ResourceState, ...]
    config_ok: bool
    """False while the newest config on disk was rejected and an older one serves."""
    pod_resources_up: bool | None = None
    """None when the pod-resources monitor is off."""
    holders: tuple[Holder, ...] = ()
    dra: DraState | None = None
    """None while no resource is served through DRA."""
    fleet: FleetState | None = None
    """None unless simulating a fleet."""


ERROR_REASONS = ("unknown_device", "invalid_request", "injected_failure")


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], SupervisorState]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        state = self._snapshot()
        devices = GaugeMetricFamily(
            "widget_devices",
            "Mock devices advertised to kubelet, by resource and health (Healthy or Unhealthy).",
            labels=["resource", "health"],
        )
        registered = GaugeMetricFamily(
            "widget_plugin_registered",
            "1 while the resource's device-plugin server is registered with kubelet, else 0.",
            labels=["resource"],
        )
        for resource in state.resources:
            healthy = sum(1 for d in resource.devices if d.health == HEALTHY)
            devices.add_metric([resource.name, HEALTHY], healthy)
            devices.add_metric([resource.name, UNHEALTHY], len(resource.devices) - healthy)
            registered.add_metric([resource.name], 1 if resource.registered else 0)
        yield devices
        yield registered
        if state.pod_resources_up is not None:
            yield from _usage(state)
        if state.dra is not None:
            yield from _dra(state.dra)
        if state.fleet is not None:
            yield from _fleet(state.fleet)
        yield GaugeMetricFamily(
            "widget_config_last_reload_successful",
            "1 if the config on disk is the one being served, 0 if the newest one was rejected.",
            value=1 if state.config_ok else 0,
        )
        info = GaugeMetricFamily(
            "widget_build_info", "The running widget-supervisor version (value is always 1).",
            labels=["version"],
        )  # fmt: skip
        info.add_metric([__version__], 1)
        yield info


def _dra(state: DraState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "widget_dra_plugin_registered",
        "1 while the DRA kubelet plugin is registered with kubelet, else 0.",
        value=1 if state.registered else 0,
    )
    prepared = GaugeMetricFamily(
        "widget_dra_prepared_claims",
        "ResourceClaims prepared on this node (CDI spec written), by resource.",
        labels=["resource"],
    )
    for resource, count in sorted(state.prepared.items()):
        prepared.add_metric([resource], count)
    yield prepared


def _fleet(state: FleetState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "widget_simulated_nodes", "Simulated nodes matching the selector.", value=state.nodes
    )
    in_use = GaugeMetricFamily(
        "widget_devices_in_use",
        "Devices held by pods bound to each simulated node, by node and resource.",
        labels=["node", "resource"],
    )
    for (node, resource), count in sorted(state.in_use.items()):
        in_use.add_metric([node, resource], count)
    yield in_use
    for name, what, values in (
        ("widget_simulated_capacity", "capacity", state.capacity),
        ("widget_simulated_allocatable", "allocatable", state.allocatable),
    ):
        family = GaugeMetricFamily(
            name, f"Status {what} written to the simulated nodes, summed, by resource.",
            labels=["resource"],
        )  # fmt: skip
        for resource, count in sorted(values.items()):
            family.add_metric([resource], count)
        yield family


def _usage(state: SupervisorState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "widget_pod_resources_up",
        "1 if kubelet's pod-resources API answered the last poll, else 0.",
        value=1 if state.pod_resources_up else 0,
    )
    if not state.pod_resources_up:
        return  # unknown is not "none in use": export nothing rather than zeros
    in_use = GaugeMetricFamily(
        "widget_devices_in_use",
        "Devices that kubelet reports held by a container (pod-resources API), by resource.",
        labels=["resource"],
    )
    # Only device-plugin resources: pod-resources does not report DRA claims' devices, and
    # a 0 would claim that none is held (widget_dra_prepared_claims counts those).
    held: dict[str, set[str]] = {r.name: set() for r in state.resources if r.api == DEVICE_PLUGIN}
    for holder in state.holders:
        held.setdefault(holder.resource, set()).add(holder.device)
    for resource, devices in sorted(held.items()):
        in_use.add_metric([resource], len(devices))
    yield in_use
    allocation = GaugeMetricFamily(
        "widget_device_allocation",
        "1 for each device held by a container, with the pod and container holding it.",
        labels=["resource", "device", "namespace", "pod", "container"],
    )
    for h in state.holders:
        allocation.add_metric([h.resource, h.device, h.namespace, h.pod, h.container], 1)
    yield allocation


class Metrics:
    """All metrics of one supervisor, in one registry; also its `WorkerEvents` sink."""

    def __init__(
        self, snapshot: Callable[[], SupervisorState], registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.allocations = Counter(
            "widget_allocations_total",
            "Container allocation requests served by Allocate (one per container).",
            ["resource"], registry=r,
        )  # fmt: skip
        self.allocated_devices = Counter(
            "widget_allocated_devices_total",
            "Device IDs handed out to containers by successful Allocate calls.",
            ["resource"], registry=r,
        )  # fmt: skip
        self.allocation_errors = Counter(
            "widget_allocation_errors_total",
            "Allocate calls refused, by reason (unknown_device, invalid_request, ...).",
            ["resource", "reason"], registry=r,
        )  # fmt: skip
        self.allocate_duration = Histogram(
            "widget_allocate_duration_seconds",
            "Time spent serving one Allocate call, in seconds.",
            ["resource"], buckets=ALLOCATE_BUCKETS, registry=r,
        )  # fmt: skip
        self.registrations = Counter(
            "widget_registrations_total",
            "Successful registrations with kubelet (more than one means kubelet restarted).",
            ["resource"], registry=r,
        )  # fmt: skip
        self.config_reloads = Counter(
            "widget_config_reloads_total",
            "Config reloads attempted after start-up, by result (success or failure).",
            ["result"], registry=r,
        )  # fmt: skip
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.dra_prepares = Counter(
            "widget_dra_prepare_total",
            "ResourceClaims prepared through DRA (NodePrepareResources), by result.",
            ["result"], registry=r,
        )  # fmt: skip
        self.dra_prepare_duration = Histogram(
            "widget_dra_prepare_duration_seconds",
            "Time spent preparing one ResourceClaim, in seconds.",
            buckets=PREPARE_BUCKETS, registry=r,
        )  # fmt: skip
        self.dra_slice_writes = Counter(
            "widget_dra_resourceslice_writes_total",
            "ResourceSlice creates, updates and deletes, by result (ok, conflict, error).",
            ["result"], registry=r,
        )  # fmt: skip
        for result in ("success", "error"):
            self.dra_prepares.labels(result)
        for result in ("ok", "conflict", "error"):
            self.dra_slice_writes.labels(result)
        self.fleet_writes = Counter(
            "widget_simulated_node_writes_total",
            "Status writes (server-side apply) to simulated nodes, by result (ok, error).",
            ["result"], registry=r,
        )  # fmt: skip
        self._children: dict[str, tuple[Counter, Counter, Histogram]] = {}
        self.after_allocate: Callable[[], None] | None = None
        """Called after every successful Allocate (the pod-resources monitor's cue)."""
        r.register(_StateCollector(snapshot))

    # -- WorkerEvents ---------------------------------------------------------------

    def allocated(self, resource: str, *, containers: int, devices: int, seconds: float) -> None:
        # The hot path: label children are looked up once per resource, not per call.
        children = self._children.get(resource) or self._resolve(resource)
        children[0].inc(containers)
        children[1].inc(devices)
        children[2].observe(seconds)
        if self.after_allocate is not None:
            self.after_allocate()

    def _resolve(self, resource: str) -> tuple[Counter, Counter, Histogram]:
        children = (
            self.allocations.labels(resource),
            self.allocated_devices.labels(resource),
            self.allocate_duration.labels(resource),
        )
        self._children[resource] = children
        return children

    def allocation_failed(self, resource: str, *, reason: str, seconds: float) -> None:
        self.allocation_errors.labels(resource, reason).inc()
        (self._children.get(resource) or self._resolve(resource))[2].observe(seconds)

    def registration_changed(self, resource: str, *, registered: bool) -> None:
        if registered:
            self.registrations.labels(resource).inc()

    # -- DRA -----------------------------------------------------------------------

    def prepared(self, *, result: str, seconds: float) -> None:
        self.dra_prepares.labels(result).inc()
        self.dra_prepare_duration.observe(seconds)

    def resourceslice_written(self, result: str) -> None:
        self.dra_slice_writes.labels(result).inc()

    def fleet_written(self, result: str) -> None:
        self.fleet_writes.labels(result).inc()

    def fleet_started(self) -> None:
        """Start the fleet's write series at 0 (a node agent exports none of them)."""
        for result in ("ok", "error"):
            self.fleet_writes.labels(result)

    # -- lifecycle -----------------------------------------------------------------

    def resource_added(self, resource: str) -> None:
        """Start the resource's series at 0 so rate() and increase() see the first event."""
        self.allocations.labels(resource)
        self.allocated_devices.labels(resource)
        self.registrations.labels(resource)
        self._resolve(resource)
        # Error series exist from the start at 0, so increase() sees the first error.
        for reason in ERROR_REASONS:
            self.allocation_errors.labels(resource, reason)

    def resource_removed(self, resource: str) -> None:
        """Drop every series of a resource that is no longer configured."""
        self._children.pop(resource, None)
        for metric in (
            self.allocations,
            self.allocated_devices,
            self.allocate_duration,
            self.registrations,
        ):
            _remove(metric, resource)
        for reason in ERROR_REASONS:
            _remove(self.allocation_errors, resource, reason)

    def reloaded(self, *, ok: bool) -> None:
        self.config_reloads.labels("success" if ok else "failure").inc()


def _remove(metric: Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
