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
from tests.reliability.conftest import STAY, V1, V2, Resources, replace_config
from tests.support import SupervisorProcess, eventually, sample, sockets_in

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
    pending: dict[int, tuple[str, float]] = field(default_factory=dict)
    """Allocate calls sent and not answered yet: token -> (resource, sent)."""
    answered: list[tuple[str, float, float, str]] = field(default_factory=list)
    """Every call: (resource, sent, answered, "OK" or what failed), monotonic seconds."""
    sent: int = 0


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
            # Kubelet admits no pod for an unregistered resource: pace the retry (the
            # load generator's own rhythm, not a wait for a condition).
            await asyncio.sleep(0.01)
            continue
        calls.sent += 1
        token, sent, outcome = calls.sent, time.monotonic(), "OK"
        calls.pending[token] = (resource, sent)
        try:
            await plugin.stub.Allocate(request, timeout=10)
            calls.ok[resource] += 1
        except grpc.aio.AioRpcError as error:
            what = outcome = f"{resource}: {error.code().name}: {error.details()}"
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
                outcome = "caller cancelled by the test"
                raise  # the test is cancelling this caller
            # grpc.aio cancels calls on a channel that kubelet closed.
            replaced = kubelet.plugins.get(resource) is not plugin or not plugin.connected
            what = outcome = f"{resource}: cancelled locally"
            if replaced:
                calls.excused.append((time.monotonic(), what))
            else:
                calls.failures.append(what)
                calls.failed_at.append(time.monotonic())
        finally:
            del calls.pending[token]
            calls.answered.append((resource, sent, time.monotonic(), outcome))
        # Paces the load generator: 32 callers looping flat out would starve the event
        # loop that also runs the stand-in. Not a wait for any condition.
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


async def _settled(pid: int) -> Resources:
    """What the process holds once it stops changing: after a kubelet restart and reload,
    gRPC threads and old connections come and go for a moment. Steady = the same for 5
    probes in a row, 0.1 s apart."""
    probes: list[Resources] = []

    def steady() -> Resources | None:
        probes.append(Resources.of(pid))
        recent = probes[-5:]
        return recent[0] if len(recent) == 5 and len(set(recent)) == 1 else None

    return await eventually(
        steady, every=0.1, what=lambda: f"fds/threads/sockets steady: {probes[-5:]}"
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
        before = await _settled(pid)
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

                def v2_listed(k: KubeletStandIn, n: int = v2_count) -> bool:
                    return len(k.plugins[V2].devices) == n

                await kubelet.wait_for(v2_listed)
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
        registrations = sample(metrics, "widget_registrations_total", resource=V1)
        assert registrations is not None
        assert registrations >= KUBELET_RESTARTS + 2
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
            what=lambda: f"fds/sockets/threads back to {before}, now {Resources.of(pid)}",
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


# In the SIGTERM test V1's Allocate takes this long (allocate.delay), so that calls are
# surely inside the handler when the signal arrives; V2 answers at once, at full rate.
IN_HANDLER = 0.5


async def test_sigterm_under_load_finishes_in_flight_and_exits_0_within_5s(
    config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    with config.open("a") as handle:
        handle.write(
            f"resources:\n- {{type: snaffler, model: v1, allocate: {{delay: {IN_HANDLER}s}}}}\n"
        )
    supervisor = await SupervisorProcess(config, plugin_dir, "--log-level", "info").start()
    calls, stop = Calls(), asyncio.Event()
    callers = [
        asyncio.create_task(_caller(kubelet, (V1, V2)[i % 2], calls, stop), name=f"caller{i}")
        for i in range(CALLERS)
    ]

    def in_handler(now: float) -> list[int]:
        """V1 calls sent over 0.1 s ago and not answered: the server is running them (an
        Allocate without the delay takes about a millisecond here)."""
        return [t for t, (r, sent) in calls.pending.items() if r == V1 and sent < now - 0.1]

    try:
        await _quiet(supervisor, kubelet, {V1, V2})
        await eventually(lambda: calls.ok[V2] > 500 and calls.ok[V1] > 20, what="load running")
        # Real concurrent load at the signal: a quarter of the callers are inside V1's
        # handler, and V2's callers are going flat out. Nothing is awaited from the check
        # to the signal.
        await eventually(
            lambda: len(in_handler(time.monotonic())) >= CALLERS // 4,
            what="Allocates inside the handler",
        )
        signalled = time.monotonic()
        running = set(in_handler(signalled))
        supervisor.signal(signal.SIGTERM)
        assert await supervisor.wait(timeout=5) == 0
        assert time.monotonic() - signalled < 5
        # Every socket of ours is gone (the public names and the private bind names).
        assert sockets_in(plugin_dir) == {KUBELET_SOCKET}
        stop.set()
        await asyncio.gather(*callers)
        await kubelet.wait_for(lambda k: not any(p.connected for p in k.plugins.values()))

        # No Allocate failed before the signal, excused or not.
        before = [what for _, _, done, what in calls.answered if done < signalled and what != "OK"]
        assert before == [], before[:10]
        assert all(moment >= signalled for moment in calls.failed_at)
        assert all(moment >= signalled for moment, _ in calls.excused)
        # The calls being served at the signal finished: every one answered OK.
        finished = [
            what for r, sent, done, what in calls.answered
            if r == V1 and sent < signalled - 0.1 and done >= signalled
        ]  # fmt: skip
        assert len(finished) >= len(running) >= CALLERS // 4
        assert set(finished) == {"OK"}, finished
        # Calls arriving once the server is shutting down are refused by gRPC (UNAVAILABLE,
        # or CANCELLED for one it had received but not started; kubelet retries admission);
        # nothing failed in any other way.
        odd = [f for f in calls.failures if "UNAVAILABLE" not in f and "CANCELLED" not in f]
        assert odd == [], odd[:10]
        assert "Traceback" not in supervisor.output
        await supervisor.wait_for_log("stopped$")
    finally:
        stop.set()
        for task in callers:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*callers, return_exceptions=True)
        await supervisor.stop()
