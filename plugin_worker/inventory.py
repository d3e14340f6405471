"""The devices of one resource: effective health over time, change notification, allocation.

Owns what a container receives for a set of device IDs, which devices a preferred
allocation picks, and when scripted health faults flip (a timer set for the exact
next change, never a polling loop). Knows nothing of gRPC or sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

from plugin_worker import preferred
from plugin_worker.api import Device, Mount, ResourceSpec
from plugin_worker.health import device_health

logger = logging.getLogger(__name__)

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
    """What one container receives."""

    envs: dict[str, str]
    device_nodes: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    annotations: dict[str, str] | None = None
    cdi_devices: tuple[str, ...] = ()


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
        self._loop = asyncio.get_running_loop()
        self._spec = spec
        self._by_id = {d.id: d for d in spec.devices}
        now = self._loop.time()
        self._since = {d.id: now for d in spec.devices if d.fault is not None}
        """When each faulty device's timeline started (devices without a fault need none)."""
        self._changed = asyncio.Event()
        self._closed = False
        self._generation = 0
        """Bumped by `end_watches`: a watch ends when the generation it began in is over."""
        self._watching = 0
        self._unwatched = asyncio.Event()
        self._unwatched.set()
        self._timer: asyncio.TimerHandle | None = None
        self._effective = self._evaluate()

    @property
    def spec(self) -> ResourceSpec:
        return self._spec

    @property
    def devices(self) -> tuple[Device, ...]:
        """The devices as advertised now: health is the effective health."""
        return self._effective

    def replace(self, spec: ResourceSpec) -> bool:
        """Adopt a new spec for the same resource; wake watchers if the list changed."""
        if spec.name != self._spec.name:
            raise ValueError(f"inventory of {self._spec.name} cannot take {spec.name}")
        now = self._loop.time()
        # A device's fault timeline restarts when the device or its fault changes.
        self._since = {
            d.id: self._since[d.id] if self._by_id.get(d.id) == d else now
            for d in spec.devices
            if d.fault is not None
        }
        self._spec = spec
        self._by_id = {d.id: d for d in spec.devices}
        return self._refresh()

    def close(self) -> None:
        """End every watch and timer (the resource is going away)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._notify()

    def end_watches(self) -> None:
        """End the watches open now; later watches run as usual.

        kubelet reads a plugin's options only when it registers, and drops a new
        registration if the old ListAndWatch stream ends after it: a resource whose
        options change ends its streams, waits for `watches_ended`, then registers.
        """
        self._generation += 1
        self._notify()

    async def watches_ended(self) -> None:
        """Return once no watch is open."""
        await self._unwatched.wait()

    def _evaluate(self) -> tuple[Device, ...]:
        """Effective devices now; arms a timer for the next scripted change."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._since and not self._spec.failing:
            return self._spec.devices  # nothing scripted: configured health is the health
        now = self._loop.time()
        effective = []
        next_change: float | None = None
        for device in self._spec.devices:
            since = self._since.get(device.id, now)
            health, change = device_health(device, now - since, failing=self._spec.failing)
            effective.append(device if health == device.health else replace(device, health=health))
            if change is not None:
                at = since + change
                next_change = at if next_change is None else min(next_change, at)
        if next_change is not None and not self._closed:
            self._timer = self._loop.call_at(next_change, self._on_timer)
        return tuple(effective)

    def _on_timer(self) -> None:
        self._timer = None
        self._refresh()

    def _refresh(self) -> bool:
        before = self._effective
        self._effective = self._evaluate()
        if self._effective == before:
            return False
        old = {d.id: d.health for d in before}
        for device in self._effective:
            if old.get(device.id, device.health) != device.health:
                logger.info("[%s] device %s is now %s", self._spec.name, device.id, device.health)
        self._notify()
        return True

    def _notify(self) -> None:
        # Each change sets the current event and installs a fresh one, so every
        # watcher wakes once and then sees the newest list (changes coalesce).
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def watch(self) -> AsyncGenerator[tuple[Device, ...], None]:
        """Yield the device list now, then again after every change."""
        generation = self._generation
        self._watching += 1
        self._unwatched.clear()
        try:
            while not self._closed and generation == self._generation:
                changed = self._changed
                yield self._effective
                await changed.wait()
        finally:
            self._watching -= 1
            if not self._watching:
                self._unwatched.set()

    def allocate(self, device_ids: Sequence[str]) -> ContainerAllocation:
        """What a container asking for `device_ids` receives."""
        spec = self._spec
        if not device_ids:
            raise AllocationError(f"container request for {spec.name} lists no device IDs")
        if len(set(device_ids)) != len(device_ids):
            raise AllocationError(f"container request for {spec.name} repeats a device ID")
        unknown = [i for i in device_ids if i not in self._by_id]
        if unknown:
            raise UnknownDeviceError(spec.name, unknown)
        devices = [self._by_id[i] for i in device_ids]
        ids = ",".join(device_ids)
        # Replicas of one physical device share its path: hand each path out once.
        paths = tuple(dict.fromkeys(d.path for d in devices))
        joined = ",".join(paths)
        envs = dict(spec.envs)
        envs.update(
            {
                "WIDGET_VISIBLE_DEVICE_IDS": ids,
                "WIDGET_VISIBLE_DEVICES": joined,
                f"{spec.env_prefix}_VISIBLE_DEVICE_IDS": ids,
                f"{spec.env_prefix}_VISIBLE_DEVICES": joined,
            }
        )
        cdi = () if spec.cdi_kind is None else tuple(f"{spec.cdi_kind}={i}" for i in device_ids)
        return ContainerAllocation(
            envs=envs,
            device_nodes=tuple(p for p in paths if is_device_node(p)),
            mounts=spec.mounts,
            annotations=dict(spec.annotations),
            cdi_devices=cdi,
        )

    def preferred(
        self, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        """The resource's preferred-allocation policy applied to kubelet's request."""
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
        numa = {i: self._by_id[i].numa for i in (*available, *must_include)}
        return preferred.choose(self._spec.preferred_policy, available, must_include, size, numa)
