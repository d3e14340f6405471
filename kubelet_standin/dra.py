"""A kubelet stand-in for DRA: the plugin watcher, the DRA plugin manager and device health.

Behaves as kubelet does (kubernetes/kubernetes):

- pkg/kubelet/pluginmanager (pluginwatcher/plugin_watcher.go as of commit
  4a0608cb77f6a53af41cb4a453af104a4d4a0610, operationexecutor/operation_generator.go as of
  db8b216c556cbd896ffb49a0a7bf13443230d18c): every unix socket in ``<root>/plugins_registry``
  whose name does not start with "." is a plugin; inotify says when that changes, and a
  reconcile pass (also every second, the reconciler's period) deregisters plugins whose
  socket vanished or was re-created and registers new ones: dial (10 s), GetInfo (1 s),
  validate, register, NotifyRegistrationStatus (5 s) with ``plugin_registered=True``, or
  with False and upstream's error text when the type or versions are wrong. A failed
  registration is tried again on the next pass.
- pkg/kubelet/cm/dra/plugin (dra_plugin_manager.go as of
  f82973064c7b301c10769b367a0ca9d046b59451): the type must be "DRAPlugin"; the first of the
  plugin's ``supported_versions`` that kubelet knows is chosen ("v1.DRAPlugin", then
  "v1beta1.DRAPlugin"); the endpoint is connected lazily; if the plugin advertises
  "v1alpha1.DRAResourceHealth", NodeWatchResources is opened and, whenever it ends, opened
  again 5 s later (``wait.UntilWithContext``), except after UNIMPLEMENTED (the plugin
  declines health, kubelet stops watching); deregistration cancels it.
- the health cache: each report is merged per (driver, pool, device); a device that was
  not refreshed within its ``health_check_timeout_seconds`` (30 s by default) reads
  "Unknown".

Not done: subdirectories of plugins_registry, several plugins per driver (rolling
updates: the newest registration is used), ResourceSlice wiping, the 45 s call timeout's
metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from dra_driver._proto import dra_health_v1alpha1_pb2 as health_pb
from dra_driver._proto import dra_health_v1alpha1_pb2_grpc as health_grpc
from dra_driver._proto import dra_v1_pb2 as v1
from dra_driver._proto import dra_v1_pb2_grpc as v1_grpc
from dra_driver._proto import dra_v1beta1_pb2 as v1beta1
from dra_driver._proto import dra_v1beta1_pb2_grpc as v1beta1_grpc
from dra_driver._proto import pluginregistration_v1_pb2 as reg_pb
from dra_driver._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from dra_driver.api import (
    DRA_V1_SERVICE,
    DRA_V1BETA1_SERVICE,
    HEALTH_V1ALPHA1_SERVICE,
    PLUGIN_TYPE,
    REGISTRY_DIR,
    UNKNOWN,
)

logger = logging.getLogger(__name__)

KUBELET_SERVICES = (DRA_V1_SERVICE, DRA_V1BETA1_SERVICE)
"""The DRAPlugin services kubelet can call (servicesSupportedByKubelet)."""
DIAL_TIMEOUT = 10.0
GET_INFO_TIMEOUT = 1.0
NOTIFY_TIMEOUT = 5.0
CALL_TIMEOUT = 45.0
"""kubelet's defaultClientCallTimeout for NodePrepareResources and friends."""
RECONCILE_PERIOD = 1.0
HEALTH_RETRY = 5.0
HEALTH_TIMEOUT = 30.0
"""kubelet's default device health timeout: older health reads as unknown."""
MESSAGE_MAX = 1024
_HEALTH_NAMES = {health_pb.HEALTHY: "Healthy", health_pb.UNHEALTHY: "Unhealthy"}

ClaimTuple = tuple[str, str, str]
"""(namespace, name, uid) of a ResourceClaim."""
PrepareResponse = v1.NodePrepareResourcesResponse | v1beta1.NodePrepareResourcesResponse
UnprepareResponse = v1.NodeUnprepareResourcesResponse | v1beta1.NodeUnprepareResourcesResponse


@dataclass(frozen=True, slots=True)
class DeviceHealthState:
    """One device's health as last reported, and when kubelet received it."""

    health: str
    last_updated: int
    message: str
    received_at: float
    """time.monotonic() at receipt."""
    timeout: float


@dataclass
class DraPlugin:
    """What the stand-in knows of one registered plugin."""

    driver: str
    registration_socket: Path
    socket_identity: tuple[int, int]
    """(inode, ctime) of the registration socket: a re-created socket is a new plugin."""
    endpoint: str
    service: str
    """The chosen DRAPlugin service, e.g. "v1.DRAPlugin"."""
    supported_versions: tuple[str, ...]
    channel: grpc.aio.Channel
    health_task: asyncio.Task[None] | None = None
    health_streams: int = 0
    """How many NodeWatchResources streams were opened."""
    health_stream_ends: int = 0
    health_stream_error: str | None = None
    """How the last stream ended ("UNAVAILABLE: ..."), None for a clean end."""
    health_watching: bool = False

    @property
    def version(self) -> str:
        return self.service.split(".", 1)[0]


_M = TypeVar("_M", bound=Message)


def _convert(message: Message, to: type[_M]) -> _M:
    # v1 and v1beta1 share one wire schema: kubelet converts between them, so does this.
    return to.FromString(message.SerializeToString())


def _claims(claims: Sequence[ClaimTuple]) -> list[v1.Claim]:
    return [v1.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in claims]


def _go_quote(items: Sequence[str]) -> str:
    # Go's %q of a []string, as in kubelet's error text.
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


class DraPluginWatcher:
    """kubelet's plugin watcher and DRA plugin manager, over real sockets."""

    def __init__(
        self,
        kubelet_root: Path,
        *,
        services: Sequence[str] = KUBELET_SERVICES,
        reconcile_period: float = RECONCILE_PERIOD,
        health_retry: float = HEALTH_RETRY,
        health_timeout: float = HEALTH_TIMEOUT,
    ) -> None:
        self.registry_dir = Path(kubelet_root) / REGISTRY_DIR
        self._services = tuple(services)
        self._period = reconcile_period
        self._health_retry = health_retry
        self._health_timeout = health_timeout
        self.registered: dict[Path, DraPlugin] = {}
        """Registration socket -> plugin, oldest first."""
        self.notifications: list[tuple[str, bool, str]] = []
        """(socket name, plugin_registered, error) of every NotifyRegistrationStatus sent."""
        self._registering: dict[Path, asyncio.Task[None]] = {}
        self._health: dict[str, dict[tuple[str, str], DeviceHealthState]] = {}
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inotify: INotify | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Create the registry dir (as kubelet does) and watch it."""
        self.registry_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._watch()
        self._task = asyncio.create_task(self._run(), name="dra-standin:reconcile")

    def _watch(self) -> None:
        try:
            inotify = INotify()
            mask = inotify_flags.CREATE | inotify_flags.DELETE | inotify_flags.MOVED_TO
            inotify.add_watch(str(self.registry_dir), mask | inotify_flags.MOVED_FROM)
        except OSError as error:  # out of watches: poll instead
            logger.warning("cannot watch %s (%s): polling every 0.1 s", self.registry_dir, error)
            self._period = min(self._period, 0.1)
            return
        asyncio.get_running_loop().add_reader(inotify.fileno(), self._on_inotify, inotify)
        self._inotify = inotify

    def _on_inotify(self, inotify: INotify) -> None:
        inotify.read(timeout=0)  # what changed does not matter: the pass compares it all
        self._wake.set()

    async def stop(self) -> None:
        """Stop watching and disconnect from every plugin (no NotifyRegistrationStatus)."""
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
        tasks = [*self._registering.values(), *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        for path in list(self.registered):
            await self._deregister(path, "the stand-in stopped")

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                await self._reconcile()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._period):
                        await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "the DRA stand-in's reconcile loop crashed; plugins are no longer watched"
            )
            raise

    # -- reconcile: desired (sockets) against actual (registered plugins) ---------------

    def _sockets(self) -> dict[Path, tuple[int, int]]:
        found: dict[Path, tuple[int, int]] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(self.registry_dir) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISSOCK(info.st_mode):
                        found[Path(entry.path)] = (info.st_ino, info.st_ctime_ns)
        return found

    async def _reconcile(self) -> None:
        desired = self._sockets()
        for path, plugin in list(self.registered.items()):
            identity = desired.get(path)
            if identity != plugin.socket_identity:
                why = "its socket was removed" if identity is None else "its socket was re-created"
                await self._deregister(path, why)
        for path, identity in desired.items():
            if path not in self.registered and path not in self._registering:
                self._registering[path] = asyncio.create_task(
                    self._register(path, identity), name=f"dra-standin:register:{path.name}"
                )

    async def _register(self, path: Path, identity: tuple[int, int]) -> None:
        channel = grpc.aio.insecure_channel(f"unix://{path}")
        try:
            await asyncio.wait_for(channel.channel_ready(), DIAL_TIMEOUT)
            stub = reg_grpc.RegistrationStub(channel)
            info = await stub.GetInfo(reg_pb.InfoRequest(), timeout=GET_INFO_TIMEOUT)
            problem, service = self._validate(info, path)
            if problem:
                await self._notify(stub, path, registered=False, error=problem)
                return
            self._add(info, service, path, identity)
            await self._notify(stub, path, registered=True, error="")
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else "timed out"
            logger.warning("RegisterPlugin error at socket %s: %s; trying again", path, detail)
        except Exception:
            logger.exception("registering the plugin at %s failed; trying again", path)
        finally:
            self._registering.pop(path, None)
            await channel.close()

    def _validate(self, info: reg_pb.PluginInfo, path: Path) -> tuple[str, str]:
        """(problem, "") in kubelet's words, or ("", chosen service)."""
        if info.type != PLUGIN_TYPE:
            return (
                f"RegisterPlugin error -- no handler registered for plugin type: {info.type} "
                f"at socket {path}",
                "",
            )
        endpoint = info.endpoint or str(path)
        versions = list(info.supported_versions)
        chosen = next((s for s in versions if s in self._services), "")
        if not versions:
            reason = "empty list of supported gRPC services (aka supported versions)"
        elif not chosen:
            reason = (
                f"none of services supported by the plugin ({_go_quote(versions)}) "
                f"are supported by the kubelet ({_go_quote(self._services)})"
            )
        elif any(p.endpoint == endpoint for p in self.registered.values()):
            return (
                "RegisterPlugin error -- plugin registration failed with err: endpoint "
                f"{endpoint} already registered for DRA driver plugin {info.name}",
                "",
            )
        else:
            return "", chosen
        return (
            "RegisterPlugin error -- plugin validation failed with err: invalid supported "
            f"gRPC versions of DRA driver plugin {info.name} at endpoint {endpoint}: {reason}",
            "",
        )

    async def _notify(
        self, stub: reg_grpc.RegistrationAsyncStub, path: Path, *, registered: bool, error: str
    ) -> None:
        self.notifications.append((path.name, registered, error))
        if error:
            logger.warning("%s", error)
        status = reg_pb.RegistrationStatus(plugin_registered=registered, error=error)
        try:
            await stub.NotifyRegistrationStatus(status, timeout=NOTIFY_TIMEOUT)
        except grpc.aio.AioRpcError as failure:
            # A plugin told of a failure answers with an error too (upstream's helper does).
            level = logging.DEBUG if error else logging.WARNING
            logger.log(level, "NotifyRegistrationStatus at %s: %s", path, failure.details())
        await self._notify_change()

    def _add(
        self, info: reg_pb.PluginInfo, service: str, path: Path, identity: tuple[int, int]
    ) -> None:
        endpoint = info.endpoint or str(path)
        # kubelet creates the connection once; gRPC connects on demand (conn.Connect()).
        channel = grpc.aio.insecure_channel(f"unix:{endpoint}")
        channel.get_state(try_to_connect=True)
        plugin = DraPlugin(
            driver=info.name,
            registration_socket=path,
            socket_identity=identity,
            endpoint=endpoint,
            service=service,
            supported_versions=tuple(info.supported_versions),
            channel=channel,
        )
        self.registered[path] = plugin
        if HEALTH_V1ALPHA1_SERVICE in plugin.supported_versions:
            plugin.health_task = asyncio.create_task(
                self._watch_health(plugin), name=f"dra-standin:health:{plugin.driver}"
            )
        logger.info("registered DRA plugin %s at %s (%s)", plugin.driver, endpoint, service)

    async def _deregister(self, path: Path, why: str) -> None:
        plugin = self.registered.pop(path)
        if plugin.health_task is not None:
            plugin.health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin.health_task
        await plugin.channel.close()
        logger.info("deregistered DRA plugin %s: %s", plugin.driver, why)
        await self._notify_change()

    # -- device health -------------------------------------------------------------

    async def _watch_health(self, plugin: DraPlugin) -> None:
        stub = health_grpc.DRAResourceHealthStub(plugin.channel)
        while True:
            plugin.health_streams += 1
            call = stub.NodeWatchResources(health_pb.NodeWatchResourcesRequest())
            code: grpc.StatusCode | None = None
            try:
                await call.wait_for_connection()
                plugin.health_watching = True
                async for response in call:
                    self._merge(plugin.driver, response)
                    await self._notify_change()
                plugin.health_stream_error = None
            except grpc.aio.AioRpcError as error:
                code = error.code()
                plugin.health_stream_error = f"{code.name}: {error.details()}"
            finally:
                plugin.health_watching = False
                call.cancel()
            plugin.health_stream_ends += 1
            await self._notify_change()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                logger.info("DRA plugin %s reports no device health: not watching", plugin.driver)
                return
            logger.info(
                "the health stream of DRA plugin %s ended (%s); opening it again in %s s",
                *(plugin.driver, plugin.health_stream_error or "by the plugin", self._health_retry),
            )
            await asyncio.sleep(self._health_retry)  # kubelet's retry period

    def _merge(self, driver: str, response: health_pb.NodeWatchResourcesResponse) -> None:
        cache = self._health.setdefault(driver, {})
        now = time.monotonic()
        for device in response.devices:
            message = device.message
            if len(message) > MESSAGE_MAX:
                message = message[: MESSAGE_MAX - 3] + "..."
            timeout = device.health_check_timeout_seconds
            cache[(device.device.pool_name, device.device.device_name)] = DeviceHealthState(
                health=_HEALTH_NAMES.get(device.health, UNKNOWN),
                last_updated=device.last_updated_time,
                message=message,
                received_at=now,
                timeout=float(timeout) if timeout > 0 else self._health_timeout,
            )

    def device_health(self, driver: str, pool: str, device: str) -> DeviceHealthState | None:
        """The last report of one device (however old), or None."""
        return self._health.get(driver, {}).get((pool, device))

    def health(self, driver: str) -> dict[tuple[str, str], str]:
        """(pool, device) -> "Healthy" | "Unhealthy" | "Unknown" (also when stale)."""
        now = time.monotonic()
        return {
            key: state.health if now - state.received_at <= state.timeout else UNKNOWN
            for key, state in self._health.get(driver, {}).items()
        }

    # -- observation ---------------------------------------------------------------

    def plugin(self, driver: str) -> DraPlugin | None:
        """The newest registration of `driver`, or None."""
        found = [p for p in self.registered.values() if p.driver == driver]
        return found[-1] if found else None

    def plugins(self) -> dict[str, str]:
        """Driver name -> chosen API version ("v1" or "v1beta1")."""
        return {p.driver: p.version for p in self.registered.values()}

    async def _notify_change(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[DraPluginWatcher], bool], timeout: float = 5
    ) -> None:
        """Wait until `predicate(self)` holds; TimeoutError otherwise. Re-checked on every
        change and at least every 0.1 s (staleness changes nothing but the clock)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await self._changed.wait()

    async def wait_registered(self, driver: str, timeout: float = 5) -> None:
        await self.wait_for(lambda w: driver in w.plugins(), timeout)

    async def wait_health(
        self, driver: str, pool: str, device: str, health: str, timeout: float = 5
    ) -> None:
        await self.wait_for(lambda w: w.health(driver).get((pool, device)) == health, timeout)

    # -- calls ---------------------------------------------------------------------

    def _registered_plugin(self, driver: str) -> DraPlugin:
        plugin = self.plugin(driver)
        if plugin is None:
            raise LookupError(f"DRA driver {driver} is not registered")
        return plugin

    async def prepare(
        self, driver: str, claims: Sequence[ClaimTuple], *, timeout: float = CALL_TIMEOUT
    ) -> PrepareResponse:
        """NodePrepareResources through the chosen version."""
        plugin = self._registered_plugin(driver)
        request = v1.NodePrepareResourcesRequest(claims=_claims(claims))
        if plugin.service == DRA_V1_SERVICE:
            stub = v1_grpc.DRAPluginStub(plugin.channel)
            return await stub.NodePrepareResources(request, timeout=timeout)
        beta = v1beta1_grpc.DRAPluginStub(plugin.channel)
        return await beta.NodePrepareResources(
            _convert(request, v1beta1.NodePrepareResourcesRequest), timeout=timeout
        )

    async def unprepare(
        self, driver: str, claims: Sequence[ClaimTuple], *, timeout: float = CALL_TIMEOUT
    ) -> UnprepareResponse:
        """NodeUnprepareResources through the chosen version."""
        plugin = self._registered_plugin(driver)
        request = v1.NodeUnprepareResourcesRequest(claims=_claims(claims))
        if plugin.service == DRA_V1_SERVICE:
            stub = v1_grpc.DRAPluginStub(plugin.channel)
            return await stub.NodeUnprepareResources(request, timeout=timeout)
        beta = v1beta1_grpc.DRAPluginStub(plugin.channel)
        return await beta.NodeUnprepareResources(
            _convert(request, v1beta1.NodeUnprepareResourcesRequest), timeout=timeout
        )
