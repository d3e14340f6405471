"""The product's kubelet DRA plugin: its two sockets, their servers, and registration.

Behaves as upstream's ``k8s.io/dynamic-resource-allocation/kubeletplugin`` helper does
(kubernetes/kubernetes staging/src/k8s.io/dynamic-resource-allocation/kubeletplugin:
draplugin.go as of commit fde22c3f9aacfd260225a9741de123a41157b7c0, noderegistrar.go as of
fa7ba8e2f963aad48acbd0aee416f9743af443f5, endpoint.go as of
4966917a139d6a29f8ef316ceb405b171bb362c2):

- the DRA services are served first, on ``<kubelet root>/plugins/<driver>/dra.sock``:
  DRAPlugin v1 and v1beta1 and DRAResourceHealth v1alpha1; then the registration service,
  on ``<kubelet root>/plugins_registry/<driver>-reg.sock``, so that kubelet only learns of
  a plugin that serves;
- GetInfo answers type "DRAPlugin", the driver name, the absolute path of dra.sock and the
  services as ``supported_versions``: "v1.DRAPlugin", "v1beta1.DRAPlugin",
  "v1alpha1.DRAResourceHealth";
- a stale file at either socket path is removed before listening; at stop the DRA server
  stops first, then registration, and both socket files are removed.

Owns the lifecycle; the gRPC translation is `kubelet_services`'s, the contract
(`ClaimRef`, `PrepareResult`, ...) `api`'s, re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from dra_driver._proto import dra_health_v1alpha1_pb2_grpc as health_grpc
from dra_driver._proto import dra_v1_pb2_grpc as v1_grpc
from dra_driver._proto import dra_v1beta1_pb2_grpc as v1beta1_grpc
from dra_driver._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from dra_driver.api import (
    DRA_V1_SERVICE,
    DRA_V1BETA1_SERVICE,
    HEALTH_V1ALPHA1_SERVICE,
    HEALTHY,
    MAX_SOCKET_PATH,
    PLUGIN_TYPE,
    PLUGINS_DIR,
    REGISTRY_DIR,
    SERVICE_SOCKET,
    SUPPORTED_SERVICES,
    UNHEALTHY,
    UNKNOWN,
    ClaimRef,
    DeviceHealth,
    Driver,
    KubeletPluginError,
    PreparedDevice,
    PrepareResult,
)
from dra_driver.kubelet_services import (
    DraV1beta1Service,
    DraV1Service,
    DriverCalls,
    HealthService,
    RegistrationService,
    plugin_info,
)
from plugin_worker.files import private_umask

__all__ = [
    "DRA_V1BETA1_SERVICE",
    "DRA_V1_SERVICE",
    "HEALTHY",
    "HEALTH_V1ALPHA1_SERVICE",
    "PLUGIN_TYPE",
    "SUPPORTED_SERVICES",
    "UNHEALTHY",
    "UNKNOWN",
    "ClaimRef",
    "DeviceHealth",
    "Driver",
    "KubeletPlugin",
    "KubeletPluginError",
    "PrepareResult",
    "PreparedDevice",
]

logger = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""Seconds a Prepare or Unprepare in flight at stop may take to finish."""


# -- lifecycle ------------------------------------------------------------------------


def _bind(server: grpc.aio.Server, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    # A stale socket would make listening fail: removed first, as upstream's endpoint.listen.
    path.unlink(missing_ok=True)
    with private_umask():
        return server.add_insecure_port(f"unix://{path}")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


class KubeletPlugin:
    """One DRA driver's kubelet plugin; can be started and stopped repeatedly."""

    def __init__(
        self,
        driver_name: str,
        kubelet_root: Path,
        driver: Driver,
        *,
        on_registered: Callable[[bool, str], None] | None = None,
        serialize: bool = True,
    ) -> None:
        if not driver_name or "/" in driver_name:
            raise ValueError(f"invalid DRA driver name {driver_name!r}: a DNS subdomain is needed")
        self.driver_name = driver_name
        self.registration_socket = Path(kubelet_root) / REGISTRY_DIR / f"{driver_name}-reg.sock"
        self.service_socket = Path(kubelet_root) / PLUGINS_DIR / driver_name / SERVICE_SOCKET
        for path in (self.registration_socket, self.service_socket):
            if len(os.fsencode(path)) > MAX_SOCKET_PATH:
                raise ValueError(
                    f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes: "
                    "use a shorter kubelet root directory or driver name"
                )
        self.registered = False
        """From the last NotifyRegistrationStatus (False until kubelet sends one)."""
        self._driver = driver
        self._on_registered = on_registered
        self._calls = DriverCalls(driver_name, driver, serialize=serialize)
        self._servers: list[tuple[grpc.aio.Server, Path]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Serve the DRA services on `service_socket`, then registration on
        `registration_socket` (upstream's order: kubelet only learns of a served plugin)."""
        if self._servers:
            raise KubeletPluginError(f"the kubelet plugin of {self.driver_name} is already started")
        self.registered = False
        self._stopping = asyncio.Event()
        service = grpc.aio.server()
        v1_grpc.add_DRAPluginServicer_to_server(DraV1Service(self._calls), service)
        v1beta1_grpc.add_DRAPluginServicer_to_server(DraV1beta1Service(self._calls), service)
        health = HealthService(self.driver_name, self._driver, self._stopping)
        health_grpc.add_DRAResourceHealthServicer_to_server(health, service)
        registration = grpc.aio.server()
        info = plugin_info(self.driver_name, self.service_socket)
        reg_grpc.add_RegistrationServicer_to_server(
            RegistrationService(info, self._registration_status), registration
        )
        try:
            await self._serve(service, self.service_socket)
            await self._serve(registration, self.registration_socket, hidden_first=True)
        except BaseException:
            await self.stop()
            raise
        logger.info("[%s] kubelet plugin serving on %s, registering through %s",
                    self.driver_name, self.service_socket, self.registration_socket)  # fmt: skip

    async def _serve(
        self, server: grpc.aio.Server, path: Path, *, hidden_first: bool = False
    ) -> None:
        """Bind and start `server` on `path`. With `hidden_first`, under a name starting with
        '.' (which kubelet's plugin watcher ignores) and renamed into place once serving:
        a socket file exists from bind, listening only from start, and a kubelet that
        dials in between waits out gRPC's reconnect backoff (a second, seen in benchmarks)."""
        self._servers.append((server, path))  # before binding: stop() stops it whatever happens
        bound_at = path.with_name("." + path.name) if hidden_first else path
        try:
            bound = _bind(server, bound_at)
        except (OSError, RuntimeError) as error:
            raise KubeletPluginError(
                f"[{self.driver_name}] cannot listen on {path}: {error} "
                "(is its directory writable, and the path no directory?)"
            ) from error
        if not bound:
            raise KubeletPluginError(f"[{self.driver_name}] cannot listen on {path}")
        await server.start()
        if bound_at != path:
            os.replace(bound_at, path)

    async def stop(self) -> None:
        """End the health streams, stop both servers (upstream's order: DRA services first),
        and remove their socket files."""
        self._stopping.set()
        servers, self._servers = self._servers, []
        for server, path in servers:
            await server.stop(STOP_GRACE)
            _remove(path)
        if servers:
            logger.info("[%s] kubelet plugin stopped", self.driver_name)

    def _registration_status(self, registered: bool, error: str) -> None:
        self.registered = registered
        if registered:
            logger.info("[%s] registered with kubelet", self.driver_name)
        else:
            logger.error("[%s] kubelet refused the registration: %s", self.driver_name, error)
        if self._on_registered is not None:
            try:
                self._on_registered(registered, error)
            except Exception:
                logger.exception("[%s] the on_registered callback raised", self.driver_name)
