"""The fleet backend: one config's mock devices on every simulated (API-only) node.

Runs `widget-supervisor simulate`: no kubelet, no sockets; the nodes matching a label
selector get their resources written into their status by `fleet.controller`, each from
the config's view of that node (the ``nodes:`` globs on its name, as a node agent there
would see them). A reload reaches every node; the API server being away only delays the
writes, and /readyz says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plugin_worker.api import ResourceSpec
from supervisor.config import Config
from supervisor.dra_backend import ClientFactory
from supervisor.metrics import FleetState, Metrics, ResourceState
from supervisor.watch import DirectoryWatcher

if TYPE_CHECKING:
    from lightkube import AsyncClient

    from fleet.controller import FleetController
    from fleet.leader import ElectionSettings, LeaderElector

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetSettings:
    selector: Mapping[str, str] = field(default_factory=lambda: {"type": "kwok"})
    qps: float = 5.0
    burst: int = 10
    election: ElectionSettings | None = None
    """Set: one replica of several writes, chosen through a Lease (`fleet.leader`)."""


class FleetBackend:
    """Serves every resource of the config, on every simulated node."""

    api = None

    def __init__(
        self,
        settings: FleetSettings,
        kubeconfig: Path | None,
        metrics: Metrics,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.settings, self._kubeconfig, self._metrics = settings, kubeconfig, metrics
        self._client_factory = client_factory
        self._client: AsyncClient | None = None
        self.controller: FleetController | None = None
        self.elector: LeaderElector | None = None
        self._task: asyncio.Task[None] | None = None
        self._problem: str | None = None

    async def start(self, watcher: DirectoryWatcher) -> None:
        from dra_driver.kube import make_client
        from fleet.controller import FleetController
        from fleet.ratelimit import TokenBucket

        try:
            self._client = (self._client_factory or make_client)(self._kubeconfig)
        except Exception as error:  # lightkube's config errors have no common base
            self._problem = f"no access to the Kubernetes API: {type(error).__name__}: {error}"
            logger.error("simulated nodes not served: %s", self._problem)
            return
        self._metrics.fleet_started()
        self.controller = FleetController(
            self._client,
            selector=self.settings.selector,
            bucket=TokenBucket(self.settings.qps, self.settings.burst),
            on_write=self._metrics.fleet_written,
            on_slice_write=self._metrics.resourceslice_written,
        )
        if self.settings.election is None:
            self._task = asyncio.create_task(self.controller.run(), name="fleet")
        else:
            from fleet.leader import LeaderElector

            self.elector = LeaderElector(self._client, self.settings.election)
            self._task = asyncio.create_task(self.elector.run(self.controller.run), name="fleet")
        selector = ",".join(f"{k}={v}" for k, v in self.settings.selector.items())
        logger.info("simulating the nodes labelled %s (at most %g writes/s, burst %d)",
                    selector or "(any)", self.settings.qps, self.settings.burst)  # fmt: skip

    async def apply(self, specs: Sequence[ResourceSpec], config: Config) -> str:
        if self.controller is None or config.fleet is None:
            return f"not serving: {self._problem}"
        self.controller.configure(config.fleet)
        return f"{len(self.controller.nodes)} simulated nodes to update"

    def on_event(self, directory: Path, name: str, mask: int) -> None:
        pass

    def directories(self) -> set[Path]:
        return set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a client that is gone
                await self._client.close()

    def states(self) -> list[ResourceState]:
        return []

    @property
    def standing_by(self) -> bool:
        """Another replica leads: this one waits, ready to take over."""
        return self.elector is not None and not self.elector.leading

    def problems(self) -> dict[str, str]:
        if self.standing_by:
            return {}  # ready: a standby that answers is what a Deployment's rollout wants
        why = self._problem or (self.controller.problem if self.controller else None)
        return {} if why is None else {"simulated nodes": why}

    def summary(self) -> str:
        if self.controller is None:
            return f"simulated nodes not served: {self._problem}"
        if self.elector is not None and self.standing_by:
            return f"standing by (the leader is {self.elector.leader or 'unknown'})"
        return (f"{len(self.controller.nodes)} simulated nodes, "
                f"{self.controller.pending} status writes pending")  # fmt: skip

    def state(self) -> FleetState | None:
        controller = self.controller
        if controller is None or self.standing_by:
            return None  # the leader exports the fleet; two would count it twice
        capacity: dict[str, int] = {}
        allocatable: dict[str, int] = {}
        for node in controller.nodes.values():
            if node.written is None:
                continue
            for name, value in node.written[0]:
                capacity[name] = capacity.get(name, 0) + int(value)
            for name, value in node.written[1]:
                allocatable[name] = allocatable.get(name, 0) + int(value)
        return FleetState(
            nodes=len(controller.nodes), in_use=controller.in_use(),
            capacity=capacity, allocatable=allocatable,
        )  # fmt: skip
