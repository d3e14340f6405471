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
class Device:
    """One mock device: the ID kubelet sees, the host path it stands for, its health."""

    id: str
    path: str
    health: str = HEALTHY


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
