"""ListAndWatch size arithmetic, and configs whose device list kubelet could never receive."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker.api import HEALTHY, UNHEALTHY, Device
from plugin_worker.server import device_message
from plugin_worker.wire_size import (
    KUBELET_MAX_MESSAGE_BYTES,
    list_and_watch_size,
    list_and_watch_size_bound,
    varint_size,
)
from supervisor.cli import main

IDS = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300),
    st.from_regex(r"[a-z0-9-]{1,63}(::[0-9]{1,3})?", fullmatch=True),
)
DEVICES = st.builds(
    Device,
    id=IDS,
    path=st.just("/dev/x"),
    health=st.sampled_from([HEALTHY, UNHEALTHY, ""]),
    numa=st.one_of(st.none(), st.integers(0, 2**63 - 1), st.sampled_from([0, 127, 128, 1023])),
)


def real_size(devices: list[Device]) -> int:
    return pb.ListAndWatchResponse(devices=[device_message(d) for d in devices]).ByteSize()


@settings(max_examples=300, deadline=None)
@given(st.lists(DEVICES, max_size=40))
def test_the_arithmetic_is_the_encoded_size(devices: list[Device]) -> None:
    assert list_and_watch_size(devices) == real_size(devices)


@pytest.mark.parametrize("health", [HEALTHY, UNHEALTHY])
def test_a_replicated_resource_and_the_health_override(health: str) -> None:
    devices = [
        Device(id=f"snaffler-v1-wibble{i}::{r}", path=f"/dev/wibble{i}", numa=i % 3 or None)
        for i in range(50)
        for r in range(1, 101)
    ]
    worst = [Device(id=d.id, path=d.path, health=health, numa=d.numa) for d in devices]
    assert list_and_watch_size(devices, health=health) == real_size(worst)


def test_the_bound_is_never_below_the_size() -> None:
    longest = [Device(id="x" * 63, path="/x", health=UNHEALTHY, numa=2**62) for _ in range(10)]
    assert list_and_watch_size(longest) <= list_and_watch_size_bound(10, id_bytes=63)
    assert [varint_size(v) for v in (0, 127, 128, 2**14, -1)] == [1, 1, 2, 3, 10]


@pytest.mark.slow  # about 4 s: 200,000 device IDs built twice
def test_validate_refuses_a_list_kubelet_would_never_receive(tmp_path: Path) -> None:
    """2,000 devices x 100 replicas: 200,000 device IDs, about 9 MB."""
    config = tmp_path / "big.yml"
    devices = "".join(f"- {{type: snaffler, model: v1, device: /dev/w{i}}}\n" for i in range(2000))
    config.write_text(
        f"resources:\n- {{type: snaffler, model: v1, replicas: 100}}\ndevices:\n{devices}"
    )
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == 1, result.output
    size = list_and_watch_size(
        [Device(id=f"snaffler-v1-w{i}::{r}", path="", health=UNHEALTHY)
         for i in range(2000) for r in range(1, 101)]
    )  # fmt: skip
    assert size > KUBELET_MAX_MESSAGE_BYTES
    # The line comes from a second, slow parse; past the parse deadline (2 s, on a slow
    # machine) the problem is reported without it rather than not at all.
    message = (
        "devices[0].type/model: resource 'ska-sdp.org/snaffler-v1' has 200,000 "
        f"devices (replicas included): its ListAndWatch message would be {size:,} bytes, over the "
        "4,194,304 bytes (4 MiB) kubelet receives at most"
    )
    assert f"{config}:4: {message}" in result.output or f"{config}: {message}" in result.output
    smaller = config.read_text().replace("replicas: 100", "replicas: 40")
    config.write_text(smaller)  # 80,000 IDs, about 3.6 MB: fits
    result = CliRunner().invoke(main, ["validate", "--config", str(config)])
    assert result.exit_code == 0, result.output
