"""`widget-supervisor kubelet` and `widget-supervisor demo`: try it without a cluster.

Both run on one event loop with the real gRPC servers over real unix sockets; the
demo runs the supervisor and the kubelet stand-in side by side in a temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path

import click
import grpc

from kubelet_standin import KubeletStandIn
from kubelet_standin.console import allocation_text, resource_table
from supervisor.runtime import Settings, Supervisor


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


TABLE_SETTLE = 0.2
"""Registrations and lists arrive in bursts; print the table once per burst."""


async def run_kubelet(plugin_dir: Path, allocations: dict[str, int]) -> None:
    """Serve kubelet.sock, print the table when it changes, allocate when asked."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    pending = dict(allocations)
    tasks: set[asyncio.Task[None]] = set()
    printed = ""
    scheduled: asyncio.TimerHandle | None = None

    def print_table() -> None:
        nonlocal printed, scheduled
        scheduled = None
        table = resource_table(kubelet)
        if table != printed:
            printed = table
            click.echo(table + "\n")

    def changed() -> None:
        nonlocal scheduled
        if scheduled is None:
            scheduled = loop.call_later(TABLE_SETTLE, print_table)
        for name in [n for n in pending if n in kubelet.plugins and kubelet.plugins[n].devices]:
            task = loop.create_task(allocate(name, pending.pop(name)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def allocate(name: str, count: int) -> None:
        try:
            response = await kubelet.allocate(name, count=count)
        except (RuntimeError, grpc.aio.AioRpcError) as error:
            click.echo(f"allocation from {name} failed: {error}", err=True)
            return
        click.echo(allocation_text(name, response) + "\n")
        changed()

    kubelet = KubeletStandIn(plugin_dir, on_change=changed)
    await kubelet.start()
    click.echo(f"kubelet stand-in serving {kubelet.socket_path}; Ctrl-C stops")
    stop_on_signals(stop)
    await stop.wait()
    if scheduled is not None:
        scheduled.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await kubelet.stop()


async def run_demo(
    config: Path,
    resources: list[str],
    metrics_address: str,
    duration: float | None,
    *,
    copy: bool = False,
) -> None:
    """Run both sides until Ctrl-C (or `duration`), showing what kubelet would see.

    With `copy`, the config is copied into the demo's temp dir and served from there,
    so that a bundled example can be edited to watch a live reload.
    """
    with tempfile.TemporaryDirectory(prefix="widget-demo-") as tmp:
        if copy:
            config = Path(shutil.copyfile(config, Path(tmp) / config.name))
        plugin_dir = Path(tmp) / "device-plugins"
        kubelet = KubeletStandIn(plugin_dir)
        await kubelet.start()
        supervisor = Supervisor(
            Settings(
                config=config,
                plugin_dir=plugin_dir,
                metrics_address=metrics_address,
                domain="ska-sdp.org",
                strict_perms=False,
                pod_resources_socket=kubelet.pod_resources_socket,
                pod_resources_interval=5.0,
                cdi_dir=Path(tmp) / "cdi",
            )
        )
        task = asyncio.create_task(supervisor.run(handle_signals=False), name="supervisor")
        try:
            await _show(kubelet, supervisor, config, resources, duration)
        finally:
            supervisor.request_stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await kubelet.stop()


async def _show(
    kubelet: KubeletStandIn,
    supervisor: Supervisor,
    config: Path,
    expected: list[str],
    duration: float | None,
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await kubelet.wait_registered(expected, timeout=15)
    click.echo(f"\nwidget-supervisor is serving {config} (edit it to see a live reload)")
    click.echo(f"plugin dir: {kubelet.plugin_dir}\n")
    click.echo(resource_table(kubelet) + "\n")
    for name in expected:
        try:
            response = await kubelet.allocate(name, count=1)
        except (RuntimeError, grpc.aio.AioRpcError) as error:
            # No healthy device, or an injected admission fault: kubelet would fail the pod.
            click.echo(f"cannot allocate from {name}: {error}\n")
            continue
        click.echo(allocation_text(name, response) + "\n")
    host, port = supervisor.metrics_address or ("?", 0)
    base = f"http://{host}:{port}"
    click.echo(f"metrics: {base}/metrics   health: {base}/healthz   ready: {base}/readyz")
    await serve_until(stop, duration)


async def serve_until(stop: asyncio.Event, duration: float | None) -> None:
    """Until Ctrl-C (`stop`), or for `duration` seconds."""
    if duration is None:
        click.echo("serving until Ctrl-C")
        await stop.wait()
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
