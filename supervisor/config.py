"""The config file: reading it safely, validating it, and reporting every problem at once.

Owns the file format (top-level ``domain`` and ``devices``; each device ``type``,
``model``, ``device`` and optional ``id``) and error reporting with file, line and
field. Turning device entries into resources is `resources`' job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from plugin_worker.api import ResourceSpec
from supervisor.errors import ConfigError, Problem
from supervisor.resources import DeviceEntry, build_resources

DEFAULT_DOMAIN = "ska-sdp.org"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEVICES = 100_000
MAX_PATH_LENGTH = 4096
TOP_LEVEL_KEYS = ("domain", "devices")
DEVICE_KEYS = ("type", "model", "device", "id")
REQUIRED_DEVICE_KEYS = ("type", "model", "device")


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded, valid config."""

    source: str
    domain: str
    resources: tuple[ResourceSpec, ...]
    digest: str

    @property
    def device_count(self) -> int:
        return sum(len(r.devices) for r in self.resources)


LineOf = Callable[[tuple[str | int, ...]], int | None]


def check_permissions(path: Path) -> None:
    """Refuse a config others could have written (the seed's strict-perms check).

    The file is followed through symlinks, as a ConfigMap mount is one.
    """
    st = os.stat(path)
    problems = []
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod go-w {path}` or pass --no-strict-perms"
        )
    if st.st_uid not in (0, os.geteuid()):
        problems.append(
            f"is owned by uid {st.st_uid}, neither root nor this user; "
            "fix the owner or pass --no-strict-perms"
        )
    if problems:
        raise ConfigError([Problem(str(path), None, "", p) for p in problems])


def read_config_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), None, "", "file does not exist")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(str(path), None, "", "is a directory, not a file")]) from None
    except OSError as error:
        raise ConfigError(
            [Problem(str(path), None, "", f"cannot read: {error.strerror}")]
        ) from error
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            [Problem(str(path), None, "", f"is larger than {MAX_CONFIG_BYTES} bytes; refusing")]
        )
    return data


def read_config(path: Path, *, strict_perms: bool = True) -> bytes:
    """The config's bytes, after the permission check when `strict_perms`."""
    if strict_perms:
        with contextlib.suppress(FileNotFoundError):  # read_config_bytes reports it
            check_permissions(path)
    return read_config_bytes(path)


def load_config(
    path: Path, *, default_domain: str = DEFAULT_DOMAIN, strict_perms: bool = True
) -> Config:
    """Read, validate and group a config file; ConfigError lists every problem."""
    data = read_config(path, strict_perms=strict_perms)
    return parse_config(data, source=str(path), default_domain=default_domain)


def parse_config(data: bytes, *, source: str, default_domain: str = DEFAULT_DOMAIN) -> Config:
    """Validate config bytes. The fast C parser is used first; only when something is
    wrong is the file parsed again with positions, so that errors carry line numbers."""
    text = _decode(data, source)
    tree = _parse(text, source, YAML(typ="safe"))
    problems, domain, entries = _validate(tree, source, default_domain, lambda _: None)
    resources, grouping_problems = (
        ((), []) if problems else build_resources(domain, entries, source)
    )
    if problems or grouping_problems:
        located = _parse(text, source, YAML(typ="rt"))
        line_of = _line_finder(located)
        problems, domain, entries = _validate(located, source, default_domain, line_of)
        if not problems:
            _, problems = build_resources(domain, entries, source)
        raise ConfigError(problems or grouping_problems)
    digest = hashlib.sha256(data).hexdigest()
    return Config(source=source, domain=domain, resources=resources, digest=digest)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            [Problem(source, line, "", f"is not valid UTF-8 (byte {error.start})")]
        ) from None


def _parse(text: str, source: str, yaml: YAML) -> Any:
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        what = error.problem or error.context or "invalid YAML"
        raise ConfigError([Problem(source, line, "", f"not valid YAML: {what}")]) from None
    except (YAMLError, RecursionError, ValueError) as error:
        raise ConfigError([Problem(source, None, "", f"not valid YAML: {error}")]) from None


def _line_finder(tree: Any) -> LineOf:
    """Map a path of keys and indexes to the 1-based line where it appears."""

    def line_of(path: tuple[str | int, ...]) -> int | None:
        node, line = tree, None
        for step in path:
            if isinstance(node, CommentedMap) and step in node:
                line = node.lc.key(step)[0] + 1
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
                line = node.lc.item(step)[0] + 1
            else:
                break
            node = node[step]
        return line

    return line_of


def _field(path: tuple[str | int, ...]) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


def _validate(
    tree: Any, source: str, default_domain: str, line_of: LineOf
) -> tuple[list[Problem], str, list[DeviceEntry]]:
    problems: list[Problem] = []

    def problem(path: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(source, line_of(path), _field(path), message))

    if tree is None:
        problem((), "is empty; expected a mapping with a 'devices' list")
        return problems, default_domain, []
    if not isinstance(tree, dict):
        problem((), f"top level must be a mapping with a 'devices' list, not {_kind(tree)}")
        return problems, default_domain, []
    for key in tree:
        if key not in TOP_LEVEL_KEYS:
            problem((str(key),), f"unknown key; expected one of: {', '.join(TOP_LEVEL_KEYS)}")
    domain = tree.get("domain", default_domain)
    if not isinstance(domain, str) or not domain:
        problem(("domain",), f"must be a non-empty string, not {_kind(domain)}")
        domain = default_domain
    if "devices" not in tree:
        problem((), "missing required key 'devices' (a list of {type, model, device})")
        return problems, domain, []
    devices = tree["devices"]
    if not isinstance(devices, list):
        problem(("devices",), f"must be a list of devices, not {_kind(devices)}")
        return problems, domain, []
    if len(devices) > MAX_DEVICES:
        problem(("devices",), f"has {len(devices)} entries; at most {MAX_DEVICES} are supported")
        return problems, domain, []
    entries = []
    for index, item in enumerate(devices):
        entry = _validate_device(item, ("devices", index), problem)
        if entry is not None:
            type_, model, device, device_id = entry
            line = line_of(("devices", index))
            entries.append(DeviceEntry(type_, model, device, device_id, line, index))
    return problems, domain, entries


def _validate_device(
    item: Any,
    path: tuple[str | int, ...],
    problem: Callable[[tuple[str | int, ...], str], None],
) -> tuple[str, str, str, str | None] | None:
    if not isinstance(item, dict):
        problem(path, f"must be a mapping with type, model and device, not {_kind(item)}")
        return None
    ok = True
    for key in item:
        if key not in DEVICE_KEYS:
            problem((*path, str(key)), f"unknown key; expected one of: {', '.join(DEVICE_KEYS)}")
            ok = False
    for key in REQUIRED_DEVICE_KEYS:
        if key not in item:
            problem((*path, key), "required field is missing")
            ok = False
    for key in DEVICE_KEYS:
        value = item.get(key)
        if key in item and (not isinstance(value, str) or not value.strip()):
            hint = f' (quote it: {key}: "{value}")' if isinstance(value, int | float) else ""
            problem((*path, key), f"must be a non-empty string, not {_kind(value)}{hint}")
            ok = False
    device = item.get("device")
    if isinstance(device, str) and device.strip():
        if not device.startswith("/"):
            problem((*path, "device"), f"must be an absolute path, got {_short(device)}")
            ok = False
        elif len(device) > MAX_PATH_LENGTH or "\0" in device:
            problem((*path, "device"), "is not a usable path (too long or contains NUL)")
            ok = False
    if not ok:
        return None
    return item["type"], item["model"], item["device"], item.get("id")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
