"""Scripted health faults are pure functions of time: health now, and the next change."""

from __future__ import annotations

import pytest

from plugin_worker.api import HEALTHY, UNHEALTHY, Device, Fault
from plugin_worker.health import device_health, fault_health

H, U = HEALTHY, UNHEALTHY


@pytest.mark.parametrize(
    ("fault", "elapsed", "expected"),
    [
        (Fault(unhealthy_after=30), 0, (H, 30)),
        (Fault(unhealthy_after=30), 30, (U, None)),
        (Fault(unhealthy_after=30, recover_after=60), 45, (U, 90)),
        (Fault(unhealthy_after=30, recover_after=60), 90, (H, None)),
        (Fault(recover_after=5), 0, (U, 5)),
        (Fault(flap_period=10), 0, (U, 10)),
        (Fault(flap_period=10), 10, (H, 20)),
        (Fault(flap_period=10), 25, (U, 30)),
        (Fault(unhealthy_after=5, flap_period=10), 16, (H, 25)),
        (Fault(flap_period=10, recover_after=25), 22, (U, 25)),
        (Fault(flap_period=10, recover_after=25), 25, (H, None)),
    ],
    ids=[
        "before", "after", "during", "recovered", "at-once", "flap-first", "flap-second",
        "flap-third", "flap-offset", "flap-cut", "flap-over",
    ],
)  # fmt: skip
def test_fault_timeline(fault: Fault, elapsed: float, expected: tuple[str, float | None]) -> None:
    assert fault_health(fault, elapsed) == expected


def test_static_health_and_failing_resource_win() -> None:
    flapping = Device("a", "/dev/a", fault=Fault(flap_period=1))
    assert device_health(flapping, 1.5, failing=False) == (H, 2)
    assert device_health(flapping, 1.5, failing=True) == (U, None)
    assert device_health(Device("b", "/dev/b", health=U), 0, failing=False) == (U, None)
    assert device_health(Device("c", "/dev/c"), 1e9, failing=False) == (H, None)
