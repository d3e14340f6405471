"""The simulated fleet's pure parts: a node's counts, what a pod holds, the node view of a
config, and the selector option."""

from __future__ import annotations

import pytest

from fleet.pods import pod_requests
from fleet.status import node_resources
from supervisor.config import parse_config
from tests.test_cli import invoke

CONFIG = b"""\
devices:
- {type: a, model: b, device: /d1}
- {type: a, model: b, device: /d2, faults: {unhealthyAfter: 10s, recoverAfter: 5s}}
- {type: c, model: d, device: /d3}
resources:
- {type: c, model: d, api: dra}
- {type: a, model: b, replicas: 2}
nodes:
- {match: "big-*", devices: [{type: a, model: b, device: /d4}]}
"""


def test_counts_follow_faults_and_leave_dra_resources_to_slices() -> None:
    fleet = parse_config(CONFIG, source="c.yml", fleet=True).fleet
    assert fleet is not None
    specs = fleet.resources_for("small-1")
    early = node_resources(specs, 0)
    assert early.capacity == {"ska-sdp.org/a-b": "4"}, "replicas count; the DRA one is absent"
    assert early.allocatable == {"ska-sdp.org/a-b": "4"}
    assert early.next_change == 10
    during = node_resources(specs, 12)
    assert during.allocatable == {"ska-sdp.org/a-b": "2"}
    assert during.next_change == 15
    assert node_resources(specs, 20).allocatable == {"ska-sdp.org/a-b": "4"}
    assert node_resources(fleet.resources_for("big-7"), 0).capacity == {"ska-sdp.org/a-b": "6"}
    assert fleet.resources_for("big-8") is fleet.resources_for("big-7"), "built once per set"


def test_a_pod_holds_the_larger_of_its_containers_sum_and_its_largest_init() -> None:
    pod = {
        "spec": {
            "containers": [{"resources": {"limits": {"x.io/a": "2", "cpu": "1"}}},
                           {"resources": {"requests": {"x.io/a": "1"}}}],
            "initContainers": [{"resources": {"limits": {"x.io/a": "5", "x.io/b": "1"}}}],
        },
        "status": {"phase": "Running"},
    }  # fmt: skip
    assert pod_requests(pod) == {"x.io/a": 5, "x.io/b": 1}
    assert pod_requests({**pod, "status": {"phase": "Succeeded"}}) == {}


@pytest.mark.parametrize("selector", ["type", "!type=kwok", "=x"])
def test_a_bad_node_selector_is_a_usage_error(selector: str) -> None:
    code, output = invoke("simulate", "--config", "x.yml", "--node-selector", selector)
    assert code == 2
    assert "is not KEY=VALUE" in output
