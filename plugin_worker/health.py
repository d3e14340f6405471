"""Effective device health: configured health, a failing resource, and scripted faults.

Pure functions of time, so that the inventory can compute the health now and the
exact moment of the next change, and sleep until then instead of polling.
"""

from __future__ import annotations

from plugin_worker.api import HEALTHY, UNHEALTHY, Device, Fault


def fault_health(fault: Fault, elapsed: float) -> tuple[str, float | None]:
    """Health `elapsed` seconds into `fault`'s timeline, and when it next changes."""
    start = fault.unhealthy_after
    if elapsed < start:
        return HEALTHY, start
    end = start + fault.recover_after if fault.recover_after is not None else None
    if end is not None and elapsed >= end:
        return HEALTHY, None
    if fault.flap_period:
        phase = int((elapsed - start) // fault.flap_period)
        health = UNHEALTHY if phase % 2 == 0 else HEALTHY
        following = start + (phase + 1) * fault.flap_period
        return health, following if end is None else min(following, end)
    return UNHEALTHY, end


def device_health(device: Device, elapsed: float, *, failing: bool) -> tuple[str, float | None]:
    """A device's health now and the elapsed time of its next change (None: never)."""
    if failing or device.health == UNHEALTHY:
        return UNHEALTHY, None
    if device.fault is None:
        return HEALTHY, None
    return fault_health(device.fault, elapsed)
