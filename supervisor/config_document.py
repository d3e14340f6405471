"""From a schema-valid config tree to typed values: devices, resource settings, node entries.

The tree has passed `config_schema`, so nothing here checks a rule: it reads the values and
fills in the defaults (the same as the schema's "default" annotations, which a test checks).
Which entries apply to a node, and the rules spanning several values, are `resources`' job.
"""

from __future__ import annotations

from typing import Any

from plugin_worker.api import (
    DEVICE_PLUGIN,
    HEALTHY,
    AllocateFaults,
    Attributes,
    Capacity,
    Fault,
    Mount,
    Version,
)
from supervisor.config_schema import parse_duration
from supervisor.errors import Path_
from supervisor.resources import DeviceEntry, ResourceSettings, Section


def read_api(tree: dict[str, Any]) -> str:
    """The top-level api: what serves every resource that does not choose its own."""
    api: str = tree.get("api", DEVICE_PLUGIN)
    return api


def read_sections(tree: dict[str, Any]) -> tuple[Section, ...]:
    """The top level, then each ``nodes`` entry, in file order."""
    sections = [_section(tree, ())]
    for index, node in enumerate(tree.get("nodes", ())):
        at: Path_ = ("nodes", index)
        replaces = node.get("mode", "add") == "replace"
        sections.append(_section(node, at, match=node["match"], replaces=replaces))
    return tuple(sections)


def _section(
    m: dict[str, Any], at: Path_, *, match: str | None = None, replaces: bool = False
) -> Section:
    where = (*at, "devices")
    entries = tuple([_device(item, (*where, i)) for i, item in enumerate(m.get("devices", ()))])
    settings = tuple(
        _settings(item, (*at, "resources", i)) for i, item in enumerate(m.get("resources", ()))
    )
    return Section(at=at, entries=entries, settings=settings, match=match, replaces=replaces)


def _device(item: dict[str, Any], at: Path_) -> DeviceEntry:
    if len(item) == 3:  # the common case: just type, model and device
        return DeviceEntry(item["type"], item["model"], item["device"], None, at)
    faults = item.get("faults")
    return DeviceEntry(
        type=item["type"], model=item["model"], path=item["device"], id=item.get("id"), at=at,
        health=item.get("health", HEALTHY), numa=item.get("numa"),
        fault=None if faults is None else _fault(faults),
        attributes=_attributes(item.get("attributes")), capacity=_capacity(item.get("capacity")),
    )  # fmt: skip


def _attributes(m: dict[str, Any] | None) -> Attributes:
    if not m:
        return ()
    return tuple(
        sorted((k, Version(v["version"]) if isinstance(v, dict) else v) for k, v in m.items())
    )


def _capacity(m: dict[str, Any] | None) -> Capacity:
    return tuple(sorted((k, str(v)) for k, v in m.items())) if m else ()


def _seconds(value: object) -> float:
    seconds = parse_duration(value)
    assert seconds is not None, "the schema admits only durations here"
    return seconds


def _fault(m: dict[str, Any]) -> Fault:
    recover, flap = m.get("recoverAfter"), m.get("flapPeriod")
    return Fault(
        unhealthy_after=_seconds(m.get("unhealthyAfter", 0)),
        recover_after=None if recover is None else _seconds(recover),
        flap_period=None if flap is None else _seconds(flap),
    )


def _settings(m: dict[str, Any], at: Path_) -> ResourceSettings:
    faults = m.get("allocate")
    return ResourceSettings(
        type=m["type"], model=m["model"], at=at, replicas=m.get("replicas", 1),
        rename_shared=m.get("renameShared", False),
        preferred_policy=m.get("preferredAllocation", "none"), failing=m.get("failing", False),
        envs=tuple(sorted(m.get("envs", {}).items())),
        mounts=tuple(_mount(x) for x in m.get("mounts", ())),
        annotations=tuple(sorted(m.get("annotations", {}).items())), cdi=m.get("cdi", False),
        allocate_faults=AllocateFaults() if faults is None else _allocate(faults),
        api=m.get("api"), attributes=_attributes(m.get("attributes")),
        capacity=_capacity(m.get("capacity")),
    )  # fmt: skip


def _mount(m: dict[str, Any]) -> Mount:
    return Mount(
        container_path=m["containerPath"],
        host_path=m["hostPath"],
        read_only=m.get("readOnly", True),
    )


def _allocate(m: dict[str, Any]) -> AllocateFaults:
    return AllocateFaults(
        delay=_seconds(m.get("delay", 0)),
        failure_rate=float(m.get("failureRate", 0)),
        seed=m.get("seed"),
    )
