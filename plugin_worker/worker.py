"""One resource's device-plugin server: socket lifecycle, self-check and kubelet registration.

A worker serves on its own unix socket, proves it answers, then registers with
kubelet and keeps that true: when kubelet restarts (``kubelet_restarted``) or the
socket file vanishes (``socket_removed``) it recreates what is missing and registers
again at once. It never imports the supervisor; it reports through `WorkerEvents`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker.api import API_VERSION, KUBELET_SOCKET, ResourceSpec, WorkerEvents
from plugin_worker.inventory import Inventory
from plugin_worker.server import DevicePluginService, plugin_options

logger = logging.getLogger(__name__)

SELF_CHECK_TIMEOUT = 2.0
# kubelet dials the plugin for up to 10 s inside Register before it answers.
REGISTER_TIMEOUT = 12.0
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# Without kubelet.sock there is nothing to retry against: wait for the watcher's
# poke, with a slow timer only as a safety net should an inotify event be missed.
WAIT_FOR_KUBELET = 30.0


class WorkerError(RuntimeError):
    """The worker cannot serve; the message says why and what to do."""


class SocketInUseError(WorkerError):
    pass


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    # The socket file must be created 0600 with no window where it is wider; the
    # event loop is single-threaded, so a short umask change cannot leak elsewhere.
    previous = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(previous)


def socket_answers(path: Path) -> bool:
    """True if something accepts connections on the unix socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
    except OSError as error:
        if error.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def _unix_target(path: Path) -> str:
    return f"unix://{path}"


class PluginWorker:
    """Serves and registers one extended resource."""

    def __init__(self, spec: ResourceSpec, *, plugin_dir: Path, events: WorkerEvents) -> None:
        self._inventory = Inventory(spec)
        self._events = events
        self._plugin_dir = plugin_dir
        self._socket_name = spec.socket_name(str(plugin_dir))
        self._server: grpc.aio.Server | None = None
        self._socket_inode: int | None = None
        self._wake = asyncio.Event()
        self._kubelet_restarted = False
        self._task: asyncio.Task[None] | None = None
        self._registered = False
        self._registrations = 0

    @property
    def name(self) -> str:
        return self._inventory.spec.name

    @property
    def spec(self) -> ResourceSpec:
        return self._inventory.spec

    @property
    def socket_name(self) -> str:
        return self._socket_name

    @property
    def socket_path(self) -> Path:
        return self._plugin_dir / self._socket_name

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def registrations(self) -> int:
        return self._registrations

    def update(self, spec: ResourceSpec) -> bool:
        """Serve a new device list; open ListAndWatch streams receive it at once."""
        return self._inventory.replace(spec)

    def kubelet_restarted(self) -> None:
        """kubelet.sock was (re)created: kubelet forgot every plugin; register again."""
        self._kubelet_restarted = True
        self._set_registered(registered=False)
        self._wake.set()

    def socket_removed(self) -> None:
        """Something deleted a file in the plugin dir: check that our socket survived."""
        self._wake.set()

    async def start(self) -> None:
        """Serve on the socket and prove it answers; registration then runs in the background."""
        await self._serve()
        self._task = asyncio.create_task(self._keep_registered(), name=f"worker:{self.name}")
        self._task.add_done_callback(self._task_ended)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving, end ListAndWatch streams, and remove our socket file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._inventory.close()
        await self._stop_server(grace)
        self._set_registered(registered=False)
        logger.info("[%s] stopped; socket %s removed", self.name, self._socket_name)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "[%s] registration loop crashed; the resource is no longer kept registered",
                self.name,
                exc_info=task.exception(),
            )

    # -- serving -------------------------------------------------------------------

    async def _serve(self) -> None:
        self._clear_stale_socket()
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(
            DevicePluginService(self._inventory, self._events), server
        )
        with _private_umask():
            bound = server.add_insecure_port(_unix_target(self.socket_path))
        if not bound:
            raise WorkerError(f"[{self.name}] could not listen on {self.socket_path}")
        os.chmod(self.socket_path, 0o600)
        self._socket_inode = os.lstat(self.socket_path).st_ino
        await server.start()
        self._server = server
        await self._self_check()
        logger.debug("[%s] serving on %s", self.name, self.socket_path)

    def _clear_stale_socket(self) -> None:
        path = self.socket_path
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise WorkerError(
                f"[{self.name}] {path} exists and is not a socket; "
                "refusing to replace it (remove it if it is not needed)"
            )
        if socket_answers(path):
            raise SocketInUseError(
                f"[{self.name}] {path} is served by another process "
                "(another widget-supervisor on this plugin dir?); not taking it over"
            )
        path.unlink()
        logger.info("[%s] removed stale socket %s", self.name, path)

    async def _self_check(self) -> None:
        async with grpc.aio.insecure_channel(_unix_target(self.socket_path)) as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            try:
                await stub.GetDevicePluginOptions(pb.Empty(), timeout=SELF_CHECK_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                await self._stop_server(0)
                raise WorkerError(
                    f"[{self.name}] own socket does not answer: {error.details()}"
                ) from error

    async def _stop_server(self, grace: float) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        if self._socket_is_ours():
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._socket_inode = None

    def _socket_is_ours(self) -> bool:
        try:
            return os.lstat(self.socket_path).st_ino == self._socket_inode
        except FileNotFoundError:
            return False

    # -- registration --------------------------------------------------------------

    async def _keep_registered(self) -> None:
        delay = RETRY_FIRST
        while True:
            self._wake.clear()
            if not self._socket_is_ours():
                logger.warning("[%s] socket %s vanished; recreating", self.name, self._socket_name)
                self._set_registered(registered=False)
                await self._stop_server(0)
                await self._serve()
            if not self._registered or self._kubelet_restarted:
                self._kubelet_restarted = False
                if await self._register():
                    delay = RETRY_FIRST
                else:
                    kubelet_there = (self._plugin_dir / KUBELET_SOCKET).exists()
                    wait = delay if kubelet_there else WAIT_FOR_KUBELET
                    delay = min(delay * 2, RETRY_MAX)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
            await self._wake.wait()

    async def _register(self) -> bool:
        kubelet = self._plugin_dir / KUBELET_SOCKET
        if not kubelet.exists():
            logger.info("[%s] waiting for kubelet: %s does not exist yet", self.name, kubelet)
            return False
        request = pb.RegisterRequest(
            version=API_VERSION,
            endpoint=self._socket_name,
            resource_name=self.name,
            options=plugin_options(),
        )
        try:
            async with grpc.aio.insecure_channel(_unix_target(kubelet)) as channel:
                await pb_grpc.RegistrationStub(channel).Register(request, timeout=REGISTER_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            logger.warning(
                "[%s] kubelet refused or did not answer registration (%s: %s); retrying",
                self.name,
                error.code().name,
                error.details(),
            )
            return False
        self._registrations += 1
        self._set_registered(registered=True)
        logger.info("[%s] registered with kubelet (endpoint %s)", self.name, self._socket_name)
        return True

    def _set_registered(self, *, registered: bool) -> None:
        if registered != self._registered:
            self._registered = registered
            self._events.registration_changed(self.name, registered=registered)
