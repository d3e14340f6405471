"""The benchmark scenarios: each drives the real supervisor through the kubelet stand-in.

Every loop is bounded in count and in time, every child process is stopped on the
way out, and everything runs over unix sockets in a temp dir (the supervisor's
metrics endpoint binds 127.0.0.1 on a free port).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import dra as dra_scenarios
from bench import simulate as simulate_scenarios
from bench.floor import READY
from bench.harness import (
    DOMAIN,
    WRITERS,
    Child,
    Device,
    child,
    config_text,
    cpu_seconds,
    kubelet_standin,
    percentile,
    resource_names,
    rss_bytes,
    scratch_dir,
    spread,
    supervisor_args,
    wait_registered,
    write_in_place,
)
from bench.report import Report
from kubelet_standin import KubeletStandIn
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker._proto import deviceplugin_pb2_grpc as pb_grpc
from supervisor.config import parse_config
from supervisor.resources import device_id

WAIT = 30.0
MIB = 2**20


@dataclass(frozen=True, slots=True)
class Sizes:
    registration: tuple[int, ...]
    spread_devices: int
    restart_resources: int
    restarts: int
    reload_edits: int
    allocate_calls: int
    allocate_rounds: int
    scale_devices: int
    scale_reloads: int
    wide: tuple[int, int]
    hostile_seconds: float
    idle_seconds: float
    settle: float
    dra: dra_scenarios.DraSizes
    simulate: simulate_scenarios.SimSizes


FULL = Sizes(
    registration=(1, 50, 200), spread_devices=1000, restart_resources=50, restarts=5,
    reload_edits=60, allocate_calls=768, allocate_rounds=8, scale_devices=10_000,
    scale_reloads=10, wide=(200, 50), hostile_seconds=10.0, idle_seconds=30.0, settle=1.0,
    dra=dra_scenarios.FULL, simulate=simulate_scenarios.FULL,
)  # fmt: skip
QUICK = Sizes(
    registration=(1, 5, 20), spread_devices=100, restart_resources=5, restarts=2,
    reload_edits=8, allocate_calls=256, allocate_rounds=1, scale_devices=1000,
    scale_reloads=3, wide=(20, 5), hostile_seconds=2.5, idle_seconds=2.0, settle=0.2,
    dra=dra_scenarios.QUICK, simulate=simulate_scenarios.QUICK,
)  # fmt: skip


def _since(start: float) -> float:
    return time.perf_counter() - start


def _has_device(resource: str, wanted: str) -> Callable[[KubeletStandIn], bool]:
    """A `wait_for` predicate: kubelet's latest list of `resource` holds device `wanted`."""
    return lambda kubelet: wanted in kubelet.plugins[resource].devices


def _resources(count: int) -> str:
    return "resource" if count == 1 else "resources"


# -- registration, kubelet restart, idle memory and CPU ---------------------------------


async def registration(report: Report, sizes: Sizes) -> None:
    largest = max(sizes.registration)
    for count in sizes.registration:
        devices = spread(count, sizes.spread_devices)
        names = resource_names(devices)
        with scratch_dir() as root:
            config = write_in_place(root / "etc", devices)
            plugin_dir = root / "dp"
            async with (
                kubelet_standin(plugin_dir) as kubelet,
                child(*supervisor_args(config, plugin_dir)) as proc,
            ):
                await wait_registered(kubelet, names, proc)
                report.add(
                    "Registration", f"process start -> {count} {_resources(count)} registered",
                    _since(proc.started), "s", 2.0 if count == largest else None,
                    note=f"{len(devices)} devices",
                )  # fmt: skip
                await asyncio.sleep(sizes.settle)
                limit = {1: 50 * MIB, largest: 60 * MIB}.get(count)
                report.add("Memory", f"idle RSS, {count} {_resources(count)}", rss_bytes(proc.pid),
                           "bytes", limit)  # fmt: skip
                if count == sizes.restart_resources:
                    await _restarts(report, sizes, kubelet, names, proc)
                if count == largest:
                    await _idle_cpu(report, sizes, proc, count)


async def _restarts(
    report: Report, sizes: Sizes, kubelet: KubeletStandIn, names: Sequence[str], proc: Child
) -> None:
    took = []
    for _ in range(sizes.restarts):
        # KubeletStandIn.restart(), timed from the moment kubelet.sock is created anew.
        await kubelet.stop()
        kubelet.plugins.clear()
        await asyncio.sleep(0.05)  # a real kubelet takes longer than this to come back
        start = time.perf_counter()
        await kubelet.start()
        await wait_registered(kubelet, names, proc, timeout=WAIT)
        took.append(_since(start))
    report.details["kubelet_restart_s"] = took
    label = f"kubelet.sock recreated -> {len(names)} re-registered"
    report.add("kubelet restart", f"{label}, p50", percentile(took, 0.5), "s")
    report.add("kubelet restart", f"{label}, max", max(took), "s", 0.5,
               note=f"{len(took)} restarts")  # fmt: skip


async def _idle_cpu(report: Report, sizes: Sizes, proc: Child, count: int) -> None:
    before, start = cpu_seconds(proc.pid), time.perf_counter()
    await asyncio.sleep(sizes.idle_seconds)
    used, wall = cpu_seconds(proc.pid) - before, _since(start)
    report.details["idle_cpu_seconds"] = used
    label = f"idle CPU over {wall:.0f} s, {count} {_resources(count)}"
    report.add("CPU", label, used / wall * 100, "%", 0.1, note=f"{used:.2f} s CPU")


# -- reload propagation ---------------------------------------------------------------------


async def reload(report: Report, sizes: Sizes) -> None:
    for style, write in WRITERS.items():
        took = await _reload_style(write, sizes.reload_edits)
        report.details[f"reload_{style}_s"] = took
        report.add("Reload", f"{style}: write -> new list at kubelet, p50",
                   percentile(took, 0.5), "s")  # fmt: skip
        report.add("Reload", f"{style}: write -> new list at kubelet, p99",
                   percentile(took, 0.99), "s", 0.05, note=f"{len(took)} edits")  # fmt: skip


async def _reload_style(write: Callable[[Path, Sequence[Device]], Path], edits: int) -> list[float]:
    base = spread(4, 16)
    names = resource_names(base)
    target = names[0]
    took = []
    with scratch_dir() as root:
        config = write(root / "etc", base)
        plugin_dir = root / "dp"
        async with (
            kubelet_standin(plugin_dir) as kubelet,
            child(*supervisor_args(config, plugin_dir)) as proc,
        ):
            await wait_registered(kubelet, names, proc)
            for edit in range(edits + 3):  # the first three warm up
                path = f"/dev/extra{edit}"
                wanted = device_id("bench", "m0", path)
                start = time.perf_counter()
                write(root / "etc", [*base, ("bench", "m0", path)])
                await kubelet.wait_for(_has_device(target, wanted), WAIT)
                if edit >= 3:
                    took.append(_since(start))
                await asyncio.sleep(0.01)  # edits are not back to back
            proc.check_alive()
    return took


# -- Allocate, against the floor ------------------------------------------------------------


async def _allocate_calls(
    stub: pb_grpc.DevicePluginAsyncStub, request: pb.AllocateRequest, concurrency: int, total: int
) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def caller() -> None:
        for _ in range(total // concurrency):
            start = time.perf_counter()
            await stub.Allocate(request, timeout=5)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with asyncio.timeout(120):
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, _since(start)


async def _wait_line(proc: Child, text: str) -> None:
    async with asyncio.timeout(WAIT):
        while not any(text in line for line in proc.tail):
            proc.check_alive()
            await asyncio.sleep(0.02)


async def allocate(report: Report, sizes: Sizes) -> None:
    devices = spread(1, 8)
    name = resource_names(devices)[0]
    request = pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=["bench-m0-bench0-0"])]
    )
    with scratch_dir() as root:
        config = write_in_place(root / "etc", devices)
        plugin_dir, floor_socket = root / "dp", root / "floor.sock"
        async with (
            kubelet_standin(plugin_dir) as kubelet,
            child(*supervisor_args(config, plugin_dir)) as proc,
            child("-m", "bench.floor", str(floor_socket)) as floor,
        ):
            await wait_registered(kubelet, [name], proc)
            await _wait_line(floor, READY)
            ours_target = f"unix://{plugin_dir / kubelet.plugins[name].endpoint}"
            async with (
                grpc.aio.insecure_channel(ours_target) as ours_channel,
                grpc.aio.insecure_channel(f"unix://{floor_socket}") as floor_channel,
            ):
                stubs: dict[str, pb_grpc.DevicePluginAsyncStub] = {
                    "ours": pb_grpc.DevicePluginStub(ours_channel),
                    "floor": pb_grpc.DevicePluginStub(floor_channel),
                }
                await _compare(report, sizes, stubs, request, {"ours": proc, "floor": floor})


async def _compare(
    report: Report,
    sizes: Sizes,
    stubs: dict[str, pb_grpc.DevicePluginAsyncStub],
    request: pb.AllocateRequest,
    servers: dict[str, Child],
) -> None:
    for stub in stubs.values():  # warm up both servers and both channels
        await _allocate_calls(stub, request, 8, 256)
    samples: dict[tuple[str, int], list[float]] = {}
    elapsed: dict[tuple[str, int], float] = {}
    cpu = dict.fromkeys(stubs, 0.0)
    for round_ in range(sizes.allocate_rounds):
        order = list(stubs) if round_ % 2 == 0 else list(reversed(stubs))
        for concurrency in (1, 32):
            for which in order:
                before = cpu_seconds(servers[which].pid)
                lat, took = await _allocate_calls(
                    stubs[which], request, concurrency, sizes.allocate_calls
                )
                cpu[which] += cpu_seconds(servers[which].pid) - before
                samples.setdefault((which, concurrency), []).extend(lat)
                elapsed[which, concurrency] = elapsed.get((which, concurrency), 0.0) + took
    for concurrency in (1, 32):
        p50 = {w: percentile(samples[w, concurrency], 0.5) for w in stubs}
        for which in stubs:
            lat = samples[which, concurrency]
            report.add("Allocate", f"{which} p50, concurrency {concurrency}", p50[which], "s")
            report.add("Allocate", f"{which} p99, concurrency {concurrency}",
                       percentile(lat, 0.99), "s")  # fmt: skip
            report.add("Allocate", f"{which} allocations/s, concurrency {concurrency}",
                       len(lat) / elapsed[which, concurrency], "/s")  # fmt: skip
        report.add("Allocate", f"ours/floor p50, concurrency {concurrency}",
                   p50["ours"] / p50["floor"], "x", 1.15,
                   note=f"{len(samples['ours', concurrency])} calls each")  # fmt: skip
    # Server CPU per call is what our code adds; it is far less sensitive than latency
    # to other load on the machine.
    calls = {w: sum(len(samples[w, c]) for c in (1, 32)) for w in stubs}
    per_call = {w: cpu[w] / calls[w] for w in stubs}
    for which in stubs:
        report.add("Allocate", f"{which} server CPU per Allocate", per_call[which], "s")
    report.add("Allocate", "ours/floor server CPU per Allocate",
               per_call["ours"] / per_call["floor"], "x")  # fmt: skip
    wall = sum(elapsed["ours", c] for c in (1, 32))
    report.add("CPU", "supervisor CPU during the Allocate run", cpu["ours"] / wall * 100, "%",
               note="100 % = one core")  # fmt: skip


# -- scale ------------------------------------------------------------------------------------


async def scale(report: Report, sizes: Sizes) -> None:
    count = sizes.scale_devices
    devices = [("bench", "big", f"/dev/big{i}") for i in range(count)]
    data = config_text(devices).encode()
    took = []
    for _ in range(5):
        start = time.perf_counter()
        parse_config(data, source="bench.yml", default_domain=DOMAIN)
        took.append(_since(start))
    report.add("Scale", f"config load (parse + validate), {count} devices",
               percentile(took, 0.5), "s", note="in-process, p50 of 5")  # fmt: skip
    await _scale_one(report, sizes, devices)
    resources, per = sizes.wide
    wide = spread(resources, resources * per)
    names = resource_names(wide)
    with scratch_dir() as root:
        config = write_in_place(root / "etc", wide)
        async with (
            kubelet_standin(root / "dp") as kubelet,
            child(*supervisor_args(config, root / "dp")) as proc,
        ):
            await wait_registered(kubelet, names, proc)
            report.add("Scale", f"process start -> {resources} x {per} devices registered",
                       _since(proc.started), "s")  # fmt: skip
            await asyncio.sleep(sizes.settle)
            report.add("Memory", f"idle RSS, {resources} x {per} devices", rss_bytes(proc.pid),
                       "bytes")  # fmt: skip


async def _scale_one(report: Report, sizes: Sizes, devices: list[Device]) -> None:
    count = len(devices)
    name = f"{DOMAIN}/bench-big"
    with scratch_dir() as root:
        config = write_in_place(root / "etc", devices)
        async with (
            kubelet_standin(root / "dp") as kubelet,
            child(*supervisor_args(config, root / "dp")) as proc,
        ):
            await wait_registered(kubelet, [name], proc)
            assert len(kubelet.plugins[name].devices) == count
            report.add("Scale", f"process start -> first ListAndWatch, {count} devices",
                       _since(proc.started), "s")  # fmt: skip
            took = []
            for edit in range(sizes.scale_reloads + 1):  # the first warms up
                path = f"/dev/changed{edit}"
                wanted = device_id("bench", "big", path)
                start = time.perf_counter()
                write_in_place(root / "etc", [("bench", "big", path), *devices[1:]])
                await kubelet.wait_for(_has_device(name, wanted), WAIT)
                if edit:
                    took.append(_since(start))
                await asyncio.sleep(0.05)
            report.details["scale_reload_s"] = took
            report.add("Scale", f"reload of 1 changed device, {count} devices, p50",
                       percentile(took, 0.5), "s")  # fmt: skip
            report.add("Scale", f"reload of 1 changed device, {count} devices, max", max(took),
                       "s", 0.3, note=f"{len(took)} reloads")  # fmt: skip
            await asyncio.sleep(sizes.settle)
            report.add("Memory", f"idle RSS, 1 resource x {count} devices", rss_bytes(proc.pid),
                       "bytes")  # fmt: skip


# -- hostile reloads --------------------------------------------------------------------


def hostile_configs() -> list[bytes]:
    """Files a hostile writer may put down: a merge-key bomb (a minute of CPU to parse,
    81 aliases), a 5,000-digit integer, nesting too deep, and plain garbage."""
    bomb = ["a0: &a0 {k: v}"]
    for level in range(1, 10):
        bomb.append(f"a{level}: &a{level}\n  <<: [{', '.join([f'*a{level - 1}'] * 9)}]")
    return [
        ("\n".join(bomb) + "\ndevices: []\n").encode(),
        b"devices:\n- {type: a, model: b, device: /dev/c, numa: " + b"9" * 5000 + b"}\n",
        b"devices: " + b"[" * 100_000,
        bytes(range(256)) * 64,
    ]


async def hostile(report: Report, sizes: Sizes) -> None:
    """Allocate on one resource while the config is rewritten with hostile YAML every 100 ms."""
    devices = spread(1, 8)
    name = resource_names(devices)[0]
    request = pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=["bench-m0-bench0-0"])]
    )
    payloads = hostile_configs()
    with scratch_dir() as root:
        config = write_in_place(root / "etc", devices)
        plugin_dir = root / "dp"
        async with (
            kubelet_standin(plugin_dir) as kubelet,
            child(*supervisor_args(config, plugin_dir)) as proc,
        ):
            await wait_registered(kubelet, [name], proc)
            target = f"unix://{plugin_dir / kubelet.plugins[name].endpoint}"
            stop = asyncio.Event()

            async def rewrite() -> int:
                written = 0
                while not stop.is_set():
                    config.write_bytes(payloads[written % len(payloads)])
                    written += 1
                    await asyncio.sleep(0.1)  # the pace of the hostile writer
                return written

            async with grpc.aio.insecure_channel(target) as channel:
                stub = pb_grpc.DevicePluginStub(channel)
                quiet, _ = await _allocate_calls(stub, request, 1, 200)
                writer = asyncio.create_task(rewrite())
                latencies: list[float] = []
                deadline = time.perf_counter() + sizes.hostile_seconds
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    await stub.Allocate(request, timeout=5)
                    latencies.append(_since(started))
                stop.set()
                written = await writer
            proc.check_alive()
    report.details["hostile_allocate_s"] = latencies
    note = f"{len(latencies)} calls, {written} hostile writes"
    report.add("Hostile reload", "Allocate while idle, max", max(quiet), "s")
    report.add("Hostile reload", "Allocate during hostile rewrites, p99",
               percentile(latencies, 0.99), "s", note=note)  # fmt: skip
    report.add("Hostile reload", "Allocate during hostile rewrites, max", max(latencies), "s",
               0.05, note="every write rejected, the last good config serving")  # fmt: skip


# -- DRA ------------------------------------------------------------------------------------


async def dra(report: Report, sizes: Sizes) -> None:
    """ResourceSlices, reloads, prepare and idle cost in DRA mode: `bench.dra`."""
    await dra_scenarios.dra(report, sizes.dra)


# -- simulated fleets -------------------------------------------------------------------


async def simulate(report: Report, sizes: Sizes) -> None:
    """A simulated fleet's sync, reload, idle cost and rate limit: `bench.simulate`."""
    await simulate_scenarios.simulate(report, sizes.simulate)
