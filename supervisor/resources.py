"""From device entries to extended resources: grouping, names, stable device IDs.

Owns the rules that make the advertised state safe for kubelet: resource names
kubelet accepts, device IDs that never move to another device, environment
variable names that never collide.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass

from plugin_worker.api import Device, ResourceSpec
from plugin_worker.k8s_names import (
    dns1123_subdomain_problems,
    extended_resource_name_problems,
)
from supervisor.errors import Problem

MAX_DEVICE_ID = 63  # kubelet's documented limit for Device.ID
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


def build_resources(
    domain: str, entries: list[DeviceEntry], source: str
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
        name = resource_name(domain, type_, model)
        where = f"devices[{first.index}]"
        name_problems = extended_resource_name_problems(name)
        if name != name.lower():
            name_problems.append("must be lower-case")
        if name in seen_names:
            name_problems.append(f"is also what {seen_names[name]} gives; rename one type or model")
        seen_names[name] = where
        for message in name_problems:
            problems.append(
                Problem(source, first.line, f"{where}.type/model", f"resource {name!r} {message}")
            )
        prefix = env_prefix(type_, model)
        if prefix in seen_prefixes and seen_prefixes[prefix] != name:
            problems.append(
                Problem(
                    source,
                    first.line,
                    f"{where}.type/model",
                    f"resource {name!r} would share environment variables {prefix}_* "
                    f"with {seen_prefixes[prefix]!r}; rename one type or model",
                )
            )
        seen_prefixes[prefix] = name

        devices: dict[str, Device] = {}
        for entry in members:
            duplicate = seen_paths.get(entry.path)
            if duplicate is not None:
                problems.append(
                    Problem(
                        source,
                        entry.line,
                        f"devices[{entry.index}].device",
                        f"{entry.path!r} is already listed at devices[{duplicate.index}]"
                        + (f" (line {duplicate.line})" if duplicate.line else ""),
                    )
                )
                continue
            seen_paths[entry.path] = entry
            ident = entry.id if entry.id is not None else device_id(type_, model, entry.path)
            if entry.id is not None and (
                len(entry.id) > MAX_DEVICE_ID or not _EXPLICIT_ID.match(entry.id)
            ):
                problems.append(
                    Problem(
                        source,
                        entry.line,
                        f"devices[{entry.index}].id",
                        f"{entry.id!r} must be 1-{MAX_DEVICE_ID} characters of letters, digits, "
                        "'-', '_' or '.', starting and ending with a letter or digit",
                    )
                )
                continue
            if ident in devices:
                problems.append(
                    Problem(
                        source,
                        entry.line,
                        f"devices[{entry.index}].id",
                        f"device ID {ident!r} is used twice in resource {name!r}",
                    )
                )
                continue
            devices[ident] = Device(id=ident, path=entry.path)
        specs.append(
            ResourceSpec(
                name=name,
                devices=tuple(sorted(devices.values(), key=lambda d: d.id)),
                env_prefix=prefix,
                labels=(("type", type_), ("model", model)),
            )
        )
    return tuple(sorted(specs, key=lambda s: s.name)), problems
