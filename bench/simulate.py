"""The simulated-fleet scenarios (issue 11): initial sync, reload, idle cost, the rate limit.

A heterogeneous fleet (`bench.fleet_nodes`: plain, gpu, gpu-hbm and edge nodes, each kind
given other resources by the config's ``nodes:`` globs, plus unlabelled nodes that must be
left alone) is seeded into the API-server stand-in, and ``widget-supervisor simulate
--qps 500 --burst 500`` started against it; then measured in this order: start -> every
node's status carries its resources; idle (requests, CPU, RSS); a reload that changes
every node (atomic rename) -> every node updated. In full mode one more simulator syncs
with a limit that never binds (the ceiling: who runs out of CPU first). A last one, at
the default QPS (5), is watched only for a short window on a fresh stand-in, and its
full sync computed from the rate it keeps. The stand-in runs in this process: its share
of each figure is measured (its handler timed, and this process's CPU), so it can be told
from the simulator's.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from apiserver_standin.server import RequestRecord
from bench.fleet_nodes import Fleet, FleetWatch, node_names, simulator, stand_in, write_rename
from bench.harness import cpu_seconds, rss_bytes, scratch_dir
from bench.report import Report

WAIT = 120.0
RSS_LIMIT = 200_000_000
SECTION = "Simulate"
QPS, BURST = 500, 500
DEFAULT_QPS, DEFAULT_BURST = 5, 10
"""`widget-supervisor simulate`'s defaults (client-go's)."""


@dataclass(frozen=True, slots=True)
class SimSizes:
    nodes: int
    idle_seconds: float
    default_qps_seconds: float
    """How long the default-QPS simulator is watched writing (after its first write)."""
    settle: float
    ceiling: bool
    """Also sync once with no effective rate limit: how fast the simulator can go."""


FULL = SimSizes(nodes=5000, idle_seconds=20.0, default_qps_seconds=8.0, settle=1.0,
                ceiling=True)  # fmt: skip
QUICK = SimSizes(nodes=300, idle_seconds=1.5, default_qps_seconds=2.0, settle=0.2,
                 ceiling=False)  # fmt: skip
JITTER = 0.02
"""Seconds a write's arrival at the stand-in may lag the moment it took its token: a 1 s
window of the bucket is judged as a window of 1 s - JITTER of arrivals."""
WITHIN = f"arrivals within {1 - JITTER:g} s"
UNLIMITED = 1_000_000
"""--qps and --burst for the ceiling: far more than 5,000 nodes need."""


@dataclass(frozen=True, slots=True)
class Window:
    """What happened between two perf_counter times of one simulator's life."""

    start: float
    end: float
    requests: list[RequestRecord]
    writes: list[float]
    """Monotonic arrival times of the status writes (PATCH)."""
    standin: float
    """Seconds the stand-in spent in its request handler."""
    simulator_cpu: float
    bench_cpu: float
    """CPU of this process: the stand-in, its HTTP and JSON, and the bench's own watch."""

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Meter:
    """Cuts one simulator's life into windows of requests, handler time and CPU: the first
    from `at` (its start), when the simulator had used no CPU and this process `bench_cpu`."""

    def __init__(self, fleet: Fleet, *, at: float, bench_cpu: float) -> None:
        self.fleet = fleet
        self._at, self._requests, self._served = at, 0, 0
        self._cpu = 0.0, bench_cpu

    def _mark(self) -> None:
        self._at = time.perf_counter()
        self._requests = len(self.fleet.api.requests)
        self._served = len(self.fleet.served)
        self._cpu = cpu_seconds(self.fleet.proc.pid), cpu_seconds(os.getpid())

    def cut(self, end: float | None = None) -> Window:
        end = time.perf_counter() if end is None else end
        requests = self.fleet.api.requests[self._requests :]
        served = self.fleet.served[self._served :]
        simulator_cpu, bench_cpu = self._cpu
        window = Window(
            self._at, end, requests, sorted(r.time for r in requests if r.method == "PATCH"),
            sum(s.seconds for s in served),
            cpu_seconds(self.fleet.proc.pid) - simulator_cpu, cpu_seconds(os.getpid()) - bench_cpu,
        )  # fmt: skip
        self._mark()
        return window


def max_in_one_second(times: Sequence[float]) -> int:
    """The most of `times` (sorted) within any 1 s (less `JITTER`)."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > 1.0 - JITTER:
            first += 1
        most = max(most, last - first + 1)
    return most


def children_rss(pid: int) -> int:
    """RSS of `pid`'s children (the simulator's config parser), whichever thread forked them."""
    pids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                pids.update(int(p) for p in handle.read().split())
        except OSError:
            continue
    total = 0
    for child in pids:
        try:
            total += rss_bytes(child)
        except (OSError, RuntimeError):
            continue
    return total


async def simulate(report: Report, sizes: SimSizes) -> None:
    names = node_names(sizes.nodes)
    await _fleet(report, sizes, names)
    if sizes.ceiling:
        await _ceiling(report, names)
    await _default_qps(report, sizes, names)


async def _fleet(report: Report, sizes: SimSizes, names: Sequence[str]) -> None:
    with scratch_dir() as root:
        write_rename(root / "etc", 1)
        async with stand_in(names) as api:
            with FleetWatch(api, names) as watch:
                bench_cpu = cpu_seconds(os.getpid())
                async with simulator(root, api, "--qps", str(QPS), "--burst", str(BURST)) as fleet:
                    meter = Meter(fleet, at=fleet.proc.started, bench_cpu=bench_cpu)
                    sync = meter.cut(await watch.wait_all(fleet.proc, WAIT))
                    _report_sync(report, sync, len(names))
                    await asyncio.sleep(sizes.settle)
                    meter.cut()
                    await _idle(report, sizes, meter, len(names))
                    await _reload(report, watch, meter, len(names))
                    fleet.proc.check_alive()
                    report.add(SECTION, "simulator RSS after the reload", rss_bytes(fleet.proc.pid),
                               "bytes")  # fmt: skip
                if watch.wrong:
                    raise RuntimeError(f"unselected nodes were written: {sorted(watch.wrong)}")


def per_second(times: Sequence[float], start: float) -> list[int]:
    """How many of `times` fell in each second from `start`."""
    counts: list[int] = []
    for at in times:
        index = int(at - start)
        counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1
    return counts


def _rates(report: Report, what: str, window: Window, limit: float | None) -> None:
    seconds = window.seconds
    report.details[f"simulate_{what}_writes_per_s"] = per_second(window.writes, window.start)
    report.add(SECTION, f"{what}: requests/s to the API server", len(window.requests) / seconds,
               "/s", note=f"{len(window.requests)} requests in {seconds:.1f} s")  # fmt: skip
    report.add(SECTION, f"{what}: status writes/s", len(window.writes) / seconds, "/s",
               note=f"{len(window.writes)} writes")  # fmt: skip
    nodes = len({r.path for r in window.requests if r.method == "PATCH"})
    report.add(SECTION, f"{what}: status writes beyond one per node", len(window.writes) - nodes,
               "", note=f"{nodes} nodes written")  # fmt: skip
    if limit is not None:
        report.add(SECTION, f"{what}: most writes in any 1 s", max_in_one_second(window.writes),
                   "", limit, note=f"qps + burst = {limit:g}; {WITHIN}")  # fmt: skip


def _shares(report: Report, what: str, window: Window) -> None:
    """How much of `window` the stand-in and the simulator were busy."""
    seconds = window.seconds
    share = window.standin / seconds
    report.add(SECTION, f"{what}: the stand-in's request handler", window.standin, "s",
               note=f"{share:.0%} of the wall time; in the bench process")  # fmt: skip
    report.add(SECTION, f"{what}: bench process CPU (stand-in, HTTP, JSON)",
               window.bench_cpu / seconds * 100, "%",
               note=f"{window.bench_cpu:.2f} s; 100 % = one core")  # fmt: skip
    report.add(SECTION, f"{what}: simulator CPU", window.simulator_cpu / seconds * 100, "%",
               note=f"{window.simulator_cpu:.2f} s; 100 % = one core")  # fmt: skip


def _report_sync(report: Report, sync: Window, nodes: int) -> None:
    first = sync.requests[0].time - sync.start if sync.requests else float("nan")
    first_write = sync.writes[0] - sync.start if sync.writes else float("nan")
    report.details["simulate_sync_requests"] = [
        (r.method, r.path, round(r.time - sync.start, 4), r.status) for r in sync.requests[:50]
    ]
    report.details["simulate_sync_s"] = sync.seconds
    report.add(SECTION, f"process start -> {nodes} nodes carry their resources, qps {QPS}",
               sync.seconds, "s", 30.0, note=f"burst {BURST}")  # fmt: skip
    report.add(SECTION, "process start -> first request to the API server", first, "s",
               note=f"first status write at {first_write * 1000:.0f} ms")  # fmt: skip
    report.add(SECTION, f"sync: first write -> last write ({nodes} nodes)",
               sync.writes[-1] - sync.writes[0], "s",
               note=f"rate limit alone: {max(0, nodes - BURST) / QPS:.1f} s")  # fmt: skip
    _rates(report, "sync", sync, QPS + BURST)
    _shares(report, "sync", sync)


async def _idle(report: Report, sizes: SimSizes, meter: Meter, nodes: int) -> None:
    await asyncio.sleep(sizes.idle_seconds)
    idle = meter.cut()
    pid = meter.fleet.proc.pid
    report.details["simulate_idle_requests"] = [(r.method, r.path) for r in idle.requests]
    label = f"idle, {idle.seconds:.1f} s after sync"
    report.add(SECTION, f"{label}: requests/s to the API server", len(idle.requests) / idle.seconds,
               "/s", note=f"{len(idle.requests)} requests")  # fmt: skip
    report.add(SECTION, f"{label}: simulator CPU", idle.simulator_cpu / idle.seconds * 100, "%",
               0.1, note=f"{idle.simulator_cpu:.2f} s CPU")  # fmt: skip
    report.add(SECTION, f"simulator RSS at idle, {nodes} nodes", rss_bytes(pid), "bytes",
               RSS_LIMIT, note="target 200 MB")  # fmt: skip
    report.add(SECTION, "its config parser child's RSS", children_rss(pid), "bytes")


async def _reload(report: Report, watch: FleetWatch, meter: Meter, nodes: int) -> None:
    watch.expect(2)
    meter.cut()
    write_rename(meter.fleet.root / "etc", 2)
    reload = meter.cut(await watch.wait_all(meter.fleet.proc, WAIT))
    report.details["simulate_reload_s"] = reload.seconds
    first = reload.writes[0] - reload.start if reload.writes else float("nan")
    report.add(SECTION, f"reload (every node changed): write -> {nodes} nodes updated",
               reload.seconds, "s", 30.0, note=f"qps {QPS}, burst {BURST}")  # fmt: skip
    report.add(SECTION, "reload: write -> first status write", first, "s")
    _rates(report, "reload", reload, QPS + BURST)
    _shares(report, "reload", reload)


async def _ceiling(report: Report, names: Sequence[str]) -> None:
    """A sync with a rate limit that never binds: which side runs out of CPU first."""
    with scratch_dir() as root:
        write_rename(root / "etc", 1)
        async with stand_in(names) as api:
            with FleetWatch(api, names) as watch:
                bench_cpu = cpu_seconds(os.getpid())
                limit = str(UNLIMITED)
                async with simulator(root, api, "--qps", limit, "--burst", limit) as fleet:
                    meter = Meter(fleet, at=fleet.proc.started, bench_cpu=bench_cpu)
                    sync = meter.cut(await watch.wait_all(fleet.proc, WAIT))
    report.details["simulate_ceiling_writes_per_s"] = per_second(sync.writes, sync.start)
    spread = sync.writes[-1] - sync.writes[0]
    report.add(SECTION, f"no rate limit: process start -> {len(names)} nodes carry their resources",
               sync.seconds, "s", note=f"{len(sync.writes) / spread:,.0f} writes/s")  # fmt: skip
    _shares(report, "no rate limit, sync", sync)


async def _default_qps(report: Report, sizes: SimSizes, names: Sequence[str]) -> None:
    """The default rate limit, watched for a short window; the full sync is computed."""
    with scratch_dir() as root:
        write_rename(root / "etc", 1)
        async with stand_in(names) as api, simulator(root, api) as fleet:
            async with asyncio.timeout(WAIT):
                while not any(r.method == "PATCH" for r in api.requests):
                    fleet.proc.check_alive()
                    await asyncio.sleep(0.05)
            await asyncio.sleep(sizes.default_qps_seconds)
            fleet.proc.check_alive()
            writes = sorted(r.time for r in api.requests if r.method == "PATCH")
            first = writes[0] - fleet.proc.started
    # After the burst, one write per token: the rate it keeps is measured past the burst.
    after = writes[DEFAULT_BURST:]
    rate = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else float("nan")
    computed = first + (len(names) - DEFAULT_BURST) / rate
    label = f"default qps {DEFAULT_QPS}, burst {DEFAULT_BURST}"
    report.details["simulate_default_qps_writes"] = [round(w - writes[0], 4) for w in writes]
    report.add(SECTION, f"{label}: status writes/s kept past the burst", rate, "/s",
               note=f"{len(writes)} writes in {writes[-1] - writes[0]:.1f} s")  # fmt: skip
    report.add(SECTION, f"{label}: most writes in any 1 s", max_in_one_second(writes), "",
               DEFAULT_QPS + DEFAULT_BURST, note=f"qps + burst; {WITHIN}")  # fmt: skip
    rest = len(names) - DEFAULT_BURST
    report.add(SECTION, f"{label}: process start -> {len(names)} nodes (computed)", computed, "s",
               note=f"first write {first:.2f} s + {rest} at the measured rate; "
               f"nodes/qps = {len(names) / DEFAULT_QPS:.0f} s")  # fmt: skip
