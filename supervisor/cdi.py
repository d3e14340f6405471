"""CDI spec files for resources with ``cdi: true``, kept in step with the resources.

A container runtime with CDI support resolves the names Allocate returns
(``<domain>/<resource>=<device ID>``) against spec files in its CDI directories, so
one JSON file per resource is written there (atomically) and removed with it.
Only real device nodes become ``deviceNodes``: a runtime refuses a plain file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from plugin_worker.api import ResourceSpec
from plugin_worker.files import write_atomically
from plugin_worker.inventory import DEVICE_PERMISSIONS, is_device_node

logger = logging.getLogger(__name__)

CDI_VERSION = "0.6.0"
DEFAULT_CDI_DIR = "/var/run/cdi"
FILE_PREFIX = "widget-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def spec_file_name(kind: str) -> str:
    return FILE_PREFIX + _UNSAFE.sub("_", kind) + ".json"


def env_name(device_id: str) -> str:
    return "WIDGET_CDI_DEVICE_" + re.sub(r"[^A-Z0-9]", "_", device_id.upper())


def cdi_document(spec: ResourceSpec) -> dict[str, Any]:
    """The CDI spec (JSON) describing every device of a CDI-enabled resource."""
    assert spec.cdi_kind is not None
    devices = []
    for device in spec.devices:
        edits: dict[str, Any] = {"env": [f"{env_name(device.id)}={device.path}"]}
        if is_device_node(device.path):
            edits["deviceNodes"] = [{"path": device.path, "permissions": DEVICE_PERMISSIONS}]
        devices.append({"name": device.id, "containerEdits": edits})
    return {
        "cdiVersion": CDI_VERSION,
        "kind": spec.cdi_kind,
        "devices": devices,
        "containerEdits": {"env": [f"WIDGET_CDI_KIND={spec.cdi_kind}"]},
    }


class CdiWriter:
    """Writes, rewrites and removes the spec files in one CDI directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, spec: ResourceSpec) -> Path | None:
        """Write the resource's spec file; None (and nothing written) without CDI."""
        if spec.cdi_kind is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / spec_file_name(spec.cdi_kind)
        # Written then renamed, so a runtime never reads half a file.
        write_atomically(target, json.dumps(cdi_document(spec), indent=2) + "\n")
        logger.info("[%s] wrote CDI spec %s", spec.name, target)
        return target

    def remove(self, spec: ResourceSpec) -> None:
        if spec.cdi_kind is None:
            return
        target = self.directory / spec_file_name(spec.cdi_kind)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
            logger.info("[%s] removed CDI spec %s", spec.name, target)
