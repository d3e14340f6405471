"""HTTP/1.1 over asyncio streams with h11: persistent connections, request bodies, plain and
chunked-streaming responses. Knows nothing of Kubernetes; `handler` answers each request.

A streaming response ends when its iterator ends or when the client hangs up (the server
reads the socket meanwhile to notice); `stop()` aborts every connection, like a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11

logger = logging.getLogger(__name__)

READ_SIZE = 65536


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Stream:
    """A response whose body is sent chunk by chunk as the iterator yields."""

    status: int
    chunks: AsyncIterator[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response | Stream]]


class HttpServer:
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def stop(self) -> None:
        """Close the listener and abort every open connection (streams included)."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._stopping = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _read_request(conn, reader)
                if request is None:
                    break
                response = await self._handler(request)
                if isinstance(response, Stream):
                    await _send_stream(conn, reader, writer, response)
                else:
                    await _send(conn, writer, response)
                if h11.MUST_CLOSE in (conn.our_state, conn.their_state):
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as error:
            with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                await _send(
                    conn,
                    writer,
                    Response(
                        400, f"bad request: {error}\n".encode(), [("Content-Type", "text/plain")]
                    ),
                )
        except (ConnectionError, h11.LocalProtocolError) as error:
            logger.debug("connection ended: %s", error)
        except asyncio.CancelledError:
            writer.transport.abort()
            if not self._stopping:
                raise
            # stop() cancelled this connection on purpose: end quietly (asyncio's stream
            # callback would log a cancelled connection task as an error).
        finally:
            self._connections.discard(task)
            writer.close()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_SIZE))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = urlsplit(head.target.decode("latin-1"))
            return Request(
                method=head.method.decode("ascii").upper(),
                path=target.path,
                query=dict(parse_qsl(target.query, keep_blank_values=True)),
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers},
                body=bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, response: Response) -> None:
    headers = [*response.headers, ("Content-Length", str(len(response.body)))]
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
    if response.body:
        writer.write(conn.send(h11.Data(data=response.body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()


async def _send_stream(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: Stream,
) -> None:
    # No Content-Length: h11 frames the body with Transfer-Encoding: chunked.
    writer.write(conn.send(h11.Response(status_code=stream.status, headers=stream.headers)) or b"")
    await writer.drain()

    async def pump() -> None:
        async for chunk in stream.chunks:
            writer.write(conn.send(h11.Data(data=chunk)) or b"")
            await writer.drain()

    async def hang_up() -> None:
        while data := await reader.read(READ_SIZE):
            conn.receive_data(data)  # a pipelined request: h11 keeps it for the next cycle

    sender = asyncio.create_task(pump(), name="http-stream")
    listener = asyncio.create_task(hang_up(), name="http-stream-eof")
    try:
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            task.cancel()
        await asyncio.gather(sender, listener, return_exceptions=True)
        aclose = getattr(stream.chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if sender.cancelled():
        raise ConnectionError("the client closed the connection during a stream")
    if (error := sender.exception()) is not None:
        if not isinstance(error, ConnectionError):
            logger.error("a streaming response failed", exc_info=error)
        raise ConnectionError("the stream ended with an error") from error
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()
