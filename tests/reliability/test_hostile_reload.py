"""A hostile config written while the supervisor serves: refused, counted, and harmless.

Parsing runs in a child process with a deadline, so during the reload of a file that
would take a minute to parse, Allocate on every resource keeps being answered at once
(the 50 ms figure is `python -m bench --only hostile`'s; here only that the event loop
never waited for the parse), the rejection is logged without a traceback and counted,
and the next good config is applied by a fresh parser child.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kubelet_standin import KubeletStandIn
from tests.reliability.conftest import STAY, V1, V2
from tests.reliability.test_fuzz import _HOSTILE
from tests.support import SupervisorProcess, eventually, sample, write_config

pytestmark = pytest.mark.slow


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o644)


async def allocate_until(kubelet: KubeletStandIn, done: asyncio.Event) -> list[float]:
    """Allocate from V2 back to back until `done`; the latency of each call."""
    latencies = []
    while not done.is_set():
        started = time.monotonic()
        await kubelet.allocate(V2, device_ids=["snaffler-v2-wibble3"])
        latencies.append(time.monotonic() - started)
    return latencies


def failures(supervisor: SupervisorProcess) -> float | None:
    return sample(supervisor.metrics(), "widget_config_reloads_total", result="failure")


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("merge-key-bomb", "took longer than 2 s to parse"),
        ("5000-digit-integer", "a number has too many digits"),
    ],
)
async def test_hostile_reload_is_refused_while_allocate_is_served(
    case: str, says: str, config: Path, plugin_dir: Path, kubelet: KubeletStandIn
) -> None:
    supervisor = await SupervisorProcess(config, plugin_dir).start()
    try:
        await kubelet.wait_registered([V1, V2])
        assert failures(supervisor) == 0
        done = asyncio.Event()
        caller = asyncio.create_task(allocate_until(kubelet, done))
        mark = len(supervisor.lines)
        write_bytes(config, _HOSTILE[case])
        line = await supervisor.wait_for_log("rejected config", after=mark, timeout=15)
        done.set()
        latencies = await caller
        await supervisor.wait_for_log(says, after=mark)
        assert "Traceback" not in supervisor.output
        await eventually(lambda: failures(supervisor) == 1, what="the failure counted")
        assert "still serving the last good config" in line
        # Allocate was answered throughout: never a wait for the parse (2 s for the bomb).
        assert latencies
        assert max(latencies) < 1.0, f"an Allocate waited {max(latencies):.2f} s"
        # A good config afterwards is parsed (by a new child, if the old one was killed).
        mark = len(supervisor.lines)
        write_config(config, STAY[:3])
        await supervisor.wait_for_log(r"reloaded .*: 1 updated", after=mark)
        await kubelet.wait_for(lambda k: len(k.plugins[V2].devices) == 1)
    finally:
        assert await supervisor.stop() == 0
