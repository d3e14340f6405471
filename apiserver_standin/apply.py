"""Field ownership: `metadata.managedFields` and server-side apply.

Follows sigs.k8s.io/structured-merge-diff as the API server uses it
(k8s.io/apimachinery/pkg/util/managedfields), without schemas:

* A manager is identified by (manager, operation, subresource), plus apiVersion for Updates.
* An Apply owns exactly the leaf fields of its body. Fields it owned before and leaves out
  are removed from the object unless another manager owns them too. A field another manager
  owns with a different value is a conflict (409, reason Conflict, one FieldManagerConflict
  cause per field) unless `force=true`, which moves ownership to the applier. Owning a field
  with the same value as another manager is shared ownership.
* Any other write (create, update, merge patch) is an Update: its manager takes the fields
  whose value it changed or added (and maps it added, the `.` member); removed fields are
  dropped from every manager. Managers left with no field are dropped.

Simplifications, without the OpenAPI schema upstream uses:
* Every list is atomic (owned as one field, replaced whole); upstream merges lists marked
  `listType=map`/`set` item by item (`k:{...}` / `v:...` elements).
* Every JSON object is a granular map/struct; upstream treats `structType=atomic` objects
  (e.g. a LabelSelector) as one field.
* The `.` member of an added map is recorded for every object deeper than `spec`/`status`,
  where upstream records it only for maps and pointer structs.
* An explicit `null` in an apply removes the field; empty maps left behind by a removal
  are pruned unless someone owns them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from apiserver_standin.errors import ApiError, apply_conflict

JSON = dict[str, Any]
Path = tuple[str, ...]
Tracked = Callable[[Path], bool]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()

# stripmeta.go: fields nobody owns.
_NOT_OWNED: frozenset[Path] = frozenset({("metadata",)})
_NOT_OWNED_TREES: tuple[Path, ...] = (
    ("apiVersion",),
    ("kind",),
    *(
        ("metadata", f)
        for f in (
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        )
    ),
)


def owned_at_all(path: Path) -> bool:
    return path not in _NOT_OWNED and not any(path[: len(t)] == t for t in _NOT_OWNED_TREES)


# -- paths in JSON values --------------------------------------------------------------


def value_at(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


def leaves(obj: JSON, prefix: Path = ()) -> set[Path]:
    """Paths of scalars and lists (atomic); empty objects own nothing, as upstream."""
    out: set[Path] = set()
    for key, value in obj.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            out |= leaves(value, path)
        else:
            out.add(path)
    return out


def object_paths(obj: JSON, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, value in obj.items():
        if isinstance(value, dict):
            path = (*prefix, key)
            out.add(path)
            out |= object_paths(value, path)
    return out


def _set_at(obj: JSON, path: Path, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    if value is None:
        obj.pop(path[-1], None)
    else:
        obj[path[-1]] = copy.deepcopy(value)


def _remove_at(obj: JSON, path: Path, keep: set[Path]) -> None:
    """Remove the field, then the maps it leaves empty (below the top level) nobody owns."""
    parents: list[tuple[JSON, str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        parents.append((node, key))
        node = node[key]
    node.pop(path[-1], None)
    for depth in range(len(parents) - 1, 0, -1):
        parent, key = parents[depth]
        if parent[key] or path[: depth + 1] in keep:
            return
        del parent[key]


def path_string(path: Path) -> str:
    """fieldpath.Path.String(): `.status.capacity.example.com/widget`."""
    return "".join(e if e[:2] in ("k:", "v:", "i:") else f".{e}" for e in path)


# -- managedFields entries -------------------------------------------------------------


@dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    subresource: str = ""
    time: str = ""
    fields: set[Path] = field(default_factory=set)

    def same_manager(self, manager: str, operation: str, subresource: str) -> bool:
        return (self.manager, self.operation, self.subresource) == (manager, operation, subresource)

    def describe(self) -> str:
        """printManager in managedfields/internal/conflict.go."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}" + (f" at {self.time}" if self.time else "")
        return text

    def render(self) -> JSON:
        out: JSON = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = to_fields_v1(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def _element(key: str) -> str:
    return key[2:] if key.startswith("f:") else key


def from_fields_v1(trie: JSON, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in trie.items():
        if key == ".":
            out.add(prefix)
            continue
        path = (*prefix, _element(key))
        if isinstance(child, dict) and child:
            out |= from_fields_v1(child, path)
        else:
            out.add(path)
    return out


def to_fields_v1(paths: Iterable[Path]) -> JSON:
    """The FieldsV1 trie: `f:name` keys, `{}` for a member leaf, `.` for a member with children."""
    members = set(paths)
    root: JSON = {}
    for path in sorted(members):
        node = root
        for element in path:
            key = element if element[:2] in ("k:", "v:", "i:") else f"f:{element}"
            node = node.setdefault(key, {})
    for path in members:
        node = root
        for element in path:
            key = element if element[:2] in ("k:", "v:", "i:") else f"f:{element}"
            node = node[key]
        if node and "." not in node:
            node["."] = {}
    return _sorted(root)


def _sorted(trie: JSON) -> JSON:
    return {k: _sorted(trie[k]) for k in sorted(trie)}


def parse_managed(obj: JSON) -> list[Entry]:
    entries = []
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(raw, dict) or not raw.get("manager"):
            continue
        entries.append(
            Entry(
                manager=str(raw["manager"]),
                operation=str(raw.get("operation", "Update")),
                api_version=str(raw.get("apiVersion", "")),
                subresource=str(raw.get("subresource", "")),
                time=str(raw.get("time", "")),
                fields=from_fields_v1(raw.get("fieldsV1") or {}),
            )
        )
    return entries


def render_managed(entries: list[Entry]) -> list[JSON]:
    """Sorted as upstream's sortEncodedManagedFields: operation, time, manager, version."""
    kept = [e for e in entries if e.fields]
    kept.sort(key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource))
    return [e.render() for e in kept]


def _find(
    entries: list[Entry], manager: str, operation: str, subresource: str, api_version: str
) -> Entry:
    for entry in entries:
        if entry.same_manager(manager, operation, subresource) and (
            operation == "Apply" or entry.api_version == api_version
        ):
            return entry
    entry = Entry(manager, operation, api_version, subresource)
    entries.append(entry)
    return entry


def _identity(entries: list[Entry]) -> list[tuple[str, str, str, str, frozenset[Path]]]:
    return sorted(
        (e.manager, e.operation, e.subresource, e.api_version, frozenset(e.fields))
        for e in entries
        if e.fields
    )


# -- writes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """Who writes, through which endpoint: `tracked` says which paths that endpoint sets."""

    manager: str
    subresource: str
    api_version: str
    now: str
    tracked: Tracked


def apply(live: JSON, config: JSON, writer: Writer, *, force: bool) -> JSON:
    """The object after `writer` applies `config` to `live` (an empty dict when creating)."""
    entries = parse_managed(live)
    before = _identity(entries)
    applied = {p for p in leaves(config) if owned_at_all(p) and writer.tracked(p)}
    me = _find(entries, writer.manager, "Apply", writer.subresource, writer.api_version)
    previous = set(me.fields)
    conflicts = [
        (entry, path)
        for entry in entries
        if entry is not me
        for path in sorted(entry.fields & applied)
        if value_at(live, path) != value_at(config, path)
    ]
    if conflicts and not force:
        raise conflict_error(conflicts)
    for entry, path in conflicts:
        entry.fields.discard(path)
    merged = copy.deepcopy(live)
    for path in object_paths(config):
        if (
            writer.tracked(path)
            and owned_at_all(path)
            and not isinstance(value_at(merged, path), dict)
        ):
            _set_at(merged, path, {})
    for path in applied:
        _set_at(merged, path, value_at(config, path))
    others = set().union(*(e.fields for e in entries if e is not me))
    for path in sorted(previous - applied, reverse=True):
        if path not in others:
            _remove_at(merged, path, others | applied)
    me.fields = applied
    me.api_version = writer.api_version
    if _identity(entries) == before and _without_managed(merged) == _without_managed(live):
        return live  # a no-op apply writes nothing, so the resourceVersion stays
    me.time = writer.now
    merged.setdefault("metadata", {})["managedFields"] = render_managed(entries)
    return merged


def track_update(old: JSON, new: JSON, writer: Writer) -> JSON:
    """`new` with managedFields updated for a non-apply write of `old` -> `new`."""
    entries = parse_managed(new)
    changed = {
        p
        for p in leaves(new)
        if owned_at_all(p) and writer.tracked(p) and value_at(old, p) != value_at(new, p)
    } | {
        p
        for p in object_paths(new)
        if len(p) > 1 and owned_at_all(p) and writer.tracked(p) and value_at(old, p) is MISSING
    }
    removed = {p for p in leaves(old) | object_paths(old) if value_at(new, p) is MISSING}
    for entry in entries:
        entry.fields = {
            p for p in entry.fields - changed if not any(p[: len(r)] == r for r in removed)
        }
    if changed:
        me = _find(entries, writer.manager, "Update", writer.subresource, writer.api_version)
        me.fields |= changed
        me.time = writer.now
    result = copy.deepcopy(new)
    result.setdefault("metadata", {})["managedFields"] = render_managed(entries)
    if not result["metadata"]["managedFields"]:
        del result["metadata"]["managedFields"]
    return result


def _without_managed(obj: JSON) -> JSON:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    """internal.NewConflictError: one cause per field, the message grouped by manager."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {e.describe()}",
            "field": path_string(p),
        }
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {entry.describe()}: {path_string(path)}"
        )
        return apply_conflict(causes, message)
    by_manager: dict[tuple[str, str, str], tuple[Entry, list[Path]]] = {}
    for entry, path in conflicts:
        key = (entry.manager, entry.operation, entry.subresource)
        by_manager.setdefault(key, (entry, []))[1].append(path)
    lines = []
    for key in sorted(by_manager):
        entry, paths = by_manager[key]
        lines.append(f"conflicts with {entry.describe()}:")
        lines += [f"- {path_string(p)}" for p in paths]
    return apply_conflict(
        causes, f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    )
