"""The devices of one resource: current list, change notification, allocation logic.

Owns what a container receives for a set of device IDs and which devices a
preferred allocation picks. Knows nothing of gRPC or sockets: `server` translates.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from plugin_worker.api import Device, ResourceSpec

DEVICE_PERMISSIONS = "rw"
_MAX_NAMED_IN_ERROR = 5


class AllocationError(ValueError):
    """A request kubelet should never send; reported as INVALID_ARGUMENT."""

    reason = "invalid_request"


class UnknownDeviceError(AllocationError):
    reason = "unknown_device"

    def __init__(self, resource: str, unknown: Sequence[str]) -> None:
        shown = ", ".join(repr(i[:80]) for i in unknown[:_MAX_NAMED_IN_ERROR])
        more = len(unknown) - _MAX_NAMED_IN_ERROR
        tail = f" and {more} more" if more > 0 else ""
        super().__init__(f"unknown device ID(s) for {resource}: {shown}{tail}")
        self.unknown = tuple(unknown)


@dataclass(frozen=True, slots=True)
class ContainerAllocation:
    """What one container receives: environment and the host device nodes to expose."""

    envs: dict[str, str]
    device_nodes: tuple[str, ...]


def is_device_node(path: str) -> bool:
    """True only for an existing character or block device.

    Mock paths usually do not exist, and a container runtime refuses to start a
    container whose DeviceSpec names a regular file, so only real nodes qualify.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


class Inventory:
    """The live device list of one resource and the allocation rules over it."""

    def __init__(self, spec: ResourceSpec) -> None:
        self._spec = spec
        self._by_id = {d.id: d for d in spec.devices}
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def spec(self) -> ResourceSpec:
        return self._spec

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._spec.devices

    def replace(self, spec: ResourceSpec) -> bool:
        """Adopt a new spec for the same resource; wake watchers if devices changed."""
        if spec.name != self._spec.name:
            raise ValueError(f"inventory of {self._spec.name} cannot take {spec.name}")
        changed = spec.devices != self._spec.devices
        self._spec = spec
        if changed:
            self._by_id = {d.id: d for d in spec.devices}
            self._notify()
        return changed

    def close(self) -> None:
        """End every watch (the resource is going away)."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        # Each change sets the current event and installs a fresh one, so every
        # watcher wakes once and then sees the newest list (changes coalesce).
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def watch(self) -> AsyncIterator[tuple[Device, ...]]:
        """Yield the device list now, then again after every change."""
        while not self._closed:
            changed = self._changed
            yield self._spec.devices
            await changed.wait()

    def allocate(self, device_ids: Sequence[str]) -> ContainerAllocation:
        """What a container asking for `device_ids` receives."""
        if not device_ids:
            raise AllocationError(f"container request for {self._spec.name} lists no device IDs")
        if len(set(device_ids)) != len(device_ids):
            raise AllocationError(f"container request for {self._spec.name} repeats a device ID")
        unknown = [i for i in device_ids if i not in self._by_id]
        if unknown:
            raise UnknownDeviceError(self._spec.name, unknown)
        devices = [self._by_id[i] for i in device_ids]
        ids = ",".join(device_ids)
        paths = ",".join(d.path for d in devices)
        prefix = self._spec.env_prefix
        envs = {
            "WIDGET_VISIBLE_DEVICE_IDS": ids,
            "WIDGET_VISIBLE_DEVICES": paths,
            f"{prefix}_VISIBLE_DEVICE_IDS": ids,
            f"{prefix}_VISIBLE_DEVICES": paths,
        }
        nodes = tuple(dict.fromkeys(d.path for d in devices if is_device_node(d.path)))
        return ContainerAllocation(envs=envs, device_nodes=nodes)

    def preferred(
        self, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        """Kubelet's default choice made explicit: required devices first, then in order."""
        if size < 0:
            raise AllocationError(f"allocation_size {size} is negative")
        unknown = [i for i in (*available, *must_include) if i not in self._by_id]
        if unknown:
            raise UnknownDeviceError(self._spec.name, list(dict.fromkeys(unknown)))
        if len(set(must_include)) > size:
            raise AllocationError(
                f"must_include_deviceIDs has {len(set(must_include))} devices, "
                f"more than allocation_size {size}"
            )
        chosen = dict.fromkeys(must_include)
        for device_id in available:
            if len(chosen) >= size:
                break
            chosen.setdefault(device_id)
        return list(chosen)
