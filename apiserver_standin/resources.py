"""The resource types the stand-in serves and how each one behaves (its registry strategy).

Owns names (group, version, plural, kind), scope, subresources, selectable fields and the
per-type rules that upstream keeps in pkg/registry/*/strategy.go. Knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]
FieldGetter = Callable[[JSON], str]


def _path(*keys: str, default: str = "") -> FieldGetter:
    def get(obj: JSON) -> str:
        value: Any = obj
        for key in keys:
            if not isinstance(value, dict) or key not in value or value[key] is None:
                return default
            value = value[key]
        if isinstance(value, bool):
            return "true" if value else "false"  # Go's fmt.Sprint(bool)
        return str(value)

    return get


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    tracks_generation: bool = True
    """Strategy sets generation 1 on create and bumps it when spec changes."""
    create_status: JSON | None = None
    """Status a create starts with, replacing the client's (None: the client's is kept)."""
    status_writes_metadata: bool = False
    """Writes to /status may change labels and annotations (nodes, pods), or only status."""
    returns_deleted_object: bool = True
    """DELETE answers with the object (ReturnDeletedObject) or with a Status Success."""
    fields: Mapping[str, FieldGetter] = field(default_factory=dict)
    """Selectable fields besides metadata.name (and metadata.namespace when namespaced)."""
    empty: JSON = field(default_factory=dict)
    """What Go serializes for an empty object of this kind besides metadata: BOOKMARKs."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def selectable(self, obj: JSON) -> dict[str, str]:
        """The field set a fieldSelector matches against (upstream ToSelectableFields)."""
        meta = obj.get("metadata") or {}
        values = {"metadata.name": str(meta.get("name", ""))}
        if self.namespaced:
            values["metadata.namespace"] = str(meta.get("namespace", ""))
        for name, getter in self.fields.items():
            values[name] = getter(obj)
        return values

    def field_names(self) -> set[str]:
        names = {"metadata.name", *self.fields}
        if self.namespaced:
            names.add("metadata.namespace")
        return names


_NODE_INFO = [
    "machineID",
    "systemUUID",
    "bootID",
    "kernelVersion",
    "osImage",
    "containerRuntimeVersion",
    "kubeletVersion",
    "kubeProxyVersion",
    "operatingSystem",
    "architecture",
]

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        status_subresource=True,
        tracks_generation=False,
        status_writes_metadata=True,
        returns_deleted_object=False,
        fields={"spec.unschedulable": _path("spec", "unschedulable", default="false")},
        empty={
            "spec": {},
            "status": {
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": dict.fromkeys(_NODE_INFO, ""),
            },
        },
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        namespaced=True,
        status_subresource=True,
        create_status={"phase": "Pending"},
        status_writes_metadata=True,
        fields={
            "spec.nodeName": _path("spec", "nodeName"),
            "spec.restartPolicy": _path("spec", "restartPolicy"),
            "spec.schedulerName": _path("spec", "schedulerName"),
            "spec.serviceAccountName": _path("spec", "serviceAccountName"),
            "spec.hostNetwork": _path("spec", "hostNetwork", default="false"),
            "status.phase": _path("status", "phase"),
            "status.podIP": _path("status", "podIP"),
            "status.nominatedNodeName": _path("status", "nominatedNodeName"),
        },
        empty={"spec": {"containers": None}, "status": {}},
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "resourceslices",
        "ResourceSlice",
        namespaced=False,
        fields={"spec.nodeName": _path("spec", "nodeName"), "spec.driver": _path("spec", "driver")},
        empty={
            "spec": {"driver": "", "pool": {"name": "", "generation": 0, "resourceSliceCount": 0}}
        },
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "deviceclasses",
        "DeviceClass",
        namespaced=False,
        empty={"spec": {}},
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "resourceclaims",
        "ResourceClaim",
        namespaced=True,
        status_subresource=True,
        create_status={},
        empty={"spec": {"devices": {}}},
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        namespaced=True,
        tracks_generation=False,
        returns_deleted_object=False,
        empty={"spec": {}},
    ),
)

BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in RESOURCES}


def by_plural(plural: str) -> ResourceType:
    """The type named `plural` (`nodes`) or `plural.group` (`leases.coordination.k8s.io`)."""
    for resource in RESOURCES:
        if plural in (resource.plural, resource.qualified):
            return resource
    raise KeyError(f"the stand-in serves no resource {plural!r}")
