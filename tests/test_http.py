"""The /metrics, /healthz and /readyz endpoint, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from supervisor.http import AddressError, MetricsServer, parse_address
from supervisor.metrics import Metrics, SupervisorState
from tests.support import HTTPAnswer, http_get


class Readiness:
    """What the fixture's server answers on /readyz; a test sets `answer`."""

    answer = (True, "ok: test")


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def base_url(readiness: Readiness) -> AsyncIterator[str]:
    metrics = Metrics(lambda: SupervisorState(resources=(), config_ok=True))
    server = MetricsServer(
        metrics.registry, alive=lambda: "ok: test", ready=lambda: readiness.answer
    )
    host, port = await server.start("127.0.0.1:0")
    yield f"http://{host}:{port}"
    await server.stop()


async def fetch(url: str, method: str = "GET") -> HTTPAnswer:
    return await asyncio.to_thread(http_get, url, method=method)


async def test_metrics_and_health(base_url: str) -> None:
    status, content_type, body = await fetch(base_url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    assert 'widget_config_reloads_total{result="failure"} 0.0' in body
    assert "# HELP widget_allocations_total Container allocation requests" in body
    assert (await fetch(base_url + "/healthz"))[::2] == (200, "ok: test\n")
    assert (await fetch(base_url + "/healthz", "HEAD"))[0] == 200
    assert (await fetch(base_url + "/readyz"))[::2] == (200, "ok: test\n")


async def test_readyz_says_what_is_wrong_and_healthz_stays_200(
    base_url: str, readiness: Readiness
) -> None:
    readiness.answer = (False, "starting")
    assert await fetch(base_url + "/readyz") == (503, "text/plain", "starting\n")
    assert (await fetch(base_url + "/readyz", "HEAD"))[::2] == (503, "")
    readiness.answer = (False, "ska-sdp.org/a-b: socket served by another process (pid 1)\n"
                               "config rejected: c.yml:3: devices[0].model: bad")  # fmt: skip
    status, _, text = await fetch(base_url + "/readyz")
    assert (status, text.splitlines()) == (
        503,
        ["ska-sdp.org/a-b: socket served by another process (pid 1)",
         "config rejected: c.yml:3: devices[0].model: bad"],
    )  # fmt: skip
    # Liveness is the event loop answering, whatever readiness says.
    assert (await fetch(base_url + "/healthz"))[::2] == (200, "ok: test\n")
    index = (await fetch(base_url + "/")).text
    assert all(f'href="{path}"' in index for path in ("/metrics", "/healthz", "/readyz"))
    assert "/readyz" in (await fetch(base_url + "/nope")).text


async def test_unknown_paths_and_methods(base_url: str) -> None:
    assert (await fetch(base_url + "/nope"))[0] == 404
    assert (await fetch(base_url + "/metrics", "POST"))[0] == 405


async def test_garbage_request_gets_400_and_server_lives(base_url: str) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x01garbage\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    assert (await fetch(base_url + "/healthz"))[0] == 200


@pytest.mark.parametrize(
    ("address", "expected"),
    [("0.0.0.0:9464", ("0.0.0.0", 9464)), (":80", ("0.0.0.0", 80)), ("[::1]:9", ("::1", 9))],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9464", "host:", "host:99999", "host:x"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(AddressError):
        parse_address(address)
