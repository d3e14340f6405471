"""The contract of the DRA kubelet plugin: the values a `Driver` exchanges with it, the
`Driver` protocol itself, and the kubelet API constants. No I/O and no gRPC here.

Names follow upstream's kubeletplugin helper (``PrepareResult``, ``Device`` as
`PreparedDevice`, ``DeviceHealth``) so that its documentation applies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

PLUGIN_TYPE = "DRAPlugin"
"""PluginInfo.type of a DRA plugin (upstream pluginregistration/v1/constants.go)."""
DRA_V1_SERVICE = "v1.DRAPlugin"
DRA_V1BETA1_SERVICE = "v1beta1.DRAPlugin"
HEALTH_V1ALPHA1_SERVICE = "v1alpha1.DRAResourceHealth"
SUPPORTED_SERVICES = (DRA_V1_SERVICE, DRA_V1BETA1_SERVICE, HEALTH_V1ALPHA1_SERVICE)
"""PluginInfo.supported_versions, in upstream's order: "<proto package>.<service>" names."""

REGISTRY_DIR = "plugins_registry"
PLUGINS_DIR = "plugins"
SERVICE_SOCKET = "dra.sock"
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class ClaimRef:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class PreparedDevice:
    pool: str
    device: str
    requests: tuple[str, ...]
    """Request names of the claim this device serves ("request/subrequest" is sent as
    "request", as upstream does); empty: all of them."""
    cdi_device_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PrepareResult:
    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""
    """Non-empty: this claim failed (its devices are ignored); kubelet asks again later."""


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    pool: str
    device: str
    health: str
    """"Healthy", "Unhealthy" or "Unknown"; anything else is sent as unknown."""
    last_updated: float
    """Unix seconds when the driver determined this health (whole seconds on the wire)."""
    message: str = ""
    """Optional detail (kubelet keeps at most 1024 characters)."""
    health_check_timeout: float = 0.0
    """Seconds after which kubelet reads the device as unknown without a fresh report;
    0: kubelet's default (30 s)."""


class Driver(Protocol):
    """What the kubelet plugin calls; prepare and unprepare must be idempotent."""

    async def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        """Prepare these claims; one result per claim, keyed by claim uid. Raising fails
        the whole call (kubelet retries all of them)."""
        ...

    async def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str]:
        """Undo `prepare` (also for claims not prepared); claim uid -> error, "" if done."""
        ...

    def health(self) -> AsyncIterator[Sequence[DeviceHealth]]:
        """Device health reports, one iterator per kubelet stream (kubelet may reconnect).

        The first report is a full snapshot of the driver's devices; later ones follow each
        change and may be full or cover only the changed devices: kubelet merges every
        report into its cache, and a device absent from one keeps its last health. Re-send
        a device's health within its `DeviceHealth.health_check_timeout` (30 s by default)
        even when nothing changed, or kubelet reads it as "Unknown" (the plugin does not
        re-send for the driver, as upstream's helper does not). Ending the iterator ends the
        stream (kubelet opens a new one); raising NotImplementedError before the first
        report answers UNIMPLEMENTED, which tells kubelet to stop watching.
        """
        ...


class KubeletPluginError(RuntimeError):
    """The plugin cannot serve; the message says why and what to do."""
