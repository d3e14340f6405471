"""The contract between the supervisor and a per-resource device-plugin worker.

Owns the value types a worker is built from (`ResourceSpec`, `Device`), the kubelet
API constants, and the `WorkerEvents` protocol through which a worker reports what
happens to it. Nothing here does I/O; the supervisor depends on this module only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

API_VERSION = "v1beta1"
"""The kubelet device-plugin API version this package speaks."""

DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

SOCKET_PREFIX = "widget-"
SOCKET_SUFFIX = ".sock"
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted health fault, in seconds from when the device (or its fault) appeared.

    Healthy until `unhealthy_after`; then unhealthy, or flapping with `flap_period`
    (unhealthy first), until `recover_after` seconds later, if given; healthy after.
    """

    unhealthy_after: float = 0.0
    recover_after: float | None = None
    flap_period: float | None = None


DEVICE_PLUGIN = "device-plugin"
DRA = "dra"
APIS = (DEVICE_PLUGIN, DRA)
"""The kubelet APIs a resource can be served through."""


@dataclass(frozen=True, slots=True)
class Version:
    """A DRA version attribute (a semantic version), apart from a plain string."""

    text: str


AttributeValue = str | int | bool | Version
Attributes = tuple[tuple[str, AttributeValue], ...]
"""DRA device attributes by name, sorted; a name without a domain is in the driver's."""
Capacity = tuple[tuple[str, str], ...]
"""DRA device capacity: name to a Kubernetes quantity, sorted."""


@dataclass(frozen=True, slots=True)
class Device:
    """One advertised device: the ID kubelet sees, the host path it stands for, and more."""

    id: str
    path: str
    health: str = HEALTHY
    """The configured health; scripted faults and a failing resource override it."""
    numa: int | None = None
    fault: Fault | None = None
    replica_of: str | None = None
    """For a shared resource: the ID of the physical device this replica stands for."""
    attributes: Attributes = ()
    """This device's own DRA attributes, over the resource's."""
    capacity: Capacity = ()

    def __reduce__(self) -> tuple[type[Device], tuple[object, ...]]:
        # Configs come back from the parser process pickled: as constructor arguments a
        # device unpickles 3x faster than through the generic slots-state protocol.
        return Device, (
            self.id, self.path, self.health, self.numa, self.fault, self.replica_of,
            self.attributes, self.capacity,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class AllocateFaults:
    """Admission faults: slow or failing Allocate, for testing how kubelet copes."""

    delay: float = 0.0
    failure_rate: float = 0.0
    seed: int | None = None


PREFERRED_POLICIES = ("none", "packed", "spread")


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """Everything one worker needs to serve one extended resource.

    Specs are compared by value: the supervisor restarts nothing whose spec is
    unchanged, and only pushes a new device list when `devices` changed.
    """

    name: str
    """Extended resource name, e.g. ``ska-sdp.org/snaffler-v1``."""
    devices: tuple[Device, ...]
    env_prefix: str
    """Prefix of the resource-scoped environment variables, e.g. ``WIDGET_SNAFFLER_V1``."""
    labels: tuple[tuple[str, str], ...] = field(default=())
    """Free-form descriptive pairs (type, model) for logs and tables."""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    cdi_kind: str | None = None
    """When set, Allocate also returns CDI device names ``<cdi_kind>=<device ID>``."""
    preferred_policy: str = "none"
    allocate_faults: AllocateFaults = AllocateFaults()
    failing: bool = False
    """The whole resource reports every device Unhealthy."""
    api: str = DEVICE_PLUGIN
    """Which kubelet API serves it: `DEVICE_PLUGIN` or `DRA`."""
    replicas: int = 1
    """How many times each physical device is shared (`devices` holds every replica)."""
    attributes: Attributes = ()
    """DRA attributes of every device (a device's own win)."""
    capacity: Capacity = ()

    @property
    def type(self) -> str:
        return dict(self.labels).get("type", "")

    @property
    def model(self) -> str:
        return dict(self.labels).get("model", "")

    def socket_name(self, plugin_dir: str) -> str:
        return socket_name_for(self.name, plugin_dir)


def socket_name_for(resource_name: str, plugin_dir: str) -> str:
    """A file name for the resource's socket that is unique, readable and fits sun_path.

    ``ska-sdp.org/snaffler-v1`` becomes ``widget-ska-sdp.org_snaffler-v1.sock``: a
    resource name has exactly one ``/`` and its domain part never contains ``_``, so
    the mapping is injective. Names too long for a unix socket path fall back to a
    digest of the resource name, which is still unique and stable.
    """
    readable = SOCKET_PREFIX + resource_name.replace("/", "_") + SOCKET_SUFFIX
    if len(plugin_dir.rstrip("/")) + 1 + len(readable.encode()) <= MAX_SOCKET_PATH:
        return readable
    digest = hashlib.sha256(resource_name.encode()).hexdigest()[:20]
    return SOCKET_PREFIX + digest + SOCKET_SUFFIX


class WorkerEvents(Protocol):
    """What a worker reports; the supervisor turns it into metrics and logs."""

    def allocated(self, resource: str, *, containers: int, devices: int, seconds: float) -> None:
        """An Allocate call succeeded for `containers` container requests."""

    def allocation_failed(self, resource: str, *, reason: str, seconds: float) -> None:
        """An Allocate call was refused; `reason` is a short bounded label."""

    def registration_changed(self, resource: str, *, registered: bool) -> None:
        """The worker became registered with kubelet, or stopped being so."""


class NullEvents:
    """A `WorkerEvents` that ignores everything (for library use without metrics)."""

    def allocated(self, resource: str, *, containers: int, devices: int, seconds: float) -> None:
        pass

    def allocation_failed(self, resource: str, *, reason: str, seconds: float) -> None:
        pass

    def registration_changed(self, resource: str, *, registered: bool) -> None:
        pass
