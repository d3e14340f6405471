"""The running supervisor: the config, kept served by backends.

Owns the config source (first load, reloads through inotify, a rejected file keeping the
last good config serving), the metrics and health endpoint, signals, and the order of
start-up and shutdown (with a deadline). What serves resources are `Backend`s, each
given its share of the config's resources (`ResourceSpec.api`): on a node, the
device-plugin and DRA backends; for `simulate`, the fleet backend, which takes them all
for every simulated node. Parsing, planning and serving live elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin_worker.worker import REGISTER_TIMEOUT, PluginWorker
from supervisor import podresources
from supervisor.backend import Backend
from supervisor.cdi import DEFAULT_CDI_DIR
from supervisor.config import Config
from supervisor.config_source import ConfigSource, Rejected
from supervisor.device_plugin_backend import DevicePluginBackend, DevicePluginSettings
from supervisor.dra_backend import DEFAULT_KUBELET_ROOT, ClientFactory, DraBackend, DraSettings
from supervisor.errors import ConfigError
from supervisor.fleet_backend import FleetBackend, FleetSettings
from supervisor.http import MetricsServer
from supervisor.metrics import Metrics, SupervisorState
from supervisor.podresources import PodResourcesMonitor
from supervisor.watch import (
    CREATE,
    DirectoryWatcher,
)

logger = logging.getLogger(__name__)

CONFIG_SETTLE = 0.005
"""Events arrive in bursts (a ConfigMap swap is five); read the file once per burst."""
STOP_GRACE = 2.0
STOP_DEADLINE = 4.5
READY_LINES = 20
"""At most this many lines of a rejected config's errors in /readyz (the log has them all)."""


@dataclass(frozen=True, slots=True)
class Settings:
    config: Path
    plugin_dir: Path
    metrics_address: str
    domain: str
    strict_perms: bool = True
    register_timeout: float = REGISTER_TIMEOUT
    node_name: str | None = None
    """Matched against the config's ``nodes:`` entries."""
    cdi_dir: Path = Path(DEFAULT_CDI_DIR)
    pod_resources_socket: Path = Path(podresources.DEFAULT_SOCKET)
    pod_resources_interval: float = podresources.DEFAULT_INTERVAL
    """Seconds between pod-resources polls; 0 turns the monitor off."""
    kubelet_root: Path = DEFAULT_KUBELET_ROOT
    """Where kubelet looks for DRA plugins (plugins_registry/, plugins/)."""
    kubeconfig: Path | None = None
    """For DRA: None is the pod's service account, else $KUBECONFIG or ~/.kube/config."""


class Supervisor:
    """Runs until `request_stop`; see the module docstring for what it owns."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_factory: ClientFactory | None = None,
        fleet: FleetSettings | None = None,
    ) -> None:
        """A node agent (device-plugin and DRA backends), or with `fleet` the simulator of
        a fleet of API-only nodes (`widget-supervisor simulate`). `client_factory` makes
        the Kubernetes client (tests give one)."""
        self.settings = settings
        self.metrics = Metrics(self._snapshot)
        self.metrics_address: tuple[str, int] | None = None
        self._http = MetricsServer(self.metrics.registry, alive=self._health, ready=self._readiness)
        self.device_plugins: DevicePluginBackend | None = None
        self.dra: DraBackend | None = None
        self.fleet: FleetBackend | None = None
        backends: list[Backend] = []
        if fleet is None:
            self.device_plugins = DevicePluginBackend(
                DevicePluginSettings(
                    plugin_dir=settings.plugin_dir,
                    register_timeout=settings.register_timeout,
                    cdi_dir=settings.cdi_dir,
                ),
                self.metrics,
                self._spawn,
            )
            self.dra = DraBackend(
                DraSettings(
                    node_name=settings.node_name,
                    cdi_dir=settings.cdi_dir,
                    kubelet_root=settings.kubelet_root,
                    kubeconfig=settings.kubeconfig,
                ),
                self.metrics,
                client_factory,
            )
            backends += [self.device_plugins, self.dra]
        else:
            self.fleet = FleetBackend(fleet, settings.kubeconfig, self.metrics, client_factory)
            backends.append(self.fleet)
        self.backends: tuple[Backend, ...] = tuple(backends)
        self._source = ConfigSource(
            settings.config,
            domain=settings.domain,
            node_name=settings.node_name if fleet is None else None,
            strict_perms=settings.strict_perms,
            fleet=fleet is not None,
        )
        self.pod_resources: PodResourcesMonitor | None = None
        if self.device_plugins is not None and settings.pod_resources_interval > 0:
            device_plugins = self.device_plugins
            self.pod_resources = PodResourcesMonitor(
                settings.pod_resources_socket,
                settings.pod_resources_interval,
                lambda: device_plugins.workers,
            )
            self.metrics.after_allocate = self.pod_resources.allocated
        self._watcher: DirectoryWatcher | None = None
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._pending_check: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        """Start-up has finished: the first config applied (readiness says "starting" before)."""

    @property
    def workers(self) -> dict[str, PluginWorker]:
        """The device-plugin workers, by resource name."""
        return {} if self.device_plugins is None else self.device_plugins.workers

    # -- public --------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        """Serve until SIGTERM/SIGINT or `request_stop`; raises ConfigError on a bad start.

        `handle_signals=False` leaves SIGTERM/SIGINT/SIGHUP to an embedding program.
        """
        try:
            config = await self._load()
        except BaseException:
            self._source.close()
            raise
        try:
            if handle_signals:  # from here on SIGTERM stops in order, start-up included
                self._install_signal_handlers()
            self.metrics_address = await self._http.start(self.settings.metrics_address)
            logger.info("metrics on http://%s:%d/metrics", *self.metrics_address)
            self._watcher = DirectoryWatcher(self._on_event)
            for backend in self.backends:
                await backend.start(self._watcher)
            self._watch_config()
            await self._apply(config)
            if self.pod_resources is not None:
                self._spawn(self.pod_resources.run(), "pod-resources")
            self._started = True
            await self._stopping.wait()
        finally:
            await self._shutdown(handle_signals=handle_signals)

    def request_stop(self) -> None:
        self._stopping.set()

    async def reload(self, *, force: bool = False) -> None:
        """Re-read the config; apply it if it changed (or always, with `force`)."""
        async with self._reload_lock:
            await self._reload(force=force)

    # -- config --------------------------------------------------------------------

    async def _load(self) -> Config:
        config = await self._source.load()
        logger.info(
            "loaded %s: %d resources, %d devices",
            self.settings.config,
            len(config.resources),
            config.device_count,
        )
        return config

    async def _reload(self, *, force: bool) -> None:
        outcome = await self._source.reload(force=force)
        if outcome is None:
            return
        if isinstance(outcome, Rejected):
            self._reject(outcome.error)
            return
        self.metrics.reloaded(ok=True)
        await self._apply(outcome, reason="reloaded")

    def _reject(self, error: ConfigError) -> None:
        if self._watcher is not None:
            self._watch_config()  # the file (or its directory) may be gone: wait for it
        self.metrics.reloaded(ok=False)
        logger.error(
            "rejected config %s; still serving the last good config:\n%s",
            self.settings.config,
            error,
        )

    def _watch_config(self) -> None:
        """Watch the config's directory and, if it is a symlink, its target's directory.

        A ConfigMap mount is ``config.yaml -> ..data/config.yaml`` with ``..data`` a
        symlink that kubelet swaps by rename; the swap is a MOVED_TO in the directory.
        """
        assert self._watcher is not None
        wanted = self._source.directories()
        keep = set(wanted)
        for backend in self.backends:
            keep |= backend.directories()
        # A directory that is gone (deleted with the config in it) is waited for from
        # its nearest existing ancestor: the event of its return triggers a check,
        # which comes back here and watches the directory itself again.
        targets = {_nearest_existing(d) for d in wanted}
        keep |= targets
        for directory in self._watcher.watched:
            if directory not in keep:
                self._watcher.unwatch(directory)
        for directory in targets:
            self._watcher.watch(directory)

    def _schedule_config_check(self) -> None:
        if self._pending_check is None:
            loop = asyncio.get_running_loop()
            self._pending_check = loop.call_later(CONFIG_SETTLE, self._run_config_check)

    def _run_config_check(self) -> None:
        self._pending_check = None
        self._spawn(self.reload(), "config-reload")

    # -- backends ------------------------------------------------------------------

    async def _apply(self, config: Config, reason: str = "started") -> None:
        """Hand each backend its share of the config's resources."""
        summaries = await asyncio.gather(
            *(
                backend.apply([s for s in config.resources if backend.api in (None, s.api)], config)
                for backend in self.backends
            )
        )
        self._watch_config()
        logger.info("%s %s: %s", reason, self.settings.config, _joined(self.backends, summaries))

    # -- filesystem events ---------------------------------------------------------

    def _on_event(self, directory: Path, name: str, mask: int) -> None:
        theirs = False
        for backend in self.backends:
            if directory in backend.directories():
                backend.on_event(directory, name, mask)
                theirs = True
        if (not theirs or directory in self._source.directories()) and self._config_event(
            directory, name, mask
        ):
            self._schedule_config_check()

    def _config_event(self, directory: Path, name: str, mask: int) -> bool:
        # Any event may mean a change (the content key decides), except the creation
        # of a regular file: it is empty until written, and CLOSE_WRITE follows.
        if mask == CREATE:
            return (directory / name).is_symlink()
        return True

    # -- signals, tasks, shutdown --------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        loop.add_signal_handler(signal.SIGUSR1, self._log_state)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        logger.info("%s received; stopping every resource", sig.name)
        self.request_stop()

    def _log_state(self) -> None:
        """SIGUSR1: one line of what the process holds, to spot leaks on a long-lived node."""
        tasks = sorted(t.get_name() for t in asyncio.all_tasks())
        logger.info(
            "state: %s; %d tasks [%s], %d threads, %d fds",
            "; ".join(backend.summary() for backend in self.backends), len(tasks),
            ", ".join(tasks), threading.active_count(), len(os.listdir("/proc/self/fd")),
        )  # fmt: skip

    def _on_hup(self) -> None:
        if not self._started:
            logger.info("SIGHUP received while starting; the config is being read anyway")
            return
        logger.info("SIGHUP received; reloading %s", self.settings.config)
        self._spawn(self.reload(force=True), "sighup-reload")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s crashed", task.get_name(), exc_info=task.exception())

    async def _shutdown(self, *, handle_signals: bool) -> None:
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
        if self._pending_check is not None:
            self._pending_check.cancel()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(STOP_DEADLINE):
                await asyncio.gather(*(backend.stop() for backend in self.backends))
        except TimeoutError:
            logger.error("backends did not stop within %.1f s; exiting anyway", STOP_DEADLINE)
        await self._http.stop()
        self._source.close()
        logger.info("stopped")

    # -- state for metrics and health ----------------------------------------------

    def _snapshot(self) -> SupervisorState:
        states = [state for backend in self.backends for state in backend.states()]
        monitor = self.pod_resources
        return SupervisorState(
            resources=tuple(states),
            config_ok=self._source.error is None,
            pod_resources_up=None if monitor is None else monitor.available,
            holders=() if monitor is None else monitor.holders,
            dra=None if self.dra is None else self.dra.state(),
            fleet=None if self.fleet is None else self.fleet.state(),
        )

    def _health(self) -> str:
        """/healthz (liveness): answering at all is the check, as the answer comes from the
        event loop that serves every resource; a stalled loop makes the probe time out."""
        return "ok: " + "; ".join(backend.summary() for backend in self.backends)

    def _readiness(self) -> tuple[bool, str]:
        """/readyz: every resource of the current config serving on its socket, and that
        config the newest on disk; otherwise one line per thing wrong. Registration does
        not count (kubelet may be restarting), nor a socket being recreated just now."""
        if not self._started:
            return False, "starting"
        if self._stopping.is_set():
            return False, "stopping"
        wrong = {name: why for backend in self.backends for name, why in backend.problems().items()}
        problems = [f"{name}: {why}" for name, why in sorted(wrong.items())]
        if self._source.error is not None:
            rejected = self._source.error.splitlines() or ["(no reason given)"]
            problems += [f"config rejected: {line}" for line in rejected[:READY_LINES]]
            if len(rejected) > READY_LINES:
                problems.append(f"config rejected: ... {len(rejected) - READY_LINES} more")
        if problems:
            return False, "\n".join(problems)
        serving = sum(len(backend.states()) for backend in self.backends)
        return True, f"ok: {serving} resources serving"


def _joined(backends: Sequence[Backend], summaries: Sequence[str]) -> str:
    if len(backends) == 1:
        return summaries[0]
    return "; ".join(f"{b.api}: {s}" for b, s in zip(backends, summaries, strict=True))


def _nearest_existing(directory: Path) -> Path:
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent
    return directory
