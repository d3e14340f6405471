"""The config file's schema: every key, its type and range, and per-node selection.

Walks the parsed YAML tree (plain dicts and lists) and returns the validated parts,
recording every problem with its path so the caller can add file and line. Knows
nothing of files or YAML parsing (`config`), nor of grouping into resources
(`resources`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugin_worker.api import HEALTHY, PREFERRED_POLICIES, UNHEALTHY, AllocateFaults, Fault, Mount
from plugin_worker.k8s_names import qualified_name_problems
from supervisor.errors import Problem
from supervisor.resources import MAX_REPLICAS, DeviceEntry, ResourceSettings

Path_ = tuple[str | int, ...]
LineOf = Callable[[Path_], int | None]

MAX_DEVICES = 100_000
MAX_PATH_LENGTH = 4096
MAX_NUMA_NODE = 1023
MAX_DELAY_SECONDS = 300.0
MAX_FAULT_SECONDS = 366 * 24 * 3600.0
TOP_LEVEL_KEYS = ("domain", "devices", "resources", "nodes")
DEVICE_KEYS = ("type", "model", "device", "id", "health", "numa", "faults")
RESOURCE_KEYS = (
    "type", "model", "replicas", "renameShared", "preferredAllocation", "failing",
    "envs", "mounts", "annotations", "cdi", "allocate",
)  # fmt: skip
NODE_KEYS = ("match", "mode", "devices", "resources")
FAULT_KEYS = ("unhealthyAfter", "recoverAfter", "flapPeriod")
ALLOCATE_KEYS = ("delay", "failureRate", "seed")
MOUNT_KEYS = ("hostPath", "containerPath", "readOnly")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = re.compile(r"^WIDGET_.*VISIBLE_DEVICE(S|_IDS)$")


@dataclass
class Document:
    domain: str
    entries: list[DeviceEntry] = field(default_factory=list)
    settings: dict[tuple[str, str], ResourceSettings] = field(default_factory=dict)


def describe(value: object) -> str:
    """A short, safe description of a value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def field_name(path: Path_) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def parse_duration(value: object) -> float | None:
    """``250ms``, ``30s``, ``1m30s``, ``2h`` or a number of seconds; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str) or not value:
        return None
    parts = _DURATION_PART.findall(value)
    if "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


class Checker:
    """Collects problems while reading values out of the tree."""

    def __init__(self, source: str, line_of: LineOf) -> None:
        self.source = source
        self.line_of = line_of
        self.problems: list[Problem] = []

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.source, self.line_of(path), field_name(path), message))

    def mapping(
        self, value: Any, path: Path_, keys: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, not {describe(value)}")
            return None
        ok = True
        for key in value:
            if key not in keys:
                self.problem((*path, str(key)), f"unknown key; expected one of: {', '.join(keys)}")
                ok = False
        for key in required:
            if key not in value:
                self.problem((*path, key), "required field is missing")
                ok = False
        return value if ok else None

    def string(self, m: dict[str, Any], key: str, path: Path_) -> str | None:
        value = m.get(key)
        if isinstance(value, str) and value.strip():
            return value
        hint = f' (quote it: {key}: "{value}")' if isinstance(value, int | float) else ""
        self.problem((*path, key), f"must be a non-empty string, not {describe(value)}{hint}")
        return None

    def integer(self, m: dict[str, Any], key: str, path: Path_, low: int, high: int) -> int | None:
        value = m.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self.problem(
            (*path, key), f"must be a whole number from {low} to {high}, not {describe(value)}"
        )
        return None

    def boolean(self, m: dict[str, Any], key: str, path: Path_) -> bool | None:
        value = m.get(key)
        if isinstance(value, bool):
            return value
        self.problem((*path, key), f"must be true or false, not {describe(value)}")
        return None

    def duration(self, m: dict[str, Any], key: str, path: Path_, high: float) -> float | None:
        seconds = parse_duration(m.get(key))
        if seconds is None or seconds > high:
            self.problem(
                (*path, key),
                f"must be a duration such as 250ms, 30s or 5m (at most {high:g}s), "
                f"not {describe(m.get(key))}",
            )
            return None
        return seconds

    def items(self, m: dict[str, Any], key: str, path: Path_, limit: int) -> list[Any] | None:
        value = m.get(key)
        if not isinstance(value, list):
            self.problem((*path, key), f"must be a list, not {describe(value)}")
            return None
        if len(value) > limit:
            self.problem((*path, key), f"has {len(value)} entries; at most {limit} are supported")
            return None
        return value

    def string_pairs(
        self, m: dict[str, Any], key: str, path: Path_, check: Callable[[str], str | None]
    ) -> tuple[tuple[str, str], ...]:
        value = m.get(key)
        if not isinstance(value, dict):
            self.problem(
                (*path, key), f"must be a mapping of names to strings, not {describe(value)}"
            )
            return ()
        pairs = []
        for name, text in value.items():
            complaint = check(str(name)) if isinstance(name, str) else "must be a string"
            if complaint is None and not isinstance(text, str):
                complaint = f"value must be a string, not {describe(text)}"
            if complaint is not None:
                self.problem((*path, key, str(name)), complaint)
            else:
                pairs.append((name, text))
        return tuple(sorted(pairs))


def validate_document(tree: Any, check: Checker, default_domain: str, node: str | None) -> Document:
    """The validated document as it applies to `node` (None: ignore `nodes:`)."""
    if tree is None:
        check.problem((), "is empty; expected a mapping with a 'devices' list")
        return Document(default_domain)
    if not isinstance(tree, dict):
        check.problem(
            (), f"top level must be a mapping with a 'devices' list, not {describe(tree)}"
        )
        return Document(default_domain)
    top = check.mapping(tree, (), TOP_LEVEL_KEYS) or tree
    domain = top.get("domain", default_domain)
    if not isinstance(domain, str) or not domain:
        check.problem(("domain",), f"must be a non-empty string, not {describe(domain)}")
        domain = default_domain
    document = Document(domain)
    if "devices" not in top:
        check.problem((), "missing required key 'devices' (a list of {type, model, device})")
    else:
        document.entries = _devices(top, ("devices",), check, offset=0)
    if "resources" in top:
        document.settings = _all_settings(top, (), check)
    # Settings may name a type that only some nodes have (or that a `replace` entry
    # drops here): it must exist somewhere in the file, not necessarily on this node.
    known = {(e.type, e.model) for e in document.entries}
    if "nodes" in top:
        known |= _apply_nodes(top, check, node, document)
    for (type_, model), settings in document.settings.items():
        if (type_, model) not in known:
            check.problem(settings.path, f"no device has type {type_!r} and model {model!r}")
    return document


def _devices(m: dict[str, Any], path: Path_, check: Checker, offset: int) -> list[DeviceEntry]:
    items = check.items(m, path[-1], path[:-1], MAX_DEVICES) if isinstance(path[-1], str) else None
    entries = []
    for index, item in enumerate(items or []):
        entry = _device(item, (*path, index), check, offset + index)
        if entry is not None:
            entries.append(entry)
    return entries


_PLAIN_DEVICE_KEYS = frozenset(("type", "model", "device"))


def _plain_device(item: Any, path: Path_, check: Checker, index: int) -> DeviceEntry | None:
    """The common case (exactly type, model and an absolute device path, all plain
    strings) in one pass; anything else returns None for the full check to explain."""
    if type(item) is not dict or item.keys() != _PLAIN_DEVICE_KEYS:
        return None
    type_, model, device = item["type"], item["model"], item["device"]
    if not (
        type(type_) is str and type(model) is str and type(device) is str
        and type_.strip() and model.strip() and device.startswith("/")
        and len(device) <= MAX_PATH_LENGTH and "\0" not in device
    ):  # fmt: skip
        return None
    where = f"{path[0]}[{path[1]}]" if len(path) == 2 else field_name(path)
    return DeviceEntry(type_, model, device, None, check.line_of(path), index, where)


def _device(item: Any, path: Path_, check: Checker, index: int) -> DeviceEntry | None:
    plain = _plain_device(item, path, check, index)
    if plain is not None:
        return plain
    if not isinstance(item, dict):
        check.problem(path, f"must be a mapping with type, model and device, not {describe(item)}")
        return None
    before = len(check.problems)
    m = check.mapping(item, path, DEVICE_KEYS, ("type", "model", "device")) or {}
    values = {
        k: check.string(item, k, path) for k in ("type", "model", "device", "id") if k in item
    }
    device = values.get("device")
    if device is not None and not device.startswith("/"):
        check.problem((*path, "device"), f"must be an absolute path, got {short(device)}")
    elif device is not None and (len(device) > MAX_PATH_LENGTH or "\0" in device):
        check.problem((*path, "device"), "is not a usable path (too long or contains NUL)")
    health = item.get("health", HEALTHY)
    if health not in (HEALTHY, UNHEALTHY):
        check.problem((*path, "health"), f"must be Healthy or Unhealthy, not {describe(health)}")
    numa = check.integer(item, "numa", path, 0, MAX_NUMA_NODE) if "numa" in item else None
    fault = _fault(item["faults"], (*path, "faults"), check) if "faults" in item else None
    if len(check.problems) > before or not m:
        return None
    return DeviceEntry(
        type=item["type"], model=item["model"], path=item["device"], id=item.get("id"),
        line=check.line_of(path), index=index, where=field_name(path), health=health,
        numa=numa, fault=fault,
    )  # fmt: skip


def _fault(value: Any, path: Path_, check: Checker) -> Fault | None:
    m = check.mapping(value, path, FAULT_KEYS)
    if m is None:
        return None
    if not m:
        check.problem(path, f"must set at least one of: {', '.join(FAULT_KEYS)}")
        return None
    after = (
        check.duration(m, "unhealthyAfter", path, MAX_FAULT_SECONDS)
        if "unhealthyAfter" in m
        else 0.0
    )
    recover = (
        check.duration(m, "recoverAfter", path, MAX_FAULT_SECONDS) if "recoverAfter" in m else None
    )
    flap = check.duration(m, "flapPeriod", path, MAX_FAULT_SECONDS) if "flapPeriod" in m else None
    if flap == 0:
        check.problem((*path, "flapPeriod"), "must be longer than 0s")
        return None
    if (
        after is None
        or ("recoverAfter" in m and recover is None)
        or ("flapPeriod" in m and flap is None)
    ):
        return None
    return Fault(unhealthy_after=after, recover_after=recover, flap_period=flap)


def _all_settings(
    m: dict[str, Any], path: Path_, check: Checker
) -> dict[tuple[str, str], ResourceSettings]:
    settings: dict[tuple[str, str], ResourceSettings] = {}
    for index, item in enumerate(check.items(m, "resources", path, 10_000) or []):
        where = (*path, "resources", index)
        one = _settings(item, where, check)
        if one is None:
            continue
        if (one.type, one.model) in settings:
            check.problem(where, f"type {one.type!r} with model {one.model!r} is configured twice")
        settings[(one.type, one.model)] = one
    return settings


def _settings(item: Any, path: Path_, check: Checker) -> ResourceSettings | None:
    m = check.mapping(item, path, RESOURCE_KEYS, ("type", "model"))
    if m is None:
        return None
    before = len(check.problems)
    type_, model = check.string(m, "type", path), check.string(m, "model", path)
    replicas = check.integer(m, "replicas", path, 1, MAX_REPLICAS) if "replicas" in m else 1
    policy = m.get("preferredAllocation", "none")
    if policy not in PREFERRED_POLICIES:
        check.problem(
            (*path, "preferredAllocation"),
            f"must be one of {', '.join(PREFERRED_POLICIES)}, not {describe(policy)}",
        )
    flags = {k: check.boolean(m, k, path) for k in ("renameShared", "failing", "cdi") if k in m}
    envs = check.string_pairs(m, "envs", path, _env_problem) if "envs" in m else ()
    annotations = (
        check.string_pairs(m, "annotations", path, _annotation_problem)
        if "annotations" in m
        else ()
    )
    mounts = _mounts(m, path, check) if "mounts" in m else ()
    faults = (
        _allocate_faults(m["allocate"], (*path, "allocate"), check)
        if "allocate" in m
        else AllocateFaults()
    )
    if len(check.problems) > before or type_ is None or model is None or replicas is None:
        return None
    return ResourceSettings(
        type=type_, model=model, path=path, replicas=replicas,
        rename_shared=bool(flags.get("renameShared")), preferred_policy=policy,
        failing=bool(flags.get("failing")), envs=envs, mounts=mounts, annotations=annotations,
        cdi=bool(flags.get("cdi")), allocate_faults=faults or AllocateFaults(),
    )  # fmt: skip


def _env_problem(name: str) -> str | None:
    if not _ENV_NAME.match(name):
        return "is not a valid environment variable name (letters, digits and _)"
    if _RESERVED_ENV.match(name):
        return "is set by the plugin itself and cannot be overridden"
    return None


def _annotation_problem(name: str) -> str | None:
    problems = qualified_name_problems(name)
    return f"is not a valid annotation key: {problems[0]}" if problems else None


def _mounts(m: dict[str, Any], path: Path_, check: Checker) -> tuple[Mount, ...]:
    mounts = []
    for index, item in enumerate(check.items(m, "mounts", path, 100) or []):
        where = (*path, "mounts", index)
        mount = check.mapping(item, where, MOUNT_KEYS, ("hostPath", "containerPath"))
        if mount is None:
            continue
        host = _absolute(check, mount, "hostPath", where)
        container = _absolute(check, mount, "containerPath", where)
        read_only = check.boolean(mount, "readOnly", where) if "readOnly" in mount else True
        if host is not None and container is not None and read_only is not None:
            mounts.append(Mount(container_path=container, host_path=host, read_only=read_only))
    return tuple(mounts)


def _absolute(check: Checker, m: dict[str, Any], key: str, path: Path_) -> str | None:
    value = check.string(m, key, path)
    if value is not None and not value.startswith("/"):
        check.problem((*path, key), f"must be an absolute path, got {short(value)}")
        return None
    return value


def _allocate_faults(value: Any, path: Path_, check: Checker) -> AllocateFaults | None:
    m = check.mapping(value, path, ALLOCATE_KEYS)
    if m is None:
        return None
    delay = check.duration(m, "delay", path, MAX_DELAY_SECONDS) if "delay" in m else 0.0
    rate = m.get("failureRate", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        check.problem((*path, "failureRate"), f"must be a number from 0 to 1, not {describe(rate)}")
        return None
    seed = check.integer(m, "seed", path, 0, 2**63 - 1) if "seed" in m else None
    if delay is None or ("seed" in m and seed is None):
        return None
    return AllocateFaults(delay=delay, failure_rate=float(rate), seed=seed)


def _apply_nodes(
    top: dict[str, Any], check: Checker, node: str | None, document: Document
) -> set[tuple[str, str]]:
    """Apply the entries matching `node`; return every (type, model) any entry lists."""
    offset = len(top.get("devices") or [])
    listed: set[tuple[str, str]] = set()
    for index, item in enumerate(check.items(top, "nodes", (), 1000) or []):
        path: Path_ = ("nodes", index)
        m = check.mapping(item, path, NODE_KEYS, ("match",))
        if m is None:
            continue
        pattern = check.string(m, "match", path)
        mode = m.get("mode", "add")
        if mode not in ("add", "replace"):
            check.problem((*path, "mode"), f"must be add or replace, not {describe(mode)}")
        # Every entry is validated, whichever node this is, so a config that is
        # wrong for some other node is rejected everywhere, not only there.
        entries = _devices(m, (*path, "devices"), check, offset) if "devices" in m else []
        settings = _all_settings(m, path, check) if "resources" in m else {}
        offset += len(m.get("devices") or [])
        listed |= {(e.type, e.model) for e in entries}
        if pattern is None or node is None or not fnmatch.fnmatchcase(node, pattern):
            continue
        if mode == "replace":
            document.entries = entries
        else:
            document.entries += entries
        document.settings.update(settings)
    return listed
