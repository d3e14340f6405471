"""The mock DRA driver: the node's DRA resources, their health over time, and prepare.

Implements `api.Driver` for the kubelet plugin. Each resource keeps an `Inventory` of its
physical devices (replicas are shares of one DRA device, so they count once), which runs
its scripted health faults and computes what a container receives, exactly as in
device-plugin mode. What the pool offers is every healthy device: an Unhealthy device is
removed from the ResourceSlices (no scheduler allocates it, on any Kubernetes version) and
reported Unhealthy on the health stream, so kubelet shows it in a pod's
``allocatedResourcesStatus`` if a pod holds it.

Prepare reads each claim (the request names only namespace, name and UID), takes the
devices allocated from this driver's pool, checks them all, then writes one CDI spec
file for the claim (atomically: nothing half-written stays) and returns its CDI device
IDs. Both are idempotent, as kubelet retries and re-prepares after it restarts; the
spec files are the record of what is prepared, so a restarted supervisor knows it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from dra_driver.api import ClaimRef, DeviceHealth, PreparedDevice, PrepareResult
from dra_driver.claim_cdi import (
    FILE_PREFIX,
    cdi_device_name,
    cdi_kind,
    claim_document,
    spec_file_name,
)
from dra_driver.objects import PhysicalDevice, physical_devices, slice_device
from plugin_worker.api import HEALTHY, Device, ResourceSpec
from plugin_worker.files import write_atomically
from plugin_worker.inventory import ContainerAllocation, Inventory

logger = logging.getLogger(__name__)

HEALTH_RESEND = 20.0
"""Seconds between full health reports when nothing changes: kubelet reads a device as
Unknown after 30 s without one."""

ReadClaim = Callable[[str, str], Awaitable[Mapping[str, Any]]]
"""(namespace, name) -> the ResourceClaim's JSON; raises `ClaimError` with the reason."""


class ClaimError(Exception):
    """A claim cannot be read; the message says why (it is the claim's error to kubelet)."""


class DraEvents(Protocol):
    def prepared(self, *, result: str, seconds: float) -> None:
        """One claim's prepare ended: result "success" or "error"."""


@dataclass
class _Resource:
    spec: ResourceSpec
    inventory: Inventory
    by_name: dict[str, PhysicalDevice]
    random: random.Random
    watcher: asyncio.Task[None] | None = None


def physical_spec(spec: ResourceSpec) -> ResourceSpec:
    """The spec with one device per physical device (the first replica's, under its own ID)."""
    devices = tuple(replace(p.device, id=p.id, replica_of=None) for p in physical_devices(spec))
    return replace(spec, devices=devices, cdi_kind=None)


class MockDriver:
    """See the module docstring; `update` gives it the node's DRA resources."""

    def __init__(
        self,
        *,
        driver: str,
        node: str,
        cdi_dir: Path,
        read_claim: ReadClaim,
        events: DraEvents | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.driver, self.node, self.cdi_dir = driver, node, cdi_dir
        self._read_claim = read_claim
        self._events = events
        self._on_change = on_change or (lambda: None)
        self._resources: dict[str, _Resource] = {}
        self._prepared: dict[str, tuple[str, ...]] = self._prepared_on_disk()
        """Claim UID -> the resources it was prepared with."""
        self._health_version = 0
        self._health_changed = asyncio.Condition()

    # -- the resources -------------------------------------------------------------

    def update(self, specs: Sequence[ResourceSpec]) -> None:
        """Serve exactly these resources from now on (their faults' timelines go on for
        devices that did not change)."""
        wanted = {spec.name: spec for spec in specs}
        for name in [n for n in self._resources if n not in wanted]:
            self._close(self._resources.pop(name))
        for name, spec in wanted.items():
            physical = physical_spec(spec)
            by_name = {p.name: p for p in physical_devices(spec)}
            known = self._resources.get(name)
            if known is None:
                resource = _Resource(spec, Inventory(physical), by_name,
                                     random.Random(spec.allocate_faults.seed))  # fmt: skip
                resource.watcher = asyncio.create_task(self._follow(resource), name=f"dra {name}")
                self._resources[name] = resource
                continue
            if known.spec.allocate_faults != spec.allocate_faults:
                known.random = random.Random(spec.allocate_faults.seed)
            known.spec, known.by_name = spec, by_name
            known.inventory.replace(physical)
        self._changed()

    def close(self) -> None:
        for resource in self._resources.values():
            self._close(resource)
        self._resources.clear()

    def _close(self, resource: _Resource) -> None:
        resource.inventory.close()
        if resource.watcher is not None:
            resource.watcher.cancel()

    async def _follow(self, resource: _Resource) -> None:
        async for _ in resource.inventory.watch():
            self._changed()

    def _changed(self) -> None:
        self._health_version += 1
        self._on_change()
        asyncio.get_running_loop().create_task(self._wake_health())

    async def _wake_health(self) -> None:
        async with self._health_changed:
            self._health_changed.notify_all()

    def specs(self) -> list[ResourceSpec]:
        return [r.spec for r in self._resources.values()]

    def devices(self, name: str) -> tuple[Device, ...]:
        """The resource's physical devices, with their health now."""
        return self._resources[name].inventory.devices

    def offered(self) -> dict[str, list[dict[str, Any]]]:
        """What the pool offers now: each resource's healthy devices, as slice entries."""
        offered: dict[str, list[dict[str, Any]]] = {}
        for name, resource in sorted(self._resources.items()):
            healthy = {d.id for d in resource.inventory.devices if d.health == HEALTHY}
            labels = dict(resource.spec.labels)
            offered[name] = [
                slice_device(resource.spec, p, labels)
                for p in sorted(resource.by_name.values(), key=lambda p: p.name)
                if p.id in healthy
            ]
        return offered

    def prepared_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self._resources, 0)
        for resources in self._prepared.values():
            for name in resources:
                counts[name] = counts.get(name, 0) + 1
        return counts

    # -- Driver: health ------------------------------------------------------------

    async def health(self) -> AsyncGenerator[Sequence[DeviceHealth], None]:
        """A full report now, after each change, and every HEALTH_RESEND seconds."""
        while True:
            seen = self._health_version
            yield self._health_report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_after(seen), HEALTH_RESEND)

    async def _health_after(self, seen: int) -> None:
        async with self._health_changed:
            while self._health_version == seen:
                await self._health_changed.wait()

    def _health_report(self) -> list[DeviceHealth]:
        now = time.time()
        report = []
        for resource in self._resources.values():
            health = {d.id: d.health for d in resource.inventory.devices}
            for physical in resource.by_name.values():
                state = health.get(physical.id, HEALTHY)
                report.append(DeviceHealth(self.node, physical.name, state, now))
        return report

    # -- Driver: prepare -----------------------------------------------------------

    async def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        results = await asyncio.gather(*(self._timed_prepare(claim) for claim in claims))
        return {claim.uid: result for claim, result in zip(claims, results, strict=True)}

    async def _timed_prepare(self, ref: ClaimRef) -> PrepareResult:
        started = time.monotonic()
        try:
            result = await self._prepare(ref)
        except Exception as error:  # a bug of ours fails this claim, not the plugin
            logger.exception("preparing claim %s/%s failed", ref.namespace, ref.name)
            result = PrepareResult(error=f"internal error: {type(error).__name__}: {error}")
        if result.error:
            logger.warning("claim %s/%s not prepared: %s", ref.namespace, ref.name, result.error)
        if self._events is not None:
            self._events.prepared(
                result="error" if result.error else "success", seconds=time.monotonic() - started
            )
        return result

    async def _prepare(self, ref: ClaimRef) -> PrepareResult:
        where = f"ResourceClaim {ref.namespace}/{ref.name}"
        try:
            claim = await self._read_claim(ref.namespace, ref.name)
        except ClaimError as error:
            return PrepareResult(error=f"cannot read {where}: {error}")
        uid = claim.get("metadata", {}).get("uid")
        if uid != ref.uid:
            return PrepareResult(error=f"{where} has UID {uid}, not {ref.uid} (it was replaced)")
        allocation = (claim.get("status") or {}).get("allocation")
        if not allocation:
            return PrepareResult(error=f"{where} is not allocated")
        results = [r for r in allocation.get("devices", {}).get("results", ())
                   if r.get("driver") == self.driver]  # fmt: skip
        groups: dict[tuple[str, str], list[PhysicalDevice]] = defaultdict(list)
        unknown = []
        for result in results:
            found = self._find(result)
            if found is None:
                unknown.append(f"{result.get('pool')}/{result.get('device')}")
                continue
            groups[(result.get("request", ""), found[0])].append(found[1])
        if unknown:
            return PrepareResult(
                error=f"{where} is allocated devices this node's driver {self.driver} does not "
                f"have: {', '.join(unknown)}"
            )
        refused = await self._admission_faults({resource for _, resource in groups})
        if refused:
            return PrepareResult(error=refused)
        allocations: list[ContainerAllocation] = []
        devices: list[PreparedDevice] = []
        for index, ((request, resource), members) in enumerate(sorted(groups.items())):
            inventory = self._resources[resource].inventory
            allocations.append(inventory.allocate([p.id for p in members]))
            cdi_id = f"{cdi_kind(self.driver)}={cdi_device_name(ref.uid, index)}"
            for position, physical in enumerate(members):
                devices.append(PreparedDevice(
                    pool=self.node, device=physical.name, requests=(request,),
                    # The group's one CDI device carries every member's edits: named once.
                    cdi_device_ids=(cdi_id,) if position == 0 else (),
                ))  # fmt: skip
        resources = tuple(sorted({resource for _, resource in groups}))
        if groups:
            document = claim_document(
                self.driver, claim_uid=ref.uid, claim=f"{ref.namespace}/{ref.name}",
                resources=resources, groups=allocations,
            )  # fmt: skip
            self.cdi_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(
                self.cdi_dir / spec_file_name(ref.uid), json.dumps(document, indent=2) + "\n"
            )
        self._prepared[ref.uid] = resources
        logger.info("prepared claim %s/%s: %d devices", ref.namespace, ref.name, len(devices))
        return PrepareResult(devices=tuple(devices))

    def _find(self, result: Mapping[str, Any]) -> tuple[str, PhysicalDevice] | None:
        if result.get("pool") != self.node:
            return None
        name = result.get("device")
        for resource_name, resource in self._resources.items():
            if name in resource.by_name:
                return resource_name, resource.by_name[name]
        return None

    async def _admission_faults(self, resources: set[str]) -> str:
        """`allocate.delay` and `allocate.failureRate` of the claim's resources, applied to
        prepare; the refusal, or ""."""
        faults = {name: self._resources[name] for name in sorted(resources)}
        delay = max((r.spec.allocate_faults.delay for r in faults.values()), default=0.0)
        if delay:
            await asyncio.sleep(delay)
        for name, resource in faults.items():
            rate = resource.spec.allocate_faults.failure_rate
            if rate and resource.random.random() < rate:
                return f"injected failure (allocate.failureRate {rate:g} of {name})"
        return ""

    # -- Driver: unprepare ---------------------------------------------------------

    async def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        errors = {}
        for claim in claims:
            try:
                (self.cdi_dir / spec_file_name(claim.uid)).unlink(missing_ok=True)
            except OSError as error:
                errors[claim.uid] = f"cannot remove the CDI spec of {claim.uid}: {error}"
                continue
            self._prepared.pop(claim.uid, None)
            errors[claim.uid] = ""
            logger.info("unprepared claim %s/%s", claim.namespace, claim.name)
        return errors

    def _prepared_on_disk(self) -> dict[str, tuple[str, ...]]:
        """Claims prepared before a restart, from their CDI spec files."""
        prepared: dict[str, tuple[str, ...]] = {}
        with contextlib.suppress(OSError):
            for path in self.cdi_dir.glob(FILE_PREFIX + "*.json"):
                try:
                    document = json.loads(path.read_text())
                    listed = document["annotations"]["widget.ska-sdp.org/resources"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                uid = path.name.removeprefix(FILE_PREFIX).removesuffix(".json")
                prepared[uid] = tuple(listed.split(",")) if listed else ()
        return prepared
