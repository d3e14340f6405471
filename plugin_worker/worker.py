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
import secrets
import socket
import stat
import struct
import time
from pathlib import Path

import grpc

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from plugin_worker.api import API_VERSION, KUBELET_SOCKET, Device, ResourceSpec, WorkerEvents
from plugin_worker.files import private_umask
from plugin_worker.inventory import Inventory
from plugin_worker.server import DevicePluginService, options_change, plugin_options

logger = logging.getLogger(__name__)

SELF_CHECK_TIMEOUT = 2.0
# kubelet dials the plugin for up to 10 s inside Register before it answers.
REGISTER_TIMEOUT = 12.0
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# Without kubelet.sock there is nothing to retry against: wait for the watcher's
# poke, with a slow timer only as a safety net should an inotify event be missed.
WAIT_FOR_KUBELET = 30.0
# A stream we ended finishes at once unless kubelet stopped reading it (flow control).
STREAM_END_TIMEOUT = 5.0
# A vanished socket (kubelet restarts delete them) is normally served again within
# milliseconds; only one still unserved after this long is a `serving_problem`.
SERVE_GRACE = 5.0


class WorkerError(RuntimeError):
    """The worker cannot serve; the message says why and what to do."""

    reason: str | None = None
    """The why in a few words, when the message says more (for readiness), else None."""


class SocketInUseError(WorkerError):
    """Another live process serves our socket path; `holder` says who (see `socket_server`)."""

    def __init__(self, message: str, *, holder: str) -> None:
        super().__init__(message)
        self.holder = holder
        self.reason = f"socket served by another process ({holder})"


def socket_server(path: Path) -> str | None:
    """Who serves the unix socket at `path` ("pid 12 (widget-supervisor run ...)"), or None.

    A listener too busy to accept within the probe's timeout counts as serving: when
    in doubt, a socket is never taken over.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(str(path))
        pid, uid, _ = struct.unpack(
            "3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
    except TimeoutError:
        return "a process that does not accept connections in time"
    except OSError as error:
        if error.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return None
        raise
    finally:
        probe.close()
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read(300).replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"pid {pid}, uid {uid} ({command})"


def _unix_target(path: Path) -> str:
    return f"unix://{path}"


class PluginWorker:
    """Serves and registers one extended resource."""

    def __init__(
        self,
        spec: ResourceSpec,
        *,
        plugin_dir: Path,
        events: WorkerEvents,
        register_timeout: float = REGISTER_TIMEOUT,
        serve_grace: float = SERVE_GRACE,
    ) -> None:
        self._register_timeout = register_timeout
        self._serve_grace = serve_grace
        self._unserved_since: float | None = None
        """When the socket was found gone, until it is served again (monotonic seconds)."""
        self._serve_error: str | None = None
        """Why the last attempt to serve it again failed."""
        self._inventory = Inventory(spec)
        self._events = events
        self._plugin_dir = plugin_dir
        self._socket_name = spec.socket_name(str(plugin_dir))
        self._server: grpc.aio.Server | None = None
        self._service: DevicePluginService | None = None
        self._socket_inode: tuple[int, int] | None = None
        self._wake = asyncio.Event()
        self._kubelet_restarted = False
        self._options_change: str | None = None
        """Set when options kubelet caches changed: register again, streams ended first."""
        self._task: asyncio.Task[None] | None = None
        self._registered = False

    @property
    def name(self) -> str:
        return self._inventory.spec.name

    @property
    def spec(self) -> ResourceSpec:
        return self._inventory.spec

    @property
    def devices(self) -> tuple[Device, ...]:
        """The devices as advertised now (effective health)."""
        return self._inventory.devices

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
    def serving_problem(self) -> str | None:
        """Why this worker does not serve as it should, or None while it does.

        A socket being recreated (after a kubelet restart) is no problem until it has been
        unserved for `serve_grace` seconds; registration is none of this (kubelet may be
        restarting), but a crashed registration loop is: nothing keeps it registered.
        """
        task = self._task
        if task is None or task.cancelled():
            return "not started" if task is None else "stopped"
        if task.done():
            error = task.exception()
            how = "ended" if error is None else f"crashed ({type(error).__name__}: {error})"
            return (
                f"registration loop {how}; the resource is no longer kept registered "
                "(see the log; restart the pod)"
            )
        since = self._unserved_since
        if since is not None and (unserved := time.monotonic() - since) >= self._serve_grace:
            why = self._serve_error or "being recreated"
            return f"socket {self._socket_name} not served for {unserved:.0f} s: {why}"
        return None

    def update(self, spec: ResourceSpec) -> str | None:
        """Serve a new spec of the same resource; open ListAndWatch streams get its list at once.

        kubelet reads `DevicePluginOptions` only when a plugin registers, so when they
        change the resource registers again (in the background, after ending its
        streams); the return value says how they changed ("preferred allocation on"),
        None when they did not.
        """
        before = plugin_options(self.spec)
        self._inventory.replace(spec)
        change = options_change(before, plugin_options(spec))
        if change is not None:
            self._options_change = change
            self._wake.set()
        return change

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
            # A crashed loop was logged when it ended; stopping must still clean up.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._stop_server(grace)
        self._inventory.close()
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
        self._service = DevicePluginService(self._inventory, self._events)
        pb_grpc.add_DevicePluginServicer_to_server(self._service, server)
        # gRPC unlinks whatever socket sits at its bind path, at bind and again at stop,
        # so it never binds the public name: it binds a random private name, which is
        # hard-linked to the public one (link() never replaces an existing file nor
        # follows a symlink) and then unlinked. The umask makes it 0600 from birth; no
        # chmod (which follows symlinks) is needed.
        private = self._plugin_dir / f".widget-{secrets.token_hex(6)}.sock"
        try:
            with private_umask():
                bound = server.add_insecure_port(_unix_target(private))
        except RuntimeError as error:  # grpc raises when bind fails (e.g. the dir is gone)
            raise WorkerError(f"[{self.name}] could not listen in {self._plugin_dir}") from error
        if not bound:
            raise WorkerError(f"[{self.name}] could not listen in {self._plugin_dir}")
        self._server = server
        try:
            self._socket_inode = self._publish(private)
            await server.start()
            await self._self_check()
        except BaseException:
            # Cancelled or failed half-way: never leave a server or a socket file behind.
            await self._stop_server(0)
            raise
        logger.debug("[%s] serving on %s", self.name, self.socket_path)

    def _publish(self, private: Path) -> tuple[int, int]:
        try:
            os.link(private, self.socket_path, follow_symlinks=False)
        except FileExistsError:
            raise WorkerError(
                f"[{self.name}] {self.socket_path} appeared while starting; not replacing it"
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(private)
        # lstat (never following a link) records what we created, and proves it.
        st = os.lstat(self.socket_path)
        if not stat.S_ISSOCK(st.st_mode) or st.st_mode & 0o077:
            raise WorkerError(
                f"[{self.name}] {self.socket_path} is not the private socket just created "
                f"(mode {stat.filemode(st.st_mode)}); is something else writing to the dir?"
            )
        return st.st_dev, st.st_ino

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
        server = socket_server(path)
        if server is not None:
            raise SocketInUseError(
                f"[{self.name}] {path} is served by another process: {server} "
                "(another widget-supervisor on this plugin dir?); not taking it over, "
                "will take over when it goes away",
                holder=server,
            )
        path.unlink()
        logger.info("[%s] removed stale socket %s", self.name, path)

    async def _self_check(self) -> None:
        async with grpc.aio.insecure_channel(_unix_target(self.socket_path)) as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            try:
                await stub.GetDevicePluginOptions(pb.Empty(), timeout=SELF_CHECK_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                raise WorkerError(
                    f"[{self.name}] own socket does not answer: {error.details()}"
                ) from error

    async def _stop_server(self, grace: float) -> None:
        server, self._server = self._server, None
        try:
            if server is not None:
                # Refuse new calls at once, let the Allocates in flight finish, and only
                # then end the ListAndWatch streams: kubelet closes its connection when a
                # stream ends, which would cancel those Allocates (and fail their pods).
                stopping = asyncio.ensure_future(server.stop(grace))
                if self._service is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(grace):
                            await self._service.idle()
                self._inventory.end_watches()
                await stopping
        finally:
            # Even when cancelled: a socket file nobody serves must not outlive us. Only
            # the file we created is removed (unlink never follows a symlink).
            if self._socket_is_ours():
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
            self._socket_inode = None

    def _socket_is_ours(self) -> bool:
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            return False
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._socket_inode

    # -- registration --------------------------------------------------------------

    async def _keep_registered(self) -> None:
        delay = RETRY_FIRST
        while True:
            self._wake.clear()
            if not self._socket_is_ours():
                logger.warning("[%s] socket %s vanished; recreating", self.name, self._socket_name)
                if self._unserved_since is None:
                    self._unserved_since = time.monotonic()
                self._set_registered(registered=False)
                await self._stop_server(0)
                if not await self._reserve():
                    continue
            change, self._options_change = self._options_change, None
            if change is not None and self._registered:
                # kubelet ≤ 1.33 drops, by resource name, whatever is registered when
                # an old stream ends: end the streams before registering again.
                self._inventory.end_watches()
                try:
                    async with asyncio.timeout(STREAM_END_TIMEOUT):
                        await self._inventory.watches_ended()
                except TimeoutError:
                    logger.warning("[%s] a ListAndWatch stream did not end within %.0f s; "
                                   "registering anyway", self.name, STREAM_END_TIMEOUT)  # fmt: skip
                self._set_registered(registered=False)
            if not self._registered or self._kubelet_restarted:
                self._kubelet_restarted = False
                if await self._register():
                    delay = RETRY_FIRST
                    if change is not None:
                        logger.info("[%s] options changed: %s; re-registered", self.name, change)
                else:
                    kubelet_there = (self._plugin_dir / KUBELET_SOCKET).exists()
                    wait = delay if kubelet_there else WAIT_FOR_KUBELET
                    delay = min(delay * 2, RETRY_MAX)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
            await self._wake.wait()

    async def _reserve(self) -> bool:
        """Serve again after the socket vanished; on failure wait for the dir to change.

        The plugin dir may be gone, or something else may sit at our path: the loop
        must survive that and retry when the supervisor pokes it (the dir is back, the
        path was freed), with a slow timer as a safety net.
        """
        try:
            await self._serve()
        except (WorkerError, OSError) as error:
            logger.error("[%s] cannot serve: %s; retrying when the plugin dir changes",
                         self.name, error)  # fmt: skip
            self._serve_error = str(error).removeprefix(f"[{self.name}] ")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), WAIT_FOR_KUBELET)
            return False
        self._unserved_since = self._serve_error = None
        return True

    async def _register(self) -> bool:
        kubelet = self._plugin_dir / KUBELET_SOCKET
        if not kubelet.exists():
            logger.info("[%s] waiting for kubelet: %s does not exist yet", self.name, kubelet)
            return False
        request = pb.RegisterRequest(
            version=API_VERSION,
            endpoint=self._socket_name,
            resource_name=self.name,
            options=plugin_options(self.spec),
        )
        try:
            async with grpc.aio.insecure_channel(_unix_target(kubelet)) as channel:
                await pb_grpc.RegistrationStub(channel).Register(
                    request, timeout=self._register_timeout
                )
        except grpc.aio.AioRpcError as error:
            logger.warning(
                "[%s] kubelet refused or did not answer registration (%s: %s); retrying",
                self.name,
                error.code().name,
                error.details(),
            )
            return False
        self._set_registered(registered=True)
        logger.info("[%s] registered with kubelet (endpoint %s)", self.name, self._socket_name)
        return True

    def _set_registered(self, *, registered: bool) -> None:
        if registered != self._registered:
            self._registered = registered
            self._events.registration_changed(self.name, registered=registered)
