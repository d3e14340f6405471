"""From device entries to extended resources: grouping, names, stable device IDs.

Owns the rules that make the advertised state safe for kubelet: resource names
kubelet accepts, device IDs that never move to another device, environment
variable names that never collide.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace

from plugin_worker.api import HEALTHY, AllocateFaults, Device, Fault, Mount, ResourceSpec
from plugin_worker.k8s_names import (
    dns1123_subdomain_problems,
    extended_resource_name_problems,
)
from supervisor.errors import Problem

MAX_DEVICE_ID = 63  # kubelet's documented limit for Device.ID
MAX_REPLICAS = 100
SHARED_SUFFIX = ".shared"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_EXPLICIT_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_ENV_UNSAFE = re.compile(r"[^A-Z0-9]")


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One validated ``devices:`` item."""

    type: str
    model: str
    path: str
    id: str | None
    line: int | None
    index: int
    where: str = ""
    """Where the entry stands, e.g. ``devices[3]`` or ``nodes[0].devices[1]``."""
    health: str = HEALTHY
    numa: int | None = None
    fault: Fault | None = None


@dataclass(frozen=True, slots=True)
class ResourceSettings:
    """One validated ``resources:`` item: how a (type, model) resource behaves."""

    type: str
    model: str
    path: tuple[str | int, ...] = ()
    replicas: int = 1
    rename_shared: bool = False
    preferred_policy: str = "none"
    failing: bool = False
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    cdi: bool = False
    allocate_faults: AllocateFaults = field(default_factory=AllocateFaults)


def resource_name(domain: str, type_: str, model: str) -> str:
    return f"{domain}/{type_}-{model}"


def env_prefix(type_: str, model: str) -> str:
    """``snaffler``/``v1`` -> ``WIDGET_SNAFFLER_V1`` (a valid, upper-case identifier)."""
    return "WIDGET_" + _ENV_UNSAFE.sub("_", f"{type_}_{model}".upper())


def device_id(type_: str, model: str, path: str) -> str:
    """A device ID that depends only on the device itself, never on list position.

    ``snaffler``/``v1``/``/dev/wibble1`` -> ``snaffler-v1-wibble1``. When the path
    had to be altered to fit (unsafe characters, length), a digest of the exact path
    is appended so that two different paths can never share an ID.
    """
    relative = path.removeprefix("/dev/").lstrip("/")
    slug = _ID_UNSAFE.sub("-", relative)
    base = f"{type_}-{model}-{slug}"
    if slug == relative and len(base) <= MAX_DEVICE_ID:
        return base
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return f"{base[: MAX_DEVICE_ID - len(digest) - 1].rstrip('-.')}-{digest}"


def replica_id(base: str, replica: int) -> str:
    """``snaffler-v1-wibble1`` replica 2 -> ``snaffler-v1-wibble1::2`` (kept within 63)."""
    suffix = f"::{replica}"
    if len(base) + len(suffix) <= MAX_DEVICE_ID:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:10]
    return f"{base[: MAX_DEVICE_ID - len(suffix) - len(digest) - 1]}-{digest}{suffix}"


def _advertised(entry: DeviceEntry, ident: str, replicas: int) -> list[Device]:
    """The device as kubelet sees it: itself, or `replicas` shares of it."""
    base = Device(
        id=ident, path=entry.path, health=entry.health, numa=entry.numa, fault=entry.fault
    )
    if replicas == 1:
        return [base]
    return [
        replace(base, id=replica_id(ident, k), replica_of=ident) for k in range(1, replicas + 1)
    ]


def _name_problems(
    name: str, prefix: str, where: str, seen_names: dict[str, str], seen_prefixes: dict[str, str]
) -> list[str]:
    """Why kubelet would refuse `name`, or why it clashes with an earlier resource."""
    problems = extended_resource_name_problems(name)
    if name != name.lower():
        problems.append("must be lower-case")
    if name in seen_names:
        problems.append(f"is also what {seen_names[name]} gives; rename one type or model")
    if prefix in seen_prefixes and seen_prefixes[prefix] != name:
        problems.append(
            f"would share environment variables {prefix}_* with {seen_prefixes[prefix]!r}; "
            "rename one type or model"
        )
    seen_names.setdefault(name, where)
    seen_prefixes.setdefault(prefix, name)
    return problems


def build_resources(
    domain: str,
    entries: list[DeviceEntry],
    source: str,
    settings: dict[tuple[str, str], ResourceSettings] | None = None,
) -> tuple[tuple[ResourceSpec, ...], list[Problem]]:
    """Group entries by (type, model); return the specs, or every problem found."""
    problems: list[Problem] = []
    for message in dns1123_subdomain_problems(domain):
        problems.append(Problem(source, None, "domain", message))
    if problems:
        return (), problems

    groups: dict[tuple[str, str], list[DeviceEntry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.type, entry.model)].append(entry)

    seen_paths: dict[str, DeviceEntry] = {}
    seen_prefixes: dict[str, str] = {}
    seen_names: dict[str, str] = {}
    specs = []
    for (type_, model), members in groups.items():
        first = members[0]
        options = (settings or {}).get((type_, model)) or ResourceSettings(type_, model)
        name = resource_name(domain, type_, model)
        if options.rename_shared and options.replicas > 1:
            name += SHARED_SUFFIX

        def problem(entry: DeviceEntry, key: str, message: str) -> None:
            problems.append(Problem(source, entry.line, f"{entry.where}.{key}", message))

        prefix = env_prefix(type_, model)
        for message in _name_problems(name, prefix, first.where, seen_names, seen_prefixes):
            problem(first, "type/model", f"resource {name!r} {message}")

        devices: dict[str, Device] = {}
        for entry in members:
            duplicate = seen_paths.get(entry.path)
            if duplicate is not None:
                at = f" (line {duplicate.line})" if duplicate.line else ""
                problem(
                    entry, "device", f"{entry.path!r} is already listed at {duplicate.where}{at}"
                )
                continue
            seen_paths[entry.path] = entry
            if entry.id is not None and (
                len(entry.id) > MAX_DEVICE_ID or not _EXPLICIT_ID.match(entry.id)
            ):
                problem(
                    entry,
                    "id",
                    f"{entry.id!r} must be 1-{MAX_DEVICE_ID} characters of letters, digits, "
                    "'-', '_' or '.', starting and ending with a letter or digit",
                )
                continue
            ident = entry.id if entry.id is not None else device_id(type_, model, entry.path)
            if ident in devices:
                problem(entry, "id", f"device ID {ident!r} is used twice in resource {name!r}")
                continue
            for device in _advertised(entry, ident, options.replicas):
                devices[device.id] = device
        specs.append(
            ResourceSpec(
                name=name,
                devices=tuple(sorted(devices.values(), key=lambda d: d.id)),
                env_prefix=prefix,
                labels=(("type", type_), ("model", model)),
                envs=options.envs,
                mounts=options.mounts,
                annotations=options.annotations,
                cdi_kind=name if options.cdi else None,
                preferred_policy=options.preferred_policy,
                allocate_faults=options.allocate_faults,
                failing=options.failing,
            )
        )
    return tuple(sorted(specs, key=lambda s: s.name)), problems
