"""The in-memory stand-in for etcd plus the watch cache: objects, one global revision
counter, the window of past events that watches and paginated lists resume from.

Owns storage only: no defaults, no validation, no managedFields (registry.py does those).
Objects handed in are owned by the store afterwards and never mutated; readers get copies.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from dataclasses import dataclass
from typing import Any

from apiserver_standin.errors import too_large_resource_version

JSON = dict[str, Any]
Key = tuple[str, str, str]
"""(qualified resource, namespace or "", name): the etcd key, ordered like etcd's."""

FRESHNESS_WAIT = 3.0
"""How long a request for a resourceVersion the server has not reached yet waits for it,
before the 504 "Too large resource version" (the watch cache's waitUntilFreshAndBlock)."""


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: JSON
    """The object after the change; for DELETED the last state, at the deletion's RV."""
    prev: JSON | None


class Store:
    def __init__(self, window: int) -> None:
        self.rv = 0
        self.floor = 0
        """The oldest resourceVersion history is complete from: resuming a watch or a
        continue token from an older one answers 410 Expired."""
        self._window = window
        self._objects: dict[Key, JSON] = {}
        self._events: deque[Event] = deque()
        self._subscribers: dict[asyncio.Queue[Event], str] = {}

    # -- reads ---------------------------------------------------------------------

    def get(self, key: Key) -> JSON | None:
        obj = self._objects.get(key)
        return None if obj is None else copy.deepcopy(obj)

    def current(self, resource: str) -> dict[Key, JSON]:
        """The live objects of one resource, shared (read-only) with the store."""
        return {k: v for k, v in self._objects.items() if k[0] == resource}

    def snapshot(self, resource: str, rv: int) -> dict[Key, JSON] | None:
        """The objects of `resource` as they were at revision `rv`; None if compacted."""
        if rv < self.floor:
            return None
        state = self.current(resource)
        for event in reversed(self._events):
            if event.rv <= rv:
                break
            if event.key[0] != resource:
                continue
            if event.prev is None:
                state.pop(event.key, None)
            else:
                state[event.key] = event.prev
        return state

    async def wait_for(self, rv: int) -> None:
        """Return once revision `rv` exists; ApiError 504 after FRESHNESS_WAIT."""
        if rv <= self.rv:
            return
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers[queue] = ""
        try:
            async with asyncio.timeout(FRESHNESS_WAIT):
                while self.rv < rv:
                    await queue.get()
        except TimeoutError:
            raise too_large_resource_version(rv, self.rv) from None
        finally:
            del self._subscribers[queue]

    # -- writes --------------------------------------------------------------------

    def write(self, key: Key, obj: JSON | None) -> Event:
        """Store (or with None delete) one object at the next revision and tell watchers."""
        prev = self._objects.get(key)
        self.rv += 1
        if obj is None:
            if prev is None:
                raise KeyError(key)
            stored = _with_rv(prev, self.rv)
            del self._objects[key]
            kind = "DELETED"
        else:
            stored = _with_rv(obj, self.rv)
            self._objects[key] = stored
            kind = "MODIFIED" if prev is not None else "ADDED"
        event = Event(self.rv, kind, key, stored, prev)
        self._events.append(event)
        while len(self._events) > self._window:
            self.floor = self._events.popleft().rv
        for queue, resource in self._subscribers.items():
            if resource in ("", key[0]):
                queue.put_nowait(event)
        return event

    def compact(self) -> None:
        """Forget every past event, as an etcd compaction at the current revision."""
        self._events.clear()
        self.floor = self.rv

    # -- watching ------------------------------------------------------------------

    def subscribe(self, resource: str, since: int) -> tuple[list[Event], asyncio.Queue[Event]]:
        """Events of `resource` after revision `since` so far, and a queue of later ones.
        The caller checks `since >= floor` first and must `unsubscribe` the queue."""
        backlog = [e for e in self._events if e.rv > since and e.key[0] == resource]
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers[queue] = resource
        return backlog, queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.pop(queue, None)


def _with_rv(obj: JSON, rv: int) -> JSON:
    out = dict(obj)
    out["metadata"] = {**(obj.get("metadata") or {}), "resourceVersion": str(rv)}
    return out
