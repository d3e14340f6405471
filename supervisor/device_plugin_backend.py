"""The device-plugin backend: one `PluginWorker` per resource, kept in step with kubelet.

Owns the workers of the resources served through kubelet's device-plugin API, their CDI
spec files, and what the plugin directory tells of kubelet: a new kubelet.sock (kubelet
restarted: register again), a vanished socket (recreate it), the directory itself gone
and back. Reconciles by `reconcile.plan`: stop first (freeing sockets), update, start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin_worker.api import DEVICE_PLUGIN, KUBELET_SOCKET, ResourceSpec
from plugin_worker.worker import REGISTER_TIMEOUT, PluginWorker, WorkerError
from supervisor.cdi import DEFAULT_CDI_DIR, CdiWriter
from supervisor.config import Config
from supervisor.metrics import Metrics, ResourceState
from supervisor.reconcile import changes, plan
from supervisor.watch import (
    CREATE,
    DELETE,
    DELETE_SELF,
    ISDIR,
    MOVE_SELF,
    MOVED_FROM,
    MOVED_TO,
    Q_OVERFLOW,
    DirectoryWatcher,
)

logger = logging.getLogger(__name__)

STOP_GRACE = 2.0

Spawn = Callable[[Coroutine[Any, Any, None], str], None]
"""Runs a coroutine as a task the supervisor tracks (and cancels at shutdown)."""


@dataclass(frozen=True, slots=True)
class DevicePluginSettings:
    plugin_dir: Path
    register_timeout: float = REGISTER_TIMEOUT
    cdi_dir: Path = Path(DEFAULT_CDI_DIR)


class DevicePluginBackend:
    """Serves the resources whose api is ``device-plugin``; see the module docstring."""

    api = DEVICE_PLUGIN

    def __init__(self, settings: DevicePluginSettings, metrics: Metrics, spawn: Spawn) -> None:
        self.settings = settings
        self.workers: dict[str, PluginWorker] = {}
        self.failed: dict[str, ResourceSpec] = {}
        self._metrics = metrics
        self._spawn = spawn
        self._cdi = CdiWriter(settings.cdi_dir)
        self._watcher: DirectoryWatcher | None = None
        self._lock = asyncio.Lock()
        self._failed_why: dict[str, str] = {}
        """Why each resource of `failed` could not start (read only for names in `failed`)."""
        self._stopping = False

    # -- Backend -------------------------------------------------------------------

    async def start(self, watcher: DirectoryWatcher) -> None:
        self._watcher = watcher
        self.settings.plugin_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        watcher.watch(self.settings.plugin_dir)

    async def apply(self, specs: Sequence[ResourceSpec], config: Config) -> str:
        async with self._lock:
            return await self._apply({spec.name: spec for spec in specs})

    def directories(self) -> set[Path]:
        plugin_dir = self.settings.plugin_dir
        watched = self._watcher.watched if self._watcher is not None else set()
        # While the plugin dir is gone, its parent is watched for its return.
        return {plugin_dir} if plugin_dir in watched else {plugin_dir, plugin_dir.parent}

    def on_event(self, directory: Path, name: str, mask: int) -> None:
        plugin_dir = self.settings.plugin_dir
        if directory == plugin_dir:
            self._on_plugin_dir_event(name, mask)
        elif (
            directory == plugin_dir.parent
            and name == plugin_dir.name
            and mask & (CREATE | MOVED_TO)
            and mask & ISDIR
        ):
            self._plugin_dir_returned()

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self._stop_worker(n) for n in list(self.workers)))

    def states(self) -> list[ResourceState]:
        states = [
            ResourceState(name=w.name, devices=w.devices, registered=w.registered)
            for w in self.workers.values()
        ]
        states += [ResourceState(name=s.name, devices=s.devices, registered=False)
                   for s in self.failed.values()]  # fmt: skip
        return states

    def problems(self) -> dict[str, str]:
        wrong = {name: self._failed_why.get(name, "cannot serve") for name in self.failed}
        for name, worker in self.workers.items():
            if (problem := worker.serving_problem) is not None:
                wrong[name] = problem
        return wrong

    def summary(self) -> str:
        registered = sum(1 for w in self.workers.values() if w.registered)
        return f"{len(self.workers)} resources served, {registered} registered"

    # -- workers -------------------------------------------------------------------

    async def _apply(self, desired: dict[str, ResourceSpec]) -> str:
        running = {name: worker.spec for name, worker in self.workers.items()}
        steps = plan(desired, running)
        self.failed = {n: s for n, s in self.failed.items() if n in desired}
        await asyncio.gather(*(self._stop_worker(name) for name in steps.stop))
        for spec in steps.update:
            worker = self.workers[spec.name]
            old = worker.spec
            reregister = worker.update(spec)
            self._write_cdi(spec)
            if old.cdi_kind is not None and spec.cdi_kind is None:
                self._remove_cdi(old)
            logger.info("[%s] changed: %s%s", spec.name, changes(old, spec),
                        "; registering again (kubelet reads options only then)"
                        if reregister else "")  # fmt: skip
        await asyncio.gather(*(self._start_worker(spec) for spec in steps.start))
        return steps.summary()

    async def _start_worker(self, spec: ResourceSpec) -> None:
        worker = PluginWorker(
            spec,
            plugin_dir=self.settings.plugin_dir,
            events=self._metrics,
            register_timeout=self.settings.register_timeout,
        )
        self._metrics.resource_added(spec.name)
        try:
            await worker.start()
        except (WorkerError, OSError) as error:
            self.failed[spec.name] = spec
            # WorkerError messages already name the resource; say it once.
            detail = str(error).removeprefix(f"[{spec.name}] ")
            self._failed_why[spec.name] = (
                error.reason if isinstance(error, WorkerError) and error.reason else detail
            )
            logger.error(
                "[%s] cannot serve: %s; will retry when its socket path is freed, on the next "
                "config change, or on SIGHUP",
                spec.name,
                detail,
            )
            return
        self.failed.pop(spec.name, None)
        self.workers[spec.name] = worker
        self._write_cdi(spec)
        logger.info(
            "[%s] serving %d devices on %s", spec.name, len(spec.devices), worker.socket_name
        )

    async def _stop_worker(self, name: str) -> None:
        worker = self.workers.pop(name)
        await worker.stop(STOP_GRACE)
        self._metrics.resource_removed(name)
        self._remove_cdi(worker.spec)

    def _remove_cdi(self, spec: ResourceSpec) -> None:
        try:
            self._cdi.remove(spec)
        except OSError as error:
            logger.error("[%s] cannot remove its CDI spec: %s", spec.name, error)

    def _write_cdi(self, spec: ResourceSpec) -> None:
        try:
            self._cdi.write(spec)
        except OSError as error:
            logger.error(
                "[%s] cannot write its CDI spec to %s: %s; containers asking for it will "
                "not start under a CDI-enabled runtime (check --cdi-dir)",
                spec.name,
                self.settings.cdi_dir,
                error,
            )

    # -- the plugin directory ------------------------------------------------------

    def _on_plugin_dir_event(self, name: str, mask: int) -> None:
        if mask & (DELETE_SELF | MOVE_SELF):
            self._plugin_dir_gone()
        elif name == KUBELET_SOCKET and mask & (CREATE | MOVED_TO):
            logger.info("kubelet (re)started: %s appeared; registering every resource", name)
            for worker in self.workers.values():
                worker.kubelet_restarted()
        elif mask & (DELETE | MOVED_FROM | MOVED_TO | Q_OVERFLOW):
            # MOVED_TO: something was renamed over our socket; the worker checks.
            for worker in self.workers.values():
                if mask & Q_OVERFLOW or worker.socket_name == name:
                    worker.socket_removed()
            if mask & (DELETE | MOVED_FROM | Q_OVERFLOW) and self.failed:
                self._retry_failed(name)

    def _retry_failed(self, freed: str) -> None:
        """A path in the plugin dir was freed: start resources that could not serve there
        (another instance held the socket, or a foreign file sat at its name)."""
        due = [s for s in self.failed.values()
               if freed in ("", s.socket_name(str(self.settings.plugin_dir)))]  # fmt: skip
        if due and not self._stopping:
            self._spawn(self._start_failed(due), "retry-failed")

    async def _start_failed(self, specs: list[ResourceSpec]) -> None:
        async with self._lock:
            for spec in specs:
                if self.failed.get(spec.name) == spec and spec.name not in self.workers:
                    logger.info("[%s] its socket path is free now; starting", spec.name)
                    await self._start_worker(spec)

    def _plugin_dir_gone(self) -> None:
        assert self._watcher is not None
        logger.warning(
            "plugin dir %s was removed; waiting for it to return", self.settings.plugin_dir
        )
        self._watcher.unwatch(self.settings.plugin_dir)
        self._watcher.watch(self.settings.plugin_dir.parent)
        if self.settings.plugin_dir.is_dir():  # it came back before we looked
            self._plugin_dir_returned()

    def _plugin_dir_returned(self) -> None:
        assert self._watcher is not None
        if self._watcher.watch(self.settings.plugin_dir):
            logger.info("plugin dir %s is back; recreating sockets", self.settings.plugin_dir)
            for worker in self.workers.values():
                worker.socket_removed()
                if (self.settings.plugin_dir / KUBELET_SOCKET).exists():
                    worker.kubelet_restarted()
            self._retry_failed("")
