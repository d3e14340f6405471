"""How much of each extended resource a pod holds on its node, as the scheduler counts it.

A pod's request is the larger of its app containers' sum and its largest init container
(extended resources cannot be overcommitted, so requests equal limits; a container that
sets only the limit requests as much). Pods that ended (Succeeded, Failed) hold nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENDED = frozenset(("Succeeded", "Failed"))


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    found = {}
    for name, quantity in asked.items():
        if "/" in name:  # an extended resource: a plain integer count
            try:
                found[name] = int(str(quantity))
            except ValueError:
                continue
    return found


def pod_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    """The extended resources `pod` holds (empty for an ended pod)."""
    if (pod.get("status") or {}).get("phase") in ENDED:
        return {}
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for container in spec.get("containers") or ():
        for name, count in _container_requests(container).items():
            total[name] = total.get(name, 0) + count
    for container in spec.get("initContainers") or ():
        for name, count in _container_requests(container).items():
            total[name] = max(total.get(name, 0), count)
    return total
