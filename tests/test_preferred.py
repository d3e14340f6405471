"""Preferred-allocation policies over NUMA topology."""

from __future__ import annotations

import pytest

from plugin_worker.preferred import choose

NUMA = {"a0": 0, "b1": 1, "c1": 1, "d1": 1, "e2": 2, "f2": 2, "x": None}
ALL = ["a0", "b1", "c1", "d1", "e2", "f2"]


@pytest.mark.parametrize(
    ("policy", "available", "must", "size", "expected"),
    [
        ("none", ALL, [], 2, ["a0", "b1"]),
        ("none", ALL, ["e2"], 2, ["e2", "a0"]),
        ("packed", ALL, [], 3, ["b1", "c1", "d1"]),
        ("packed", ALL, [], 2, ["b1", "c1"]),
        ("packed", ALL, ["e2"], 2, ["e2", "f2"]),
        ("packed", ALL, [], 5, ["b1", "c1", "d1", "e2", "f2"]),
        ("spread", ALL, [], 3, ["b1", "e2", "a0"]),
        ("spread", ALL, ["b1"], 3, ["b1", "e2", "a0"]),
        ("spread", ["x", "b1"], [], 2, ["x", "b1"]),
        ("packed", ALL, ["a0", "b1"], 2, ["a0", "b1"]),
    ],
    ids=["none", "none-must", "packed-one-node", "packed-fullest", "packed-with-must",
         "packed-two-nodes", "spread", "spread-with-must", "spread-no-numa", "must-fills"],
)  # fmt: skip
def test_policies(
    policy: str, available: list[str], must: list[str], size: int, expected: list[str]
) -> None:
    chosen = choose(policy, available, must, size, NUMA)
    assert chosen == expected
    assert len(chosen) == size
    assert set(must) <= set(chosen)


def test_packed_uses_the_fewest_nodes() -> None:
    chosen = choose("packed", ALL, [], 3, NUMA)
    assert len({NUMA[i] for i in chosen}) == 1
    spread = choose("spread", ALL, [], 3, NUMA)
    assert len({NUMA[i] for i in spread}) == 3
