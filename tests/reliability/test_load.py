"""Load with churn: 32 Allocate callers while kubelet restarts, the config reloads and
SIGHUP arrives; then no leaks. And a graceful stop under the same load."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from kubelet_standin import KubeletStandIn
from kubelet_standin.kubelet import PluginEndpoint
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker.api import KUBELET_SOCKET, socket_name_for
from tests.reliability.conftest import STAY, V1, V2, Resources, eventually, replace_config
from tests.support import SupervisorProcess, sample, sockets_in

pytestmark = pytest.mark.slow

CALLERS = 32
KUBELET_RESTARTS = 20
RELOADS = 100
CHURN = [(f"gizmo{i}", "mk2", f"/dev/gizmo{i}") for i in range(3)]
EXTRA_V2 = ("snaffler", "v2", "/dev/wibble5")  # comes and goes: ListAndWatch must follow
STABLE_IDS = {V1: "snaffler-v1-wibble1", V2: "snaffler-v2-wibble3"}


@dataclass
class Calls:
    ok: dict[str, int] = field(default_factory=lambda: {V1: 0, V2: 0})
    excused: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)


async def _caller(
    kubelet: KubeletStandIn, resource: str, calls: Calls, stop: asyncio.Event
) -> None:
    """Allocate as kubelet does: through the endpoint registered now, if any."""
    request = pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=[STABLE_IDS[resource]])]
    )
    while not stop.is_set():
        plugin: PluginEndpoint | None = kubelet.plugins.get(resource)
        if plugin is None or not plugin.connected:
            await asyncio.sleep(0.01)  # kubelet admits no pod for an unregistered resource
            continue
        try:
            await plugin.stub.Allocate(request, timeout=10)
            calls.ok[resource] += 1
        except grpc.aio.AioRpcError as error:
            what = f"{resource}: {error.code().name}: {error.details()}"
            # Excused only inside this resource's own re-registration window: kubelet
            # dropped the connection that this call was using (restart or re-register).
            replaced = kubelet.plugins.get(resource) is not plugin or not plugin.connected
            dropped = error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
            if replaced and dropped:
                calls.excused.append((time.monotonic(), what))
            else:
                calls.failures.append(what)
                calls.failed_at.append(time.monotonic())
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the test is cancelling this caller
            # grpc.aio cancels calls on a channel that kubelet closed.
            replaced = kubelet.plugins.get(resource) is not plugin or not plugin.connected
            what = f"{resource}: cancelled locally"
            if replaced:
                calls.excused.append((time.monotonic(), what))
            else:
                calls.failures.append(what)
        await asyncio.sleep(0.002)


def _config_for(step: int) -> list[tuple[str, str, str]]:
    churn = [CHURN[i] for i in range(len(CHURN)) if (step >> i) & 1]
    extra = [EXTRA_V2] if step % 2 else []
    return [*STAY, *extra, *churn]


def _names(devices: list[tuple[str, str, str]]) -> set[str]:
    return {f"ska-sdp.org/{t}-{m}" for t, m, _ in devices}


async def _quiet(supervisor: SupervisorProcess, kubelet: KubeletStandIn, names: set[str]) -> None:
    await kubelet.wait_registered(sorted(names), timeout=20)
    await eventually(
        lambda: {n for n, p in kubelet.plugins.items() if p.connected} == names,
        what=f"exactly {sorted(names)} connected",
    )


async def _tasks(supervisor: SupervisorProcess) -> list[str]:
    mark = len(supervisor.lines)
    supervisor.signal(signal.SIGUSR1)
    state = await supervisor.wait_for_log(r"state: .* tasks \[", after=mark)
    listed = re.search(r"tasks \[(.*)\], \d+ threads", state)
    assert listed is not None, state
    return listed[1].split(", ")


async def test_allocate_under_restarts_reloads_and_sighup_without_leaks(  # noqa: PLR0915
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    started = time.monotonic()
    supervisor = await SupervisorProcess(config, plugin_dir, "--log-level", "info").start()
    assert supervisor.process is not None
    pid = supervisor.process.pid
    calls, stop = Calls(), asyncio.Event()
    callers: list[asyncio.Task[None]] = []
    try:
        await _quiet(supervisor, kubelet, {V1, V2})
        # Warm up every path once (gRPC starts threads lazily), then measure.
        await kubelet.restart()
        replace_config(config, _config_for(7))
        await _quiet(supervisor, kubelet, _names(_config_for(7)))
        replace_config(config, STAY)
        await _quiet(supervisor, kubelet, {V1, V2})
        await kubelet.allocate(V1, device_ids=[STABLE_IDS[V1]])
        await asyncio.sleep(0.5)
        before = Resources.of(pid)
        tasks_before = await _tasks(supervisor)

        callers = [
            asyncio.create_task(_caller(kubelet, (V1, V2)[i % 2], calls, stop), name=f"caller{i}")
            for i in range(CALLERS)
        ]
        step, windows = 0, []
        for restart in range(KUBELET_RESTARTS):
            opened = time.monotonic()
            await kubelet.restart()
            await _quiet(supervisor, kubelet, _names(_config_for(step)))
            windows.append((opened, time.monotonic()))
            for _ in range(RELOADS // KUBELET_RESTARTS):
                step += 1
                replace_config(config, _config_for(step))
                if step % 2:
                    supervisor.signal(signal.SIGHUP)
                wanted = _config_for(step)
                await _quiet(supervisor, kubelet, _names(wanted))
                v2_count = sum(d[1] == "v2" for d in wanted)
                await kubelet.wait_for(lambda k, n=v2_count: len(k.plugins[V2].devices) == n)
            assert min(calls.ok.values()) > restart, (calls.ok, calls.failures[:3])
        stop.set()
        await asyncio.gather(*callers)

        final = _config_for(step)
        replace_config(config, STAY)  # back to the measured set of resources
        await _quiet(supervisor, kubelet, {V1, V2})
        await kubelet.wait_for(lambda k: len(k.plugins[V2].devices) == 2)
        assert calls.failures == [], calls.failures[:10]
        assert min(calls.ok.values()) > 200, calls.ok

        # Allocate failed only inside a kubelet restart (re-registration) window, and
        # V1/V2 registered again only then: reloads and SIGHUP never disturbed them.
        def in_window(moment: float) -> bool:
            return any(start <= moment <= end + 0.5 for start, end in windows)

        outside = [what for moment, what in calls.excused if not in_window(moment)]
        assert outside == [], outside[:10]
        measured = windows[0][0]
        again = [(t, r) for t, r in kubelet.registrations if t > measured and r in (V1, V2)]
        assert [(t, r) for t, r in again if not in_window(t)] == []
        assert step == RELOADS
        assert _names(final) >= {V1, V2}

        # ListAndWatch carries the latest list; every resource is registered.
        assert kubelet.plugins[V1].devices == {
            "snaffler-v1-wibble1": "Healthy",
            "snaffler-v1-wibble2": "Healthy",
        }
        assert set(kubelet.plugins[V2].devices) == {"snaffler-v2-wibble3", "snaffler-v2-wibble4"}
        metrics = supervisor.metrics()
        assert sample(metrics, "widget_plugin_registered", resource=V1) == 1
        assert sample(metrics, "widget_plugin_registered", resource=V2) == 1
        assert sample(metrics, "widget_registrations_total", resource=V1) >= KUBELET_RESTARTS + 2
        assert (sample(metrics, "widget_config_reloads_total", result="success") or 0) >= RELOADS
        assert sample(metrics, "widget_config_reloads_total", result="failure") == 0
        assert sample(
            metrics, "widget_allocation_errors_total", resource=V1, reason="unknown_device"
        ) in (None, 0)
        assert sockets_in(plugin_dir) == {
            KUBELET_SOCKET,
            socket_name_for(V1, str(plugin_dir)),
            socket_name_for(V2, str(plugin_dir)),
        }
        assert "crashed" not in supervisor.output
        assert "Traceback" not in supervisor.output

        # No leaked fds or sockets. gRPC core sizes its thread pools on demand, so one or
        # two more threads may linger; a leak would grow with the 20 restarts (and did not).
        await eventually(
            lambda: (
                Resources.of(pid).fds <= before.fds
                and Resources.of(pid).sockets <= before.sockets
                and Resources.of(pid).threads <= before.threads + 2
            ),
            timeout=20,
            what=f"fds/sockets/threads back to {before}, now {Resources.of(pid)}",
        )
        # No leaked asyncio tasks: the process lists its own on SIGUSR1.
        tasks = await _tasks(supervisor)
        assert sum(t.startswith("worker:") for t in tasks) == 2, tasks
        assert len(tasks) <= len(tasks_before), (tasks_before, tasks)
        print(f"load: {calls.ok} ok, {len(calls.excused)} excused, resources {before} -> "
              f"{Resources.of(pid)}, {time.monotonic() - started:.1f} s")  # fmt: skip
    finally:
        stop.set()
        for task in callers:
            task.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        assert await supervisor.stop() == 0


async def test_sigterm_under_load_finishes_in_flight_and_exits_0_within_5s(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir, "--log-level", "info").start()
    calls, stop = Calls(), asyncio.Event()
    callers = [
        asyncio.create_task(_caller(kubelet, (V1, V2)[i % 2], calls, stop)) for i in range(CALLERS)
    ]
    try:
        await _quiet(supervisor, kubelet, {V1, V2})
        await eventually(lambda: min(calls.ok.values()) > 50, what="load running")
        signalled = time.monotonic()
        supervisor.signal(signal.SIGTERM)
        assert await supervisor.wait(timeout=5) == 0
        assert time.monotonic() - signalled < 5
        stop.set()
        await asyncio.gather(*callers)
        # Streams closed, sockets ours removed, and no Allocate failed with anything but
        # "the server went away" (in-flight ones finished: no CANCELLED or INTERNAL).
        await kubelet.wait_for(lambda k: not any(p.connected for p in k.plugins.values()))
        assert sockets_in(plugin_dir) == {KUBELET_SOCKET}
        # Calls arriving once the server is shutting down are refused by gRPC (kubelet
        # retries admission); none failed before the signal.
        odd = [f for f in calls.failures if "UNAVAILABLE" not in f and "CANCELLED" not in f]
        assert odd == [], odd[:10]
        assert all(moment >= signalled for moment in calls.failed_at)
        assert "Traceback" not in supervisor.output
        await supervisor.wait_for_log("stopped$")
    finally:
        stop.set()
        for task in callers:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*callers, return_exceptions=True)
        await supervisor.stop()
