"""The DRA scenarios (issue 10): ResourceSlices published, reloads, prepare, idle cost.

One node (`bench.dra_node`) with 1,000 devices of one resource (8 slices of <= 128) is
started, and then measured in this order: start -> every device in the API server's
slices; idle (requests per second to the API server, CPU, RSS); reloads of one added or
removed device; NodePrepareResources and NodeUnprepareResources of one-device claims,
sequential and 8 at a time. More processes are started only to time the start again
(and with 10,000 devices, in full mode). No target here was set by the issue: each is
proposed (`Row.proposed`), reported and judged, but fails no run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from apiserver_standin.server import RequestRecord
from bench.dra_node import (
    DRIVER,
    Claim,
    DraNode,
    PoolWatch,
    Served,
    slice_names,
    stand_ins,
    supervisor,
    write_rename,
)
from bench.harness import Device, cpu_seconds, percentile, rss_bytes, scratch_dir, spread
from bench.report import Report
from dra_driver.objects import MAX_DEVICES_PER_SLICE
from kubelet_standin.dra import DraPluginWatcher

WAIT = 60.0
MIB = 2**20
SECTION = "DRA"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
R = TypeVar("R", RequestRecord, Served)


@dataclass(frozen=True, slots=True)
class DraSizes:
    devices: int
    starts: int
    """Processes started with `devices` devices (the first one is measured further)."""
    large: int
    """Devices of one more start (0: none)."""
    reloads: int
    claims: int
    """Claims prepared (and unprepared) sequentially, and as many again 8 at a time."""
    idle_seconds: float
    settle: float


FULL = DraSizes(devices=1000, starts=3, large=10_000, reloads=30, claims=200,
                idle_seconds=30.0, settle=1.0)  # fmt: skip
QUICK = DraSizes(devices=1000, starts=1, large=0, reloads=5, claims=24,
                 idle_seconds=2.0, settle=0.2)  # fmt: skip


def _slice_writes(records: Sequence[R]) -> list[R]:
    return [r for r in records if r.method in WRITES and "/resourceslices" in r.path]


def _slices(devices: int) -> str:
    return f"{-(-devices // MAX_DEVICES_PER_SLICE)} slices"


async def dra(report: Report, sizes: DraSizes) -> None:
    devices = spread(1, sizes.devices)
    # The starts that are only timed come first, so that the table lists all of them
    # (reported with the first figures of the node measured further) in reading order.
    earlier = [await _start_only(devices) for _ in range(sizes.starts - 1)]
    large = await _start_only(spread(1, sizes.large)) if sizes.large else None
    await _node(report, sizes, devices, earlier)
    if large is not None:
        report.details["dra_start_large_s"] = large
        report.add(SECTION, f"process start -> {sizes.large} devices in ResourceSlices", large,
                   "s", 5.0, proposed=True, note=_slices(sizes.large))  # fmt: skip


async def _start_only(devices: Sequence[Device]) -> float:
    with scratch_dir() as root:
        write_rename(root / "etc", devices)
        async with stand_ins(root) as (api, kubelet):
            with PoolWatch(api) as watch:
                async with supervisor(root, api, kubelet) as node:
                    done = await watch.wait_for(slice_names(devices), node.proc, WAIT)
                    return done - node.proc.started


async def _node(
    report: Report, sizes: DraSizes, devices: Sequence[Device], earlier: list[float]
) -> None:
    """A start measured further: idle, reloads, prepare."""
    with scratch_dir() as root:
        write_rename(root / "etc", devices)
        async with stand_ins(root) as (api, kubelet):
            with PoolWatch(api) as watch:
                async with supervisor(root, api, kubelet) as node:
                    await _start(report, node, watch, devices, earlier)
                    await asyncio.sleep(sizes.settle)
                    await _idle(report, sizes, node)
                    await _reloads(report, sizes, node, watch, devices)
                    await _prepares(report, sizes, node, devices)
                    node.proc.check_alive()
                    report.add(SECTION, "RSS after the reloads and prepares",
                               rss_bytes(node.proc.pid), "bytes")  # fmt: skip


async def _start(
    report: Report,
    node: DraNode,
    watch: PoolWatch,
    devices: Sequence[Device],
    earlier: list[float],
) -> None:
    start = node.proc.started
    registered = asyncio.create_task(_registered(node.kubelet, start))
    try:
        starts = [*earlier, await watch.wait_for(slice_names(devices), node.proc, WAIT) - start]
        registration = await registered
    finally:
        registered.cancel()
    report.details["dra_start_s"] = starts
    report.details["dra_registration_notifications"] = node.kubelet.notifications
    report.details["dra_start_requests"] = [
        (r.method, r.path, round(r.time - start, 4), r.status) for r in node.api.requests
    ]
    label = f"process start -> {len(devices)} devices in ResourceSlices"
    if len(starts) > 1:
        report.add(SECTION, f"{label}, p50", percentile(starts, 0.5), "s")
    report.add(SECTION, f"{label}, max", max(starts), "s", 2.0, proposed=True,
               note=f"{len(starts)} starts, {_slices(len(devices))}")  # fmt: skip
    report.add(SECTION, "process start -> first request to the API server",
               node.api.requests[0].time - start, "s")  # fmt: skip
    report.add(SECTION, "process start -> DRA plugin registered at kubelet", registration, "s")


async def _registered(kubelet: DraPluginWatcher, start: float) -> float:
    await kubelet.wait_registered(DRIVER, timeout=WAIT)
    return time.perf_counter() - start


# -- idle ------------------------------------------------------------------------------


async def _idle(report: Report, sizes: DraSizes, node: DraNode) -> None:
    pid, seen = node.proc.pid, len(node.api.requests)
    cpu, start = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(sizes.idle_seconds)
    wall = time.perf_counter() - start
    used, sent = cpu_seconds(pid) - cpu, node.api.requests[seen:]
    report.details["dra_idle_requests"] = [(r.method, r.path, r.status) for r in sent]
    window = f"over {wall:.0f} s after sync"
    report.add(SECTION, f"requests to the API server at idle, {window}", len(sent) / wall, "/s",
               0.05, proposed=True, note=f"{len(sent)} requests")  # fmt: skip
    report.add(SECTION, f"idle CPU {window}", used / wall * 100, "%", 0.1, proposed=True,
               note=f"{used:.2f} s CPU")  # fmt: skip
    report.add(SECTION, f"idle RSS, {sizes.devices} DRA devices", rss_bytes(pid), "bytes",
               70 * MIB, proposed=True)  # fmt: skip


# -- reloads -----------------------------------------------------------------------------


async def _reloads(
    report: Report, sizes: DraSizes, node: DraNode, watch: PoolWatch, devices: Sequence[Device]
) -> None:
    took, first_write, writes, standin = [], [], [], []
    for edit in range(sizes.reloads + 2):  # the first two warm up
        # Add one device, then remove it again: every edit changes the pool by one.
        wanted = [*devices, ("bench", "m0", f"/dev/extra{edit}")] if edit % 2 == 0 else devices
        seen = len(node.api.requests)
        start = time.perf_counter()
        write_rename(node.config.parent, wanted)
        done = await watch.wait_for(slice_names(wanted), node.proc, WAIT)
        if edit >= 2:
            took.append(done - start)
            sent = _slice_writes(node.api.requests[seen:])
            first_write.append(sent[0].time - start)
            writes.append(len(sent))
            standin.append(sum(r.seconds for r in _slice_writes(node.served) if r.start >= start))
        await asyncio.sleep(0.05)  # edits are not back to back
    report.details["dra_reload_s"] = took
    report.details["dra_reload_first_write_s"] = first_write
    report.details["dra_reload_slice_writes"] = writes
    report.details["dra_reload_standin_s"] = standin
    label = f"reload (+/-1 of {len(devices)} devices): write -> slices updated"
    report.add(SECTION, f"{label}, p50", percentile(took, 0.5), "s")
    report.add(SECTION, f"{label}, p99", percentile(took, 0.99), "s", 0.3, proposed=True,
               note=f"{len(took)} reloads")  # fmt: skip
    report.add(SECTION, "reload: write -> first slice write arrives, p50",
               percentile(first_write, 0.5), "s",
               note=f"{percentile(writes, 0.5):g} slice writes per reload")  # fmt: skip
    report.add(SECTION, "reload: the API server stand-in answering those writes, p50",
               percentile(standin, 0.5), "s", note="in the bench process")  # fmt: skip


# -- prepare ---------------------------------------------------------------------------------


async def _prepares(
    report: Report, sizes: DraSizes, node: DraNode, devices: Sequence[Device]
) -> None:
    count = sizes.claims
    warm = node.seed_claims(devices[:8], "warm")
    await _calls(node, "prepare", warm, 8)
    await _calls(node, "unprepare", warm, 8)
    for concurrency, chosen in ((1, devices[8 : 8 + count]),
                                (8, devices[8 + count : 8 + 2 * count])):  # fmt: skip
        claims = node.seed_claims(chosen, f"c{concurrency}")
        cpu, seen = cpu_seconds(node.proc.pid), len(node.served)
        prepared, wall = await _calls(node, "prepare", claims, concurrency)
        cpu = cpu_seconds(node.proc.pid) - cpu
        reads = [r.seconds for r in node.served[seen:] if "/resourceclaims/" in r.path]
        unprepared, _ = await _calls(node, "unprepare", claims, concurrency)
        report.details[f"dra_prepare_c{concurrency}_s"] = prepared
        report.details[f"dra_unprepare_c{concurrency}_s"] = unprepared
        at = f"concurrency {concurrency}"
        limit = 0.02 if concurrency == 1 else 0.1
        for verb, took in (("NodePrepareResources", prepared),
                           ("NodeUnprepareResources", unprepared)):  # fmt: skip
            report.add(SECTION, f"{verb} p50, 1-device claim, {at}", percentile(took, 0.5), "s")
            report.add(SECTION, f"{verb} p99, 1-device claim, {at}", percentile(took, 0.99), "s",
                       limit if took is prepared else None, proposed=True,
                       note=f"{count} claims")  # fmt: skip
        report.add(SECTION, f"prepare: the API server stand-in answering the claim GET, p50, {at}",
                   percentile(reads, 0.5), "s")  # fmt: skip
        report.add(SECTION, f"prepares/s, {at}", count / wall, "/s")
        report.add(SECTION, f"supervisor CPU per prepare, {at}", cpu / count, "s")


async def _calls(
    node: DraNode, verb: str, claims: Sequence[Claim], concurrency: int
) -> tuple[list[float], float]:
    """Call `verb` for each claim (one claim a call) from `concurrency` callers: the
    latencies seen at the kubelet stand-in, and the wall time of all of them."""
    call = node.kubelet.prepare if verb == "prepare" else node.kubelet.unprepare
    pending = list(reversed(claims))
    latencies: list[float] = []

    async def caller() -> None:
        while pending:
            claim = pending.pop()
            start = time.perf_counter()
            response = await call(DRIVER, [claim])
            latencies.append(time.perf_counter() - start)
            error = response.claims[claim[2]].error
            if error:
                raise RuntimeError(f"{verb} of claim {claim[1]} failed: {error}")

    start = time.perf_counter()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start
