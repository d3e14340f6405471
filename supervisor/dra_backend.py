"""The DRA backend: the node's DRA resources as ResourceSlices and a kubelet DRA plugin.

Idle while the config has no resource with ``api: dra``. Once it has one, it connects to
the API server (``--kubeconfig``, else the pod's service account), serves the kubelet
plugin of the config's driver (`dra.driver`) and publishes the node's pool; when the
last DRA resource goes, it stops the plugin and deletes the slices. A reload hands the
driver the new resources and the publisher the devices they offer. An unreachable API
server only makes the slices wait (and /readyz say why): device-plugin resources, and
claims already prepared, keep being served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plugin_worker.api import DRA, ResourceSpec
from supervisor.config import Config
from supervisor.metrics import DraState, Metrics, ResourceState
from supervisor.watch import DirectoryWatcher

if TYPE_CHECKING:  # imported when a DRA resource first appears: a node without one
    from lightkube import AsyncClient  # never pays for the Kubernetes client (~100 ms)

    from dra_driver.node import NodeDriver
    from dra_driver.publisher import SlicePublisher

logger = logging.getLogger(__name__)

DEFAULT_KUBELET_ROOT = Path("/var/lib/kubelet")

ClientFactory = Callable[[Path | None], "AsyncClient"]


@dataclass(frozen=True, slots=True)
class DraSettings:
    node_name: str | None
    cdi_dir: Path
    kubelet_root: Path = DEFAULT_KUBELET_ROOT
    kubeconfig: Path | None = None


class DraBackend:
    """Serves the resources whose api is ``dra``; see the module docstring."""

    api = DRA

    def __init__(
        self, settings: DraSettings, metrics: Metrics, client_factory: ClientFactory | None = None
    ) -> None:
        """`client_factory` makes the Kubernetes client (default: `dra_driver.kube.make_client`)."""
        self.settings = settings
        self._metrics = metrics
        self._client_factory = client_factory
        self._client: AsyncClient | None = None
        self._active: NodeDriver | None = None
        self._problem: str | None = None
        """Why the DRA resources cannot be served at all (no node name, no API access)."""
        self._specs: tuple[ResourceSpec, ...] = ()

    # -- Backend -------------------------------------------------------------------

    async def start(self, watcher: DirectoryWatcher) -> None:
        pass  # nothing runs before the config has a DRA resource

    async def apply(self, specs: Sequence[ResourceSpec], config: Config) -> str:
        self._specs = tuple(specs)
        if not specs:
            if self._active is not None:
                await self._deactivate()
            self._problem = None
            return "no DRA resources"
        active = await self._activate(config.dra_driver)
        if active is None:
            return f"{len(specs)} resources not served: {self._problem}"
        active.driver.update(specs)
        devices = sum(len(active.devices(s.name)) for s in specs)
        return f"{len(specs)} resources, {devices} devices (driver {active.name})"

    def on_event(self, directory: Path, name: str, mask: int) -> None:
        pass

    def directories(self) -> set[Path]:
        return set()

    async def stop(self) -> None:
        if self._active is not None:
            await self._deactivate()
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a client that is gone
                await self._client.close()
            self._client = None

    def states(self) -> list[ResourceState]:
        active = self._active
        if active is None:
            return [ResourceState(s.name, (), registered=False, api=DRA) for s in self._specs]
        registered = active.plugin.registered
        return [
            ResourceState(spec.name, active.devices(spec.name), registered=registered, api=DRA)
            for spec in active.specs()
        ]

    def problems(self) -> dict[str, str]:
        names = [s.name for s in self._specs]
        if self._problem is not None:
            return dict.fromkeys(names, f"DRA: {self._problem}")
        if self._active is not None and self._active.publisher.problem is not None:
            why = f"DRA ResourceSlices not published: {self._active.publisher.problem}"
            return dict.fromkeys(names, why)
        return {}

    def summary(self) -> str:
        active = self._active
        if active is None:
            return "DRA idle" if not self._specs else f"DRA not serving: {self._problem}"
        return (
            f"DRA driver {active.name}: {len(self._specs)} resources, plugin "
            f"{'registered' if active.plugin.registered else 'not registered'}, slices "
            f"{'published' if active.publisher.in_sync else 'pending'}"
        )

    def state(self) -> DraState | None:
        """For metrics: None while idle."""
        active = self._active
        if active is None:
            return None
        return DraState(registered=active.plugin.registered,
                        prepared=active.driver.prepared_counts())  # fmt: skip

    @property
    def publisher(self) -> SlicePublisher | None:
        return None if self._active is None else self._active.publisher

    # -- activation ----------------------------------------------------------------

    async def _activate(self, driver: str) -> NodeDriver | None:
        if self._active is not None and self._active.name == driver:
            return self._active
        if self._active is not None:
            logger.info("DRA driver renamed %s -> %s", self._active.name, driver)
            await self._deactivate()
        node = self.settings.node_name
        if node is None:
            self._fail("DRA resources need the node's name: pass --node-name (or NODE_NAME)")
            return None
        from dra_driver.kube import make_client
        from dra_driver.kubelet_plugin import KubeletPluginError
        from dra_driver.node import NodeDriver

        try:
            if self._client is None:
                factory = self._client_factory or make_client
                self._client = factory(self.settings.kubeconfig)
        except Exception as error:  # lightkube's config errors have no common base
            self._fail(f"no access to the Kubernetes API: {type(error).__name__}: {error}")
            return None
        settings = self.settings
        try:
            active = NodeDriver(
                driver=driver, node=node, kubelet_root=settings.kubelet_root,
                cdi_dir=settings.cdi_dir, client=self._client, events=self._metrics,
                on_write=self._metrics.resourceslice_written,
            )  # fmt: skip
            await active.start()
        except (KubeletPluginError, ValueError, OSError) as error:
            self._fail(f"cannot start the kubelet plugin: {error}")
            return None
        self._problem = None
        self._active = active
        return active

    def _fail(self, why: str) -> None:
        if why != self._problem:
            logger.error("DRA resources not served: %s", why)
        self._problem = why

    async def _deactivate(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            await active.stop()
            logger.info("DRA driver %s stopped", active.name)
