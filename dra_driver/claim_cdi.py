"""The CDI spec of one prepared claim: what each of its containers receives.

A container given devices through DRA gets what device-plugin mode gives it: the
``WIDGET_VISIBLE_DEVICES``/``WIDGET_VISIBLE_DEVICE_IDS`` variables and the resource's own
twins, the resource's ``envs`` and ``mounts``, and device nodes for real device nodes
only. The edits come from the same `Inventory.allocate` that serves Allocate, so both
modes hand out the same environment. One CDI device per (request, resource) of the claim
carries the edits of all its devices, so that the variables list them together, as one
Allocate does; container annotations have no CDI counterpart and are not given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from plugin_worker.inventory import DEVICE_PERMISSIONS, ContainerAllocation

CDI_VERSION = "0.6.0"
CLAIM_CLASS = "claim"
"""The CDI kind of prepared claims is ``<driver>/claim``."""
FILE_PREFIX = "widget-claim-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def cdi_kind(driver: str) -> str:
    return f"{driver}/{CLAIM_CLASS}"


def spec_file_name(claim_uid: str) -> str:
    return FILE_PREFIX + _UNSAFE.sub("_", claim_uid) + ".json"


def cdi_device_name(claim_uid: str, group: int) -> str:
    return f"{claim_uid}-{group}"


def container_edits(allocation: ContainerAllocation) -> dict[str, Any]:
    edits: dict[str, Any] = {"env": [f"{k}={v}" for k, v in sorted(allocation.envs.items())]}
    if allocation.device_nodes:
        edits["deviceNodes"] = [
            {"path": path, "permissions": DEVICE_PERMISSIONS} for path in allocation.device_nodes
        ]
    if allocation.mounts:
        edits["mounts"] = [
            {
                "hostPath": m.host_path,
                "containerPath": m.container_path,
                "options": ["bind", "ro" if m.read_only else "rw"],
            }
            for m in allocation.mounts
        ]
    return edits


def claim_document(
    driver: str,
    *,
    claim_uid: str,
    claim: str,
    resources: Sequence[str],
    groups: Sequence[ContainerAllocation],
) -> dict[str, Any]:
    """The spec file's JSON; `groups[i]` is CDI device `cdi_device_name(claim_uid, i)`."""
    return {
        "cdiVersion": CDI_VERSION,
        "kind": cdi_kind(driver),
        "annotations": {
            "widget.ska-sdp.org/claim": claim,
            "widget.ska-sdp.org/resources": ",".join(sorted(set(resources))),
        },
        "devices": [
            {"name": cdi_device_name(claim_uid, i), "containerEdits": container_edits(g)}
            for i, g in enumerate(groups)
        ],
    }
