"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection.

One of several replicas of the simulator writes; the others stand by. A candidate takes
the Lease when nobody holds it or when its holder has not renewed it for
`lease_duration` (judged by when this candidate last *saw* the record change, on its own
clock, as client-go does, so clocks that disagree do not matter); the leader renews it
every `retry_period` and steps down if it cannot renew within `renew_deadline`. Writes
carry the Lease's resourceVersion, so two candidates can never both win (one gets 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from dra_driver.kube import API_ERRORS, describe, status_code

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    name: str = "widget-supervisor-simulate"
    namespace: str = "default"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    """client-go's defaults."""


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """`run(lead)` runs `lead()` while this replica leads, until cancelled."""

    def __init__(self, client: AsyncClient, settings: ElectionSettings) -> None:
        self._client, self.settings = client, settings
        self.leader: str | None = None
        """The holder last seen (this replica's identity while it leads)."""
        self._observed: tuple[Any, float] | None = None
        """(the Lease's spec as last seen, when it was seen changing: monotonic)."""

    @property
    def leading(self) -> bool:
        return self.leader == self.settings.identity

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            await self._acquire()
            logger.info("leading: Lease %s/%s is ours (%s)", self.settings.namespace,
                        self.settings.name, self.settings.identity)  # fmt: skip
            task = asyncio.create_task(lead(), name="leading")
            try:
                await self._renew_until_lost(task)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            logger.warning("lost the Lease %s/%s; standing by", self.settings.namespace,
                           self.settings.name)  # fmt: skip

    async def _acquire(self) -> None:
        while True:
            if await self._try():
                return
            await asyncio.sleep(self.settings.retry_period)  # the retry period, not a poll

    async def _renew_until_lost(self, task: asyncio.Task[None]) -> None:
        last_renewed = time.monotonic()
        while not task.done():
            await asyncio.sleep(self.settings.retry_period)
            if await self._try():
                last_renewed = time.monotonic()
            elif not self.leading or time.monotonic() - last_renewed > self.settings.renew_deadline:
                self.leader = None if self.leading else self.leader
                return
        task.result()  # the leading task ended by itself: raise what it raised

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; whether it is ours now."""
        s = self.settings
        try:
            try:
                lease = await self._client.get(Lease, s.name, namespace=s.namespace)
            except API_ERRORS as error:
                if status_code(error) != 404:
                    raise
                await self._client.create(
                    Lease(
                        metadata=ObjectMeta(name=s.name, namespace=s.namespace),
                        spec=self._spec(transitions=0, acquired=_now()),
                    )
                )
                self.leader = s.identity
                return True
            spec = lease.spec or LeaseSpec()
            self._observe(spec)
            holder = spec.holderIdentity
            if holder and holder != s.identity and not self._expired(spec):
                self.leader = holder
                return False
            ours = holder == s.identity
            transitions = (spec.leaseTransitions or 0) + (0 if ours else 1)
            acquired = spec.acquireTime if ours and spec.acquireTime else _now()
            lease.spec = self._spec(transitions=transitions, acquired=acquired)
            await self._client.replace(lease)  # carries the resourceVersion: 409 if raced
        except API_ERRORS as error:
            logger.debug("Lease %s/%s: %s", s.namespace, s.name, describe(error))
            return False
        self.leader = s.identity
        return True

    def _spec(self, *, transitions: int, acquired: datetime) -> LeaseSpec:
        s = self.settings
        return LeaseSpec(
            holderIdentity=s.identity,
            leaseDurationSeconds=round(s.lease_duration),
            acquireTime=acquired,
            renewTime=_now(),
            leaseTransitions=transitions,
        )

    def _observe(self, spec: LeaseSpec) -> None:
        record = (spec.holderIdentity, spec.renewTime, spec.leaseTransitions)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, time.monotonic())

    def _expired(self, spec: LeaseSpec) -> bool:
        assert self._observed is not None
        duration = spec.leaseDurationSeconds or self.settings.lease_duration
        return time.monotonic() - self._observed[1] > duration
