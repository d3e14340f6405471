"""The contract between the supervisor and a backend: one way of serving resources.

The config yields the desired resources of a node; each backend serves the share whose
``api`` is its own (the device-plugin backend: kubelet's device-plugin API; the DRA
backend: ResourceSlices and a kubelet DRA plugin). The supervisor owns the config, the
watches, metrics and signals, and hands each backend its share; backends know nothing of
the config file or of each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from plugin_worker.api import ResourceSpec
from supervisor.config import Config
from supervisor.metrics import ResourceState
from supervisor.watch import DirectoryWatcher


class Backend(Protocol):
    @property
    def api(self) -> str | None:
        """The `ResourceSpec.api` this backend serves (None: every resource, as a simulated
        fleet does, whose nodes get both kinds)."""

    async def start(self, watcher: DirectoryWatcher) -> None:
        """Get ready to serve (watch its directories with `watcher`); before `apply`."""

    async def apply(self, specs: Sequence[ResourceSpec], config: Config) -> str:
        """Serve exactly `specs` (its share of `config`); a summary of what changed."""

    def on_event(self, directory: Path, name: str, mask: int) -> None:
        """An inotify event in one of the directories of `directories`."""

    def directories(self) -> set[Path]:
        """The directories it watches now (the supervisor's config watch leaves them)."""

    async def stop(self) -> None:
        """Stop serving and clean up what it made (sockets, files, API objects)."""

    def states(self) -> list[ResourceState]:
        """Each resource's devices and registration, for metrics."""

    def problems(self) -> dict[str, str]:
        """Why each resource that should serve does not, by name (readiness)."""

    def summary(self) -> str:
        """One line for /healthz, e.g. ``2 resources served, 2 registered``."""
