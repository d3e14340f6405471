"""A client-side rate limit, as client-go's: a token bucket of `burst` tokens refilled at
`qps` per second; each request takes one, waiting for it when there is none."""

from __future__ import annotations

import asyncio
import time

DEFAULT_QPS = 5.0
DEFAULT_BURST = 10
"""client-go's defaults (rest.Config: QPS 5, Burst 10)."""


class TokenBucket:
    def __init__(self, qps: float = DEFAULT_QPS, burst: int = DEFAULT_BURST) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1, not {qps} and {burst}")
        self.qps, self.burst = qps, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Wait for a token (callers are served in order)."""
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                # From the clock, not "one token": a sleep that overran on a busy loop
                # earned the time it overran (dropping it held writes below --qps).
                self._refill()
            self._tokens -= 1

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.qps)
        self._at = now
