"""The Kubernetes objects a config becomes in DRA mode: ResourceSlice devices and DeviceClasses.

Pure functions from `ResourceSpec`s to `resource.k8s.io/v1` documents (plain dicts, as
the API server's JSON): what `widget-supervisor resources --output dra` prints, what the
slice publisher writes and what the chart's DeviceClasses are tested against. No I/O.

Sharing (``replicas: N``) is DRA's own: one device with ``allowMultipleAllocations`` and a
consumable ``shares`` capacity of N, of which each claim takes 1 unless it asks for more
(KEP-5075, consumable capacity), not N devices named ``…::k``, which are not DNS labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dra_driver.names import device_class_name, device_name
from plugin_worker.api import AttributeValue, Device, ResourceSpec, Version

API_VERSION = "resource.k8s.io/v1"
MAX_DEVICES_PER_SLICE = 128
"""resource.k8s.io/v1: ResourceSliceMaxDevices."""
SHARES = "shares"
"""The consumable capacity of a shared device: how many claims may hold it at once."""
MANAGED_BY = "widget-device-plugin"
RESOURCE_ANNOTATION = "widget.ska-sdp.org/resource"
"""On each slice: the resource its devices belong to (one resource per slice)."""


@dataclass(frozen=True, slots=True)
class PhysicalDevice:
    """One DRA device: a configured device, however many times it is shared."""

    name: str
    """Its name in the pool (a DNS label)."""
    device: Device
    """The first of its replicas: ID, path and health are the same for all of them."""
    replica_ids: tuple[str, ...]
    """The device-plugin IDs of its replicas (just its ID when unshared)."""

    @property
    def id(self) -> str:
        return self.device.replica_of or self.device.id


def physical_devices(spec: ResourceSpec) -> list[PhysicalDevice]:
    """The resource's devices as DRA counts them, sorted by name."""
    replicas: dict[str, list[Device]] = {}
    for device in spec.devices:
        replicas.setdefault(device.replica_of or device.id, []).append(device)
    found = [
        PhysicalDevice(device_name(ident), group[0], tuple(d.id for d in group))
        for ident, group in replicas.items()
    ]
    return sorted(found, key=lambda p: p.name)


def _attribute(value: AttributeValue) -> dict[str, Any]:
    # bool before int: a bool is an int in Python.
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, Version):
        return {"version": value.text}
    return {"string": value}


def slice_device(
    spec: ResourceSpec, physical: PhysicalDevice, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One entry of a ResourceSlice's ``spec.devices``; `labels`: ``dict(spec.labels)``,
    given when building many devices of one spec."""
    device = physical.device
    labels = dict(spec.labels) if labels is None else labels
    attributes: dict[str, AttributeValue] = {
        "type": labels["type"], "model": labels["model"], "path": device.path,
    }  # fmt: skip
    if device.numa is not None:
        attributes["numa"] = device.numa
    attributes.update(spec.attributes)
    attributes.update(device.attributes)
    capacity: dict[str, dict[str, Any]] = {
        name: {"value": value} for name, value in (*spec.capacity, *device.capacity)
    }
    entry: dict[str, Any] = {
        "name": physical.name,
        "attributes": {name: _attribute(v) for name, v in sorted(attributes.items())},
    }
    if spec.replicas > 1:
        entry["allowMultipleAllocations"] = True
        capacity[SHARES] = {
            "value": str(spec.replicas),
            "requestPolicy": {
                "default": "1",
                "validRange": {"min": "1", "max": str(spec.replicas), "step": "1"},
            },
        }
    if capacity:
        entry["capacity"] = dict(sorted(capacity.items()))
    return entry


def chunks(devices: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """Devices split into slice-sized lists, in order (stable under appends at the end)."""
    step = MAX_DEVICES_PER_SLICE
    return [[dict(d) for d in devices[i : i + step]] for i in range(0, len(devices), step)]


def slice_document(
    *,
    node: str,
    driver: str,
    resource: str,
    devices: list[dict[str, Any]],
    generation: int,
    slice_count: int,
    owner: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ResourceSlice of the node's pool (named after the node), as upstream's helper
    writes it: ``generateName`` ``<node>-<driver>-``, owned by the Node when its UID is
    known so that it goes away with the node."""
    metadata: dict[str, Any] = {
        "generateName": f"{node}-{driver}-"[:200],
        "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        "annotations": {RESOURCE_ANNOTATION: resource},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": owner["name"], "uid": owner["uid"],
             "controller": True},
        ]  # fmt: skip
    return {
        "apiVersion": API_VERSION,
        "kind": "ResourceSlice",
        "metadata": metadata,
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": slice_count},
            "devices": devices,
        },
    }


def device_class_selector(spec: ResourceSpec, driver: str) -> str:
    """The CEL expression selecting exactly the resource's devices."""
    return (
        f'device.driver == "{driver}" && '
        f'device.attributes["{driver}"].type == "{spec.type}" && '
        f'device.attributes["{driver}"].model == "{spec.model}"'
    )


def device_class(spec: ResourceSpec, driver: str) -> dict[str, Any]:
    """The DeviceClass of one resource; `extendedResourceName` lets a pod that asks for
    ``<domain>/<type>-<model>: 1`` be served by DRA (KEP-5004, where the cluster enables it)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceClass",
        "metadata": {
            "name": device_class_name(spec.type, spec.model, driver),
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "spec": {
            "selectors": [{"cel": {"expression": device_class_selector(spec, driver)}}],
            "extendedResourceName": spec.name,
        },
    }


def device_classes(specs: Iterable[ResourceSpec], driver: str) -> list[dict[str, Any]]:
    return [device_class(spec, driver) for spec in specs]
