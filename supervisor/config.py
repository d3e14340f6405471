"""The config file: reading it safely, parsing it, and reporting every problem at once.

Owns file access (size cap, permission check), YAML parsing and error locations
(file, line, field), and the order of the steps: the schema's rules (`config_schema`),
reading the values (`config_document`), the rules spanning several values and grouping
into resources (`resources`).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from plugin_worker.api import DRA, ResourceSpec
from supervisor import config_schema, fastyaml
from supervisor.config_document import read_api, read_sections
from supervisor.errors import ConfigError, LineOf, Path_, Problem, field_name, no_lines
from supervisor.gcpause import gc_paused
from supervisor.resources import Section, check_and_build

DEFAULT_DOMAIN = "ska-sdp.org"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_NESTING = 64
MAX_ALIASES = 1000
DRA_DRIVER_MAX = 63
"""resource.k8s.io: a driver name is a DNS subdomain of at most 63 characters."""


@dataclass(frozen=True, slots=True)
class Config:
    """A loaded, valid config."""

    source: str
    domain: str
    resources: tuple[ResourceSpec, ...]
    node: str | None = None
    """The node name the ``nodes:`` entries were matched against."""
    dra_driver: str = DEFAULT_DOMAIN
    """The DRA driver's name (``dra.driver``, default the domain)."""
    fleet: Fleet | None = None
    """Every node's view, for a simulated fleet (`parse_config(fleet=True)`)."""

    @property
    def device_count(self) -> int:
        return sum(len(r.devices) for r in self.resources)


@dataclass(frozen=True, slots=True)
class Fleet:
    """What each node of a fleet gets: the config's sections, resolved per node name.

    Nodes that the same ``nodes:`` entries match get the same resources, so they are
    built once per set of matching entries (a thousand nodes are a handful of sets).
    """

    domain: str
    api: str
    driver: str
    sections: tuple[Section, ...]
    _built: dict[tuple[int, ...], tuple[ResourceSpec, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def resources_for(self, node: str) -> tuple[ResourceSpec, ...]:
        matching = tuple(i for i, s in enumerate(self.sections) if s.applies_to(node))
        built = self._built.get(matching)
        if built is None:
            built, problems = check_and_build(
                self.domain, self.sections, node, "", no_lines, api=self.api, driver=self.driver
            )
            assert not problems, "a parsed config has no problems on any node"
            self._built[matching] = built
        return built


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
    path: Path,
    *,
    default_domain: str = DEFAULT_DOMAIN,
    strict_perms: bool = True,
    node_name: str | None = None,
) -> Config:
    """Read, validate and group a config file; ConfigError lists every problem."""
    data = read_config(path, strict_perms=strict_perms)
    return parse_config(data, source=str(path), default_domain=default_domain, node_name=node_name)


@gc_paused
def parse_config(
    data: bytes,
    *,
    source: str,
    default_domain: str = DEFAULT_DOMAIN,
    node_name: str | None = None,
    before_locating: Callable[[list[Problem]], None] | None = None,
    fleet: bool = False,
) -> Config:
    """Validate config bytes as they apply to `node_name` (None: ignore ``nodes:``); with
    `fleet`, also keep what any node gets (`Config.fleet`).

    The fast C parser is used first; only when something is wrong is the file parsed
    again with positions, so that errors carry line numbers. That second parse is slow
    on a big file: `before_locating` is given the problems, without lines, before it.
    """

    def locate(problems: list[Problem]) -> LineOf:
        if before_locating is not None:
            before_locating(problems)
        return _line_finder(_parse(text, source, YAML(typ="rt")))

    text = _decode(data, source)
    _check_nesting(text, source)
    tree = _parse_fast(text, source)
    if tree is None:
        raise ConfigError(
            [Problem(source, None, "", "is empty; expected a mapping with a 'devices' list")]
        )
    found = config_schema.problems(tree)
    if found:
        line_of = locate([Problem(source, None, field_name(p), m) for p, m in found])
        raise ConfigError([Problem(source, line_of(p), field_name(p), m) for p, m in found])
    domain = tree.get("domain", default_domain)
    if "domain" not in tree:
        wrong = config_schema.problems(domain, "domain")
        if wrong:
            raise ConfigError([Problem(source, None, "domain", f"(default) {wrong[0][1]}")])
    sections = read_sections(tree)
    api, driver = read_api(tree), tree.get("dra", {}).get("driver", domain)

    def build(line_of: LineOf) -> tuple[tuple[ResourceSpec, ...], list[Problem]]:
        return check_and_build(domain, sections, node_name, source, line_of, api=api, driver=driver)

    resources, problems = build(no_lines)
    if problems:
        problems = build(locate(problems))[1]
        raise ConfigError(problems)
    uses_dra = api == DRA or any(s.api == DRA for sec in sections for s in sec.settings)
    if "driver" not in tree.get("dra", {}) and len(domain) > DRA_DRIVER_MAX and uses_dra:
        raise ConfigError(
            [Problem(source, None, "dra.driver", f"(default: the domain '{domain}') must be no "
                     f"more than {DRA_DRIVER_MAX} characters; set dra.driver")]
        )  # fmt: skip
    return Config(
        source=source, domain=domain, resources=resources, node=node_name, dra_driver=driver,
        fleet=Fleet(domain, api, driver, sections) if fleet else None,
    )  # fmt: skip


_FLOW_SYNTAX = re.compile(r"[\[\]{}\"'#\n\\]")
_ALIAS = re.compile(r"(?:^|[\s\[{,])\*[^\s\[\]{},]")
_BEFORE_COMMENT = " \t\n"
_BEFORE_QUOTED = " \t\n[{,:-?"
_COMPACT_NESTING = re.compile(rf"^[ \t]*(?:[-?:][ \t]+){{{MAX_NESTING + 1},}}", re.MULTILINE)


def _check_nesting(text: str, source: str) -> None:
    """Refuse collections nested deeper than MAX_NESTING before any YAML parser sees them.

    Parsers spend minutes (or the stack) on ``[[[[...`` a megabyte deep, and a reload
    runs on the event loop, so whoever can write the config could freeze the supervisor.
    No device config nests more than a few levels.
    """
    compact = _COMPACT_NESTING.search(text)
    line = text.count("\n", 0, compact.start()) + 1 if compact is not None else _too_deep_flow(text)
    if line is not None:
        raise ConfigError([Problem(source, line, "", f"nests deeper than {MAX_NESTING} levels")])
    # Aliases are cheap to write and costly to expand (150,000 took seconds, all of it
    # on the event loop); a devices file needs few, if any.
    aliases = len(_ALIAS.findall(text)) if "*" in text else 0
    if aliases > MAX_ALIASES:
        raise ConfigError(
            [
                Problem(
                    source, None, "", f"uses {aliases} aliases; at most {MAX_ALIASES} are allowed"
                )
            ]
        )


def _too_deep_flow(text: str) -> int | None:
    """The line where flow collections (``[`` ``{``) first nest too deep, if they do."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return None
    depth, quote, comment, skip, line = 0, "", False, -1, 1
    for match in _FLOW_SYNTAX.finditer(text):
        char, at = match.group(), match.start()
        if char == "\n":
            line, comment = line + 1, False
        elif at == skip or comment:
            continue
        elif quote:
            # Inside a quoted scalar only its end matters; \" and '' do not end it.
            if (char == "\\" and quote == '"') or (
                char == quote == "'" and text.startswith("''", at)
            ):
                skip = at + 1
            elif char == quote:
                quote = ""
        elif char == "#" and (at == 0 or text[at - 1] in _BEFORE_COMMENT):
            comment = True
        elif char in "\"'" and (at == 0 or text[at - 1] in _BEFORE_QUOTED):
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line
        elif char in "]}":
            depth = max(depth - 1, 0)
    return None


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            [Problem(source, line, "", f"is not valid UTF-8 (byte {error.start})")]
        ) from None


def _parse_fast(text: str, source: str) -> Any:
    """The safe load of `text`; plain documents skip ruamel's slow constructor (7x faster)."""
    try:
        return fastyaml.load(text)
    except fastyaml.NotSimpleError:
        return _parse(text, source, YAML(typ="safe"))


def _parse(text: str, source: str, yaml: YAML) -> Any:
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        what = error.problem or error.context or "invalid YAML"
        raise ConfigError([Problem(source, line, "", f"not valid YAML: {what}")]) from None
    except ValueError as error:
        # Python refuses to convert integers of more than 4300 digits (CVE-2020-10735).
        what = "a number has too many digits" if "digits" in str(error) else str(error)
        raise ConfigError([Problem(source, None, "", f"not valid YAML: {what}")]) from None
    except (YAMLError, RecursionError) as error:
        raise ConfigError([Problem(source, None, "", f"not valid YAML: {error}")]) from None


def _line_finder(tree: Any) -> LineOf:
    """Map a path of keys and indexes to the 1-based line where it appears."""

    def line_of(path: Path_) -> int | None:
        node, line = tree, None
        for step in path:
            try:
                if isinstance(node, CommentedMap) and step in node:
                    line = node.lc.key(step)[0] + 1
                elif isinstance(node, CommentedSeq) and isinstance(step, int) and step < len(node):
                    line = node.lc.item(step)[0] + 1
                else:
                    break
            except (KeyError, IndexError, TypeError):  # e.g. a key merged in with <<
                break
            node = node[step]
        return line

    return line_of
