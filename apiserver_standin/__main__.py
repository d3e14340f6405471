"""`python -m apiserver_standin`: serve the stand-in until interrupted, printing its URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click

from apiserver_standin.server import ApiServer


async def _serve(host: str, port: int, token: str | None, kubeconfig: Path | None) -> None:
    server = ApiServer(token=token)
    url = await server.start(host, port)
    if kubeconfig is not None:
        server.kubeconfig(kubeconfig)
    click.echo(url, nl=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    type=click.IntRange(0, 65535),
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option("--token", default=None, help="Require this bearer token (else no auth).")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a kubeconfig pointing at the server to this file.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def main(host: str, port: int, token: str | None, kubeconfig: Path | None, log_level: str) -> None:
    """Serve a Kubernetes API server stand-in (in memory) and print its URL."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, token, kubeconfig))


if __name__ == "__main__":
    main()
