"""The HTTP endpoint on --metrics-address: ``/metrics``, ``/healthz`` and ``/readyz``.

A deliberately small HTTP/1.x server (one request per connection) on the supervisor's
event loop, with no extra thread. That is what makes ``/healthz`` a liveness check: its
answer comes from the loop that serves every resource, so a dead or stalled loop answers
nothing and the probe times out; it has no failure answer of its own. ``/readyz`` says
what the supervisor reports: 200, or 503 with one line per thing wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 16 * 1024
READ_TIMEOUT = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}  # fmt: skip


class AddressError(ValueError):
    pass


def parse_address(address: str) -> tuple[str, int]:
    """``0.0.0.0:9464``, ``[::1]:9464`` or ``:9464`` -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"{address!r} is not HOST:PORT (e.g. 0.0.0.0:9464)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


class MetricsServer:
    """Serves the registry, liveness and readiness until stopped.

    `alive` gives /healthz's text (always 200); `ready` gives /readyz's (200 when its
    first item is true, else 503).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        alive: Callable[[], str],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self._registry = registry
        self._alive = alive
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self, address: str) -> tuple[str, int]:
        host, port = parse_address(address)
        try:
            self._server = await asyncio.start_server(
                self._handle, host, port, limit=MAX_REQUEST_HEAD
            )
        except OSError as error:
            raise AddressError(f"cannot listen on {address}: {error.strerror}") from error
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = self._respond(head)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if head.startswith(b"HEAD ") else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):  # fmt: skip
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        if target == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if target == b"/healthz":
            return 200, "text/plain", (self._alive() + "\n").encode()
        if target == b"/readyz":
            ok, detail = self._ready()
            return (200 if ok else 503), "text/plain", (detail + "\n").encode()
        if target == b"/":
            links = " ".join(f'<a href="{p}">{p}</a>' for p in ("/metrics", "/healthz", "/readyz"))
            return 200, "text/html", (links + "\n").encode()
        return 404, "text/plain", b"not found; try /metrics, /healthz or /readyz\n"
