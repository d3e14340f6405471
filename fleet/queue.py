"""A work queue of names, oldest first, where a name queued again while waiting is taken
once: what the fleet's writers drain (a node changed twice before its turn is written once)."""

from __future__ import annotations

import asyncio


class CoalescingQueue:
    def __init__(self) -> None:
        self._names: dict[str, None] = {}  # a dict keeps insertion order and is a set
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._names)

    def put(self, name: str) -> None:
        self._names[name] = None
        self._ready.set()

    def discard(self, name: str) -> None:
        self._names.pop(name, None)

    async def take(self) -> str:
        """The oldest name, waiting for one if there is none."""
        while not self._names:
            self._ready.clear()
            await self._ready.wait()
        name = next(iter(self._names))
        del self._names[name]
        return name
