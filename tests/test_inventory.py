"""Allocation rules and change notification, without gRPC."""

from __future__ import annotations

import asyncio

import pytest

from plugin_worker.api import Device, ResourceSpec
from plugin_worker.inventory import AllocationError, Inventory, UnknownDeviceError, is_device_node
from tests.support import eventually


def make(*devices: tuple[str, str]) -> Inventory:
    return Inventory(
        ResourceSpec(
            name="ska-sdp.org/snaffler-v1",
            devices=tuple(Device(i, p) for i, p in devices),
            env_prefix="WIDGET_SNAFFLER_V1",
        )
    )


async def test_allocate_sets_global_and_resource_scoped_envs() -> None:
    inventory = make(("a", "/dev/wibble1"), ("b", "/dev/wibble2"))
    allocation = inventory.allocate(["b", "a"])
    assert allocation.envs == {
        "WIDGET_VISIBLE_DEVICE_IDS": "b,a",
        "WIDGET_VISIBLE_DEVICES": "/dev/wibble2,/dev/wibble1",
        "WIDGET_SNAFFLER_V1_VISIBLE_DEVICE_IDS": "b,a",
        "WIDGET_SNAFFLER_V1_VISIBLE_DEVICES": "/dev/wibble2,/dev/wibble1",
    }
    assert allocation.device_nodes == ()


async def test_only_real_device_nodes_become_device_specs() -> None:
    inventory = make(("null", "/dev/null"), ("file", "/etc/hostname"), ("gone", "/dev/nope"))
    assert inventory.allocate(["null", "file", "gone"]).device_nodes == ("/dev/null",)
    assert is_device_node("/dev/null")
    assert not is_device_node("/etc/hostname")
    assert not is_device_node("/dev/nope")
    assert not is_device_node("/dev/\0bad")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        (
            ["a", "zzz"],
            UnknownDeviceError,
            "unknown device ID(s) for ska-sdp.org/snaffler-v1: 'zzz'",
        ),
        ([], AllocationError, "lists no device IDs"),
        (["a", "a"], AllocationError, "repeats a device ID"),
        (
            [f"x{i}" for i in 100_000 * [0]][:1] + [f"u{i}" for i in range(100)],
            UnknownDeviceError,
            "and 96 more",
        ),
    ],
    ids=["unknown", "empty", "duplicate", "many-unknown"],
)
async def test_bad_requests_are_refused(
    ids: list[str], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        make(("a", "/dev/a")).allocate(ids)
    assert message in str(raised.value)
    assert len(str(raised.value)) < 1000


async def test_preferred_allocation_keeps_required_devices_first() -> None:
    inventory = make(*[(i, f"/dev/{i}") for i in "abcd"])
    assert inventory.preferred(["a", "b", "c", "d"], ["c"], 2) == ["c", "a"]
    assert inventory.preferred(["a", "b"], [], 5) == ["a", "b"]
    with pytest.raises(AllocationError, match="more than allocation_size"):
        inventory.preferred(["a", "b"], ["a", "b"], 1)
    with pytest.raises(UnknownDeviceError):
        inventory.preferred(["nope"], [], 1)


async def test_watchers_see_every_change_and_end_on_close() -> None:
    inventory = make(("a", "/dev/a"))
    seen: list[list[str]] = []

    async def watch() -> None:
        async for devices in inventory.watch():
            seen.append([d.id for d in devices])

    task = asyncio.create_task(watch())
    await eventually(lambda: seen == [["a"]], what="the first list")
    assert inventory.replace(ResourceSpec(inventory.spec.name, (Device("b", "/dev/b"),), "W"))
    await eventually(lambda: seen == [["a"], ["b"]], what="the replaced list")
    assert not inventory.replace(ResourceSpec(inventory.spec.name, (Device("b", "/dev/b"),), "W"))
    inventory.close()
    await asyncio.wait_for(task, 1)
    assert seen == [["a"], ["b"]]


async def test_replace_refuses_another_resource() -> None:
    with pytest.raises(ValueError, match="cannot take"):
        make().replace(ResourceSpec("other.org/x", (), "W"))
