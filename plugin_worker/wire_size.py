"""How big a resource's ListAndWatch message is on the wire, computed without building it.

kubelet's gRPC client refuses any message over its default maximum receive size, 4 MiB: a
resource whose device list is bigger registers, and then kubelet never learns a device. The
supervisor refuses such a config up front; this module tells the size, from the protobuf
wire format of `deviceplugin.proto` (what `server.device_message` builds)::

    ListAndWatchResponse { repeated Device devices = 1; }
    Device       { string ID = 1; string health = 2; TopologyInfo topology = 3; }
    TopologyInfo { repeated NUMANode nodes = 1; }
    NUMANode     { int64 ID = 1; }

Each field is a one-byte tag (field numbers below 16), then, for strings and messages, a
varint length and the bytes. proto3 leaves out empty strings and zero integers, but a set
message field is always written, even when empty (``topology`` with NUMA node 0).
"""

from __future__ import annotations

from collections.abc import Iterable

from plugin_worker.api import Device

KUBELET_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""kubelet's gRPC default maximum receive message size (grpc-go's 4 MiB)."""


def varint_size(value: int) -> int:
    """Bytes of `value` as a protobuf varint (negative int64s take ten)."""
    if value < 0:
        return 10
    return max(1, (value.bit_length() + 6) // 7)


def _field(payload: int) -> int:
    """A length-delimited field: tag, length, payload."""
    return 1 + varint_size(payload) + payload


def _text(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode())


def device_size(device_id: str, health: str, numa: int | None) -> int:
    """Bytes of one encoded `Device` message (without its own tag and length)."""
    size = (_field(_text(device_id)) if device_id else 0) + (_field(_text(health)) if health else 0)
    if numa is not None:
        node = 1 + varint_size(numa) if numa else 0  # NUMANode{ID}
        size += _field(_field(node))  # topology = TopologyInfo{nodes: [node]}
    return size


def list_and_watch_size(devices: Iterable[Device], *, health: str | None = None) -> int:
    """Bytes of the ListAndWatchResponse listing `devices`.

    `health`, when given, replaces every device's own (e.g. the largest it can become).
    """
    return sum(
        _field(device_size(d.id, d.health if health is None else health, d.numa)) for d in devices
    )


def list_and_watch_size_bound(count: int, *, id_bytes: int) -> int:
    """At least the size of any list of `count` devices with IDs of at most `id_bytes` bytes,
    whatever their health and NUMA node: a cheap test that a list surely fits."""
    return count * _field(device_size("x" * id_bytes, "Unhealthy", -1))
