"""Preferred-allocation policies: which devices kubelet should pick, given NUMA topology.

`none` is kubelet's own choice made explicit (required devices, then in order);
`packed` uses as few NUMA nodes as possible; `spread` uses as many as possible.
Devices without a NUMA node count as one node of their own kind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

NO_NUMA = -1


def choose(
    policy: str,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    numa_of: Mapping[str, int | None],
) -> list[str]:
    """Pick `size` device IDs from `available`, always including `must_include`."""
    chosen = list(dict.fromkeys(must_include))
    rest = [i for i in dict.fromkeys(available) if i not in set(chosen)]
    wanted = size - len(chosen)
    if wanted <= 0:
        return chosen
    if policy == "none":
        return chosen + rest[:wanted]

    def node_of(device_id: str) -> int:
        node = numa_of.get(device_id)
        return NO_NUMA if node is None else node

    by_node: dict[int, list[str]] = defaultdict(list)
    for device_id in rest:
        by_node[node_of(device_id)].append(device_id)
    used = {node_of(i) for i in chosen}
    if policy == "packed":
        return chosen + _packed(by_node, used, wanted)
    return chosen + _spread(by_node, used, wanted)


def _packed(by_node: dict[int, list[str]], used: set[int], wanted: int) -> list[str]:
    # Nodes already in use first, then the fullest: greedily taking the largest
    # groups reaches `wanted` with the fewest nodes.
    order = sorted(by_node, key=lambda n: (n not in used, -len(by_node[n]), n))
    picked: list[str] = []
    for node in order:
        picked += by_node[node][: wanted - len(picked)]
        if len(picked) == wanted:
            break
    return picked


def _spread(by_node: dict[int, list[str]], used: set[int], wanted: int) -> list[str]:
    # Round-robin over nodes, unused nodes first, so the allocation covers the most.
    order = sorted(by_node, key=lambda n: (n in used, -len(by_node[n]), n))
    queues = {n: list(by_node[n]) for n in order}
    picked: list[str] = []
    while len(picked) < wanted and any(queues.values()):
        for node in order:
            if queues[node] and len(picked) < wanted:
                picked.append(queues[node].pop(0))
    return picked
