"""Names in DRA's API: a device's name in its ResourceSlice, and a DeviceClass's name.

A device name must be a DNS label (RFC 1123: lower case alphanumerics and '-', at most
63 characters), while our device IDs may hold upper case, '_' and '.'. The name depends on
the ID alone, so reordering or inserting devices never renames one: an ID that already
is a DNS label is its own name; any other ID is made one and given a digest of the ID,
so that IDs differing only in what was replaced (``GPU_0`` and ``gpu-0``) stay apart.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL_MAX = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NOT_IN_LABEL = re.compile(r"[^a-z0-9]+")
_DIGEST = 8


def is_dns_label(text: str) -> bool:
    return len(text) <= DNS_LABEL_MAX and _DNS_LABEL.fullmatch(text) is not None


def device_name(device_id: str) -> str:
    """The DNS label naming the device of `device_id` in a ResourceSlice."""
    if is_dns_label(device_id):
        return device_id
    digest = hashlib.sha256(device_id.encode()).hexdigest()[:_DIGEST]
    slug = _NOT_IN_LABEL.sub("-", device_id.lower()).strip("-")
    slug = slug[: DNS_LABEL_MAX - _DIGEST - 1].rstrip("-")
    return f"{slug}-{digest}" if slug else f"d-{digest}"


def device_class_name(type_: str, model: str, driver: str) -> str:
    """``snaffler``, ``v1``, ``ska-sdp.org`` -> ``snaffler-v1.ska-sdp.org``.

    A DeviceClass name is a DNS subdomain: type and model may hold '_', which becomes '-'.
    """
    return f"{type_}-{model}".replace("_", "-") + "." + driver
