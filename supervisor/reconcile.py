"""Reload as reconciliation: what to stop, start and update to reach the desired resources.

A pure function over resource specs, tested without I/O. `runtime` applies the plan
in a fixed order: stop first (freeing sockets and names), then update, then start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from plugin_worker.api import ResourceSpec


@dataclass(frozen=True, slots=True)
class Plan:
    stop: tuple[str, ...]
    start: tuple[ResourceSpec, ...]
    update: tuple[ResourceSpec, ...]
    unchanged: tuple[str, ...]

    def summary(self) -> str:
        """What changes, in an operator's words: ``+1 resource, -1 resource, 2 updated``."""
        parts = []
        if self.start:
            parts.append(f"+{len(self.start)} {_resources(len(self.start))}")
        if self.stop:
            parts.append(f"-{len(self.stop)} {_resources(len(self.stop))}")
        if self.update:
            parts.append(f"{len(self.update)} updated")
        parts.append(f"{len(self.unchanged)} unchanged")
        return ", ".join(parts)


def _resources(count: int) -> str:
    return "resource" if count == 1 else "resources"


def plan(desired: Mapping[str, ResourceSpec], running: Mapping[str, ResourceSpec]) -> Plan:
    """Compare by resource name; a resource whose spec is equal is left alone."""
    stop = tuple(sorted(name for name in running if name not in desired))
    start = tuple(desired[name] for name in sorted(desired) if name not in running)
    update = tuple(
        desired[name]
        for name in sorted(desired)
        if name in running and desired[name] != running[name]
    )
    unchanged = tuple(
        sorted(name for name in desired if name in running and desired[name] == running[name])
    )
    return Plan(stop=stop, start=start, update=update, unchanged=unchanged)


def changes(old: ResourceSpec, new: ResourceSpec) -> str:
    """What differs between two specs of one resource, in an operator's words."""
    parts = []
    if old.devices != new.devices:
        parts.append(f"device list ({len(new.devices)} devices)")
    if old.preferred_policy != new.preferred_policy:
        parts.append(f"preferred allocation {old.preferred_policy} -> {new.preferred_policy}")
    if old.failing != new.failing:
        parts.append("failing on" if new.failing else "failing off")
    if old.cdi_kind != new.cdi_kind:
        parts.append("CDI on" if new.cdi_kind else "CDI off")
    for words, before, after in (
        ("environment", old.envs, new.envs),
        ("mounts", old.mounts, new.mounts),
        ("annotations", old.annotations, new.annotations),
        ("admission faults", old.allocate_faults, new.allocate_faults),
    ):
        if before != after:
            parts.append(words)
    return ", ".join(parts) or "settings"
