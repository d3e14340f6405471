"""What a simulated node's status carries for its mock resources: pure functions, no I/O.

A node without a kubelet has no device plugin, so the extended resources go straight
into ``status.capacity`` (every device, replicas included) and ``status.allocatable``
(the healthy ones), exactly the counts a kubelet would report for a node agent with the
same config. Health follows the same rules as on a node (`plugin_worker.health`), with
each fault timeline starting when the node was first seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dra_driver.objects import physical_devices, slice_device
from plugin_worker.api import DEVICE_PLUGIN, DRA, HEALTHY, ResourceSpec
from plugin_worker.health import device_health


@dataclass(frozen=True, slots=True)
class NodeResources:
    capacity: dict[str, str]
    allocatable: dict[str, str]
    next_change: float | None
    """The elapsed time (since the node appeared) at which a scripted fault next changes
    a count; None: never."""


def node_resources(specs: Sequence[ResourceSpec], elapsed: float) -> NodeResources:
    """The status of a node whose resources are `specs`, `elapsed` seconds after it appeared.

    Only device-plugin resources: DRA resources are ResourceSlices, not status counts.
    """
    capacity: dict[str, str] = {}
    allocatable: dict[str, str] = {}
    soonest: float | None = None
    for spec in specs:
        if spec.api != DEVICE_PLUGIN:
            continue
        healthy = 0
        for device in spec.devices:
            health, change = device_health(device, elapsed, failing=spec.failing)
            healthy += health == HEALTHY
            if change is not None and (soonest is None or change < soonest):
                soonest = change
        capacity[spec.name] = str(len(spec.devices))
        allocatable[spec.name] = str(healthy)
    return NodeResources(capacity, allocatable, soonest)


def node_slices(
    specs: Sequence[ResourceSpec], elapsed: float
) -> tuple[dict[str, list[dict[str, Any]]], float | None]:
    """The DRA devices a node's pool offers `elapsed` seconds after it appeared (healthy
    ones only, as a node agent offers them), by resource, and when that next changes."""
    offered: dict[str, list[dict[str, Any]]] = {}
    soonest: float | None = None
    for spec in specs:
        if spec.api != DRA:
            continue
        labels = dict(spec.labels)
        devices = []
        for physical in physical_devices(spec):
            health, change = device_health(physical.device, elapsed, failing=spec.failing)
            if change is not None and (soonest is None or change < soonest):
                soonest = change
            if health == HEALTHY:
                devices.append(slice_device(spec, physical, labels))
        offered[spec.name] = devices
    return offered, soonest
