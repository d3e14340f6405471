"""Plain-text views of what the kubelet stand-in sees, for the CLI."""

from __future__ import annotations

from kubelet_standin.kubelet import KubeletStandIn
from plugin_worker._proto import deviceplugin_pb2 as pb
from plugin_worker.api import HEALTHY


def resource_table(kubelet: KubeletStandIn) -> str:
    """One row per registered resource: capacity, health, allocation, endpoint."""
    header = ("RESOURCE", "CAPACITY", "HEALTHY", "ALLOCATED", "STATE", "ENDPOINT")
    rows = [header]
    for name in sorted(kubelet.plugins):
        plugin = kubelet.plugins[name]
        healthy = sum(1 for h in plugin.devices.values() if h == HEALTHY)
        state = "connected" if plugin.connected else "disconnected"
        rows.append(
            (name, str(len(plugin.devices)), str(healthy), str(len(plugin.allocated)), state,
             plugin.endpoint)
        )  # fmt: skip
    if len(rows) == 1:
        return "(no device plugin registered yet)"
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)  # fmt: skip


def allocation_text(resource: str, response: pb.ContainerAllocateResponse) -> str:
    lines = [f"allocated from {resource}:"]
    lines += [f"  env {key}={response.envs[key]}" for key in sorted(response.envs)]
    lines += [f"  device {d.host_path} -> {d.container_path} ({d.permissions})"
              for d in response.devices]  # fmt: skip
    return "\n".join(lines)
