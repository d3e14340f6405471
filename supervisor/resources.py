"""From device entries to extended resources: grouping, names, stable device IDs, and the
rules that span several values of a config.

Owns what makes the advertised state safe for kubelet where no single value can be wrong:
resource names kubelet accepts (the name part's length), names and environment variables
that never collide, device paths and IDs listed once, a device list kubelet can receive,
`resources:` settings that name an existing (type, model) once. Every rule for a single
value is the schema's (`config_schema`); the chart's templates/validate.yaml checks the
same cross-value rules with the same sentences (tests/deploy/test_config_rules.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from dra_driver.names import device_class_name, device_name
from plugin_worker.api import (
    DEVICE_PLUGIN,
    DRA,
    HEALTHY,
    UNHEALTHY,
    AllocateFaults,
    Attributes,
    Capacity,
    Device,
    Fault,
    Mount,
    ResourceSpec,
)
from plugin_worker.k8s_names import QUALIFIED_NAME_MAX, dns1123_subdomain_problems
from plugin_worker.wire_size import (
    KUBELET_MAX_MESSAGE_BYTES,
    list_and_watch_size,
    list_and_watch_size_bound,
)
from supervisor.errors import LineOf, Path_, Problem, field_name

MAX_DEVICE_ID = 63  # kubelet's documented limit for Device.ID
MAX_DRA_STRING = 64
"""resource.k8s.io: a string attribute's value, at most (the path attribute is one)."""
MAX_DRA_ATTRIBUTES = 32
"""resource.k8s.io: attributes and capacities of one device together, at most."""
BUILTIN_ATTRIBUTES = ("type", "model", "path")
"""What every DRA device carries (and numa where set); `dra_driver.slices` writes them."""
SHARED_SUFFIX = ".shared"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ENV_UNSAFE = re.compile(r"[^A-Z0-9]")


class DeviceEntry(NamedTuple):
    """One ``devices:`` item (a named tuple: 10,000 of them are built on every reload, and a
    tuple is built in a fifth of a frozen dataclass's time)."""

    type: str
    model: str
    path: str
    id: str | None
    at: Path_
    """Where the entry stands, e.g. ``("devices", 3)`` or ``("nodes", 0, "devices", 1)``."""
    health: str = HEALTHY
    numa: int | None = None
    fault: Fault | None = None
    attributes: Attributes = ()
    capacity: Capacity = ()


@dataclass(frozen=True, slots=True)
class ResourceSettings:
    """One ``resources:`` item: how a (type, model) resource behaves."""

    type: str
    model: str
    at: Path_ = ()
    replicas: int = 1
    rename_shared: bool = False
    preferred_policy: str = "none"
    failing: bool = False
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    cdi: bool = False
    allocate_faults: AllocateFaults = field(default_factory=AllocateFaults)
    api: str | None = None
    """None: the top-level api."""
    attributes: Attributes = ()
    capacity: Capacity = ()

    @property
    def renames(self) -> bool:
        return self.rename_shared and self.replicas > 1


@dataclass(frozen=True, slots=True)
class Section:
    """The devices and settings of the top level, or of one ``nodes`` entry."""

    at: Path_
    """``()`` for the top level, ``("nodes", i)`` for an entry."""
    entries: tuple[DeviceEntry, ...]
    settings: tuple[ResourceSettings, ...]
    match: str | None = None
    """The entry's glob on node names; None for the top level."""
    replaces: bool = False
    """``mode: replace``: the entry's devices replace those listed so far."""

    def applies_to(self, node: str | None) -> bool:
        if self.match is None:
            return True
        return node is not None and fnmatch.fnmatchcase(node, self.match)


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
        id=ident, path=entry.path, health=entry.health, numa=entry.numa, fault=entry.fault,
        attributes=entry.attributes, capacity=entry.capacity,
    )  # fmt: skip
    if replicas == 1:
        return [base]
    return [
        replace(base, id=replica_id(ident, k), replica_of=ident) for k in range(1, replicas + 1)
    ]


class _Problems:
    """Collects problems at paths, with lines from `line_of`."""

    def __init__(self, source: str, line_of: LineOf) -> None:
        self.source, self.line_of = source, line_of
        self.found: dict[Problem, None] = {}

    def at(self, path: Path_, message: str) -> None:
        line = self.line_of(path)
        self.found.setdefault(Problem(self.source, line, field_name(path), message))

    def where(self, path: Path_) -> str:
        line = self.line_of(path)
        return field_name(path) + (f" (line {line})" if line else "")


def check_and_build(
    domain: str,
    sections: tuple[Section, ...],
    node: str | None,
    source: str,
    line_of: LineOf,
    *,
    api: str = DEVICE_PLUGIN,
    driver: str | None = None,
) -> tuple[tuple[ResourceSpec, ...], list[Problem]]:
    """The resources `node` gets (None: only the top level), or every cross-value problem.

    Names and settings are checked across the whole file, whichever node this is; device
    lists as they apply here, and each `nodes` entry that does not apply on its own, so a
    mistake in any entry shows up on every node. `api` serves the resources that do not
    choose one; `driver` is the DRA driver's name (default: the domain).
    """
    problems = _Problems(source, line_of)
    build = _Builder(domain, api, driver or domain, problems)
    _check_names(domain, sections, problems)
    _check_settings(sections, problems)
    top = {(s.type, s.model): s for s in sections[0].settings}
    entries: list[DeviceEntry] = []
    settings = dict(top)
    for section in sections:
        if not section.applies_to(node):
            build(section.entries, {**top, **_by_pair(section.settings)})
            continue
        entries = list(section.entries) if section.replaces else entries + list(section.entries)
        settings.update(_by_pair(section.settings))
    specs = build(entries, settings)
    return tuple(sorted(specs, key=lambda s: s.name)), list(problems.found)


def _by_pair(settings: Iterable[ResourceSettings]) -> dict[tuple[str, str], ResourceSettings]:
    return {(s.type, s.model): s for s in settings}


def _check_names(domain: str, sections: tuple[Section, ...], problems: _Problems) -> None:
    """Every name a (type, model) may get anywhere in the file, once, and valid for kubelet."""
    renamed = {(s.type, s.model) for sec in sections for s in sec.settings if s.renames}
    names: dict[str, DeviceEntry] = {}
    prefixes: dict[str, str] = {}
    for entry in _first_of_each_pair(sections):
        pair = (entry.type, entry.model)
        base = resource_name(domain, *pair)
        at = (*entry.at, "type/model")
        for name in (base, base + SHARED_SUFFIX) if pair in renamed else (base,):
            part = name.partition("/")[2]
            if len(part) > QUALIFIED_NAME_MAX:
                problems.at(
                    at,
                    f"resource '{name}': the name after the domain, '{part}', has {len(part)} "
                    f"characters; kubelet allows at most {QUALIFIED_NAME_MAX} "
                    "(shorten the type or the model)",
                )
            first = names.setdefault(name, entry)
            if first is not entry:
                problems.at(
                    at,
                    f"resource '{name}' is also what {field_name(first.at)} gives; "
                    "rename one type or model",
                )
        prefix = env_prefix(*pair)
        owner = prefixes.setdefault(prefix, base)
        if owner != base:
            problems.at(
                at,
                f"resource '{base}' would share environment variables {prefix}_* with "
                f"'{owner}'; rename one type or model",
            )


def _first_of_each_pair(sections: tuple[Section, ...]) -> Iterable[DeviceEntry]:
    seen: set[tuple[str, str]] = set()
    for section in sections:
        for entry in section.entries:
            if (entry.type, entry.model) not in seen:
                seen.add((entry.type, entry.model))
                yield entry


def _check_settings(sections: tuple[Section, ...], problems: _Problems) -> None:
    # Settings may name a type that only some nodes have (or that a `replace` entry drops
    # here): it must exist somewhere in the file, not necessarily on this node.
    known = {(e.type, e.model) for section in sections for e in section.entries}
    for section in sections:
        seen: set[tuple[str, str]] = set()
        for s in section.settings:
            if (s.type, s.model) in seen:
                problems.at(s.at, f"type '{s.type}' with model '{s.model}' is configured twice")
            seen.add((s.type, s.model))
            if (s.type, s.model) not in known:
                problems.at(s.at, f"no device has type '{s.type}' and model '{s.model}'")


@dataclass(frozen=True, slots=True)
class _Builder:
    domain: str
    api: str
    driver: str
    problems: _Problems

    def __call__(
        self,
        entries: list[DeviceEntry] | tuple[DeviceEntry, ...],
        settings: dict[tuple[str, str], ResourceSettings],
    ) -> list[ResourceSpec]:
        """Group entries by (type, model) into specs; duplicates, oversized lists and names
        that clash in the API serving them are problems."""
        problems = self.problems
        groups: dict[tuple[str, str], list[DeviceEntry]] = defaultdict(list)
        for entry in entries:
            groups[(entry.type, entry.model)].append(entry)
        seen_paths: dict[str, DeviceEntry] = {}
        dra = _DraNames(self.driver, problems)
        specs = []
        for (type_, model), members in groups.items():
            options = settings.get((type_, model)) or ResourceSettings(type_, model)
            api = options.api or self.api
            renames = options.renames and api == DEVICE_PLUGIN
            name = resource_name(self.domain, type_, model) + (SHARED_SUFFIX if renames else "")
            devices: list[Device] = []
            idents: set[str] = set()
            for entry in members:
                duplicate = seen_paths.setdefault(entry.path, entry)
                if duplicate is not entry:
                    problems.at(
                        (*entry.at, "device"),
                        f"'{entry.path}' is already listed at {problems.where(duplicate.at)}",
                    )
                    continue
                ident = entry.id if entry.id is not None else device_id(type_, model, entry.path)
                if ident in idents:
                    problems.at(
                        (*entry.at, "id"), f"device ID '{ident}' is used twice in resource '{name}'"
                    )
                    continue
                idents.add(ident)
                if api == DRA:
                    dra.device(name, ident, entry, options)
                devices += _advertised(entry, ident, options.replicas)
            if api == DRA:
                dra.device_class(name, type_, model, members[0])
            else:
                _check_size(name, devices, members[0], problems)
            specs.append(_spec(name, type_, model, devices, options, api))
        return specs


class _DraNames:
    """The names DRA gives one node's resources: each device's in the pool, each class."""

    def __init__(self, driver: str, problems: _Problems) -> None:
        self.driver, self.problems = driver, problems
        self.devices: dict[str, tuple[str, DeviceEntry]] = {}
        self.classes: dict[str, str] = {}

    def device(
        self, resource: str, ident: str, entry: DeviceEntry, options: ResourceSettings
    ) -> None:
        name = device_name(ident)
        first = self.devices.setdefault(name, (resource, entry))
        if first[1] is not entry:
            self.problems.at(
                (*entry.at, "id"),
                f"DRA device name '{name}' (from ID '{ident}') is also that of a device of "
                f"'{first[0]}' at {self.problems.where(first[1].at)}; change one ID",
            )
        if len(entry.path) > MAX_DRA_STRING:
            self.problems.at(
                (*entry.at, "device"),
                f"is {len(entry.path)} characters long: with api: dra the path is the device's "
                f"'path' attribute, and Kubernetes allows at most {MAX_DRA_STRING}",
            )
        names = {k for k, _ in options.attributes} | {k for k, _ in entry.attributes}
        count = len(BUILTIN_ATTRIBUTES) + (entry.numa is not None) + len(names)
        count += len({k for k, _ in options.capacity} | {k for k, _ in entry.capacity})
        count += options.replicas > 1  # the `shares` capacity of a shared device
        if count > MAX_DRA_ATTRIBUTES:
            self.problems.at(
                (*entry.at, "attributes"),
                f"device '{ident}' would have {count} DRA attributes and capacities "
                f"(type, model and path included); Kubernetes allows at most {MAX_DRA_ATTRIBUTES}",
            )

    def device_class(self, resource: str, type_: str, model: str, first: DeviceEntry) -> None:
        name = device_class_name(type_, model, self.driver)
        at = (*first.at, "type/model")
        for why in dns1123_subdomain_problems(name):
            self.problems.at(at, f"resource '{resource}': its DeviceClass name '{name}' {why}")
        owner = self.classes.setdefault(name, resource)
        if owner != resource:
            self.problems.at(
                at,
                f"resource '{resource}' would have the DeviceClass '{name}' of '{owner}'; "
                "rename one type or model",
            )


def _check_size(name: str, devices: list[Device], first: DeviceEntry, problems: _Problems) -> None:
    limit = KUBELET_MAX_MESSAGE_BYTES
    if list_and_watch_size_bound(len(devices), id_bytes=MAX_DEVICE_ID) <= limit:
        return  # surely fits: no need to add it all up
    size = list_and_watch_size(devices, health=UNHEALTHY)  # the largest it can become
    if size > limit:
        problems.at(
            (*first.at, "type/model"),
            f"resource '{name}' has {len(devices):,} devices (replicas included): its "
            f"ListAndWatch message would be {size:,} bytes, over the {limit:,} bytes (4 MiB) "
            "kubelet receives at most, so kubelet would never learn its devices; "
            "lower replicas or split the devices over more types or models",
        )


def _spec(
    name: str,
    type_: str,
    model: str,
    devices: list[Device],
    options: ResourceSettings,
    api: str,
) -> ResourceSpec:
    return ResourceSpec(
        name=name,
        devices=tuple(sorted(devices, key=_by_id)),
        env_prefix=env_prefix(type_, model),
        labels=(("type", type_), ("model", model)),
        envs=options.envs,
        mounts=options.mounts,
        annotations=options.annotations,
        cdi_kind=name if options.cdi else None,
        preferred_policy=options.preferred_policy,
        allocate_faults=options.allocate_faults,
        failing=options.failing,
        api=api,
        replicas=options.replicas,
        attributes=options.attributes,
        capacity=options.capacity,
    )


def _by_id(device: Device) -> str:
    return device.id
