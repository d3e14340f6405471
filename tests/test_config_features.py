"""The config's per-resource settings, device options and per-node entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_worker.api import UNHEALTHY, AllocateFaults, Fault, Mount
from supervisor.config import Config, load_config, parse_config
from supervisor.errors import ConfigError
from supervisor.resources import replica_id


def parse(text: str, node: str | None = None) -> Config:
    return parse_config(text.encode(), source="c.yml", node_name=node)


def problems_of(text: str, node: str | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        parse(text, node)
    return str(error.value)


DEVICE = "devices:\n- {type: a, model: b, device: /dev/x}\n"


def test_every_setting_reaches_the_spec() -> None:
    config = parse(
        "resources:\n"
        "- type: a\n  model: b\n  preferredAllocation: packed\n  failing: true\n"
        "  envs: {MODE: fast}\n  annotations: {example.com/mock: 'yes'}\n  cdi: true\n"
        "  mounts: [{hostPath: /opt, containerPath: /mnt/opt, readOnly: false}]\n"
        "  allocate: {delay: 1m30s, failureRate: 0.25, seed: 3}\n"
        "devices:\n- {type: a, model: b, device: /dev/x, numa: 1, health: Unhealthy,"
        " faults: {unhealthyAfter: 250ms, flapPeriod: 2s}}\n"
    )
    (spec,) = config.resources
    assert spec.preferred_policy == "packed"
    assert spec.failing
    assert spec.envs == (("MODE", "fast"),)
    assert spec.annotations == (("example.com/mock", "yes"),)
    assert spec.cdi_kind == "ska-sdp.org/a-b"
    assert spec.mounts == (Mount("/mnt/opt", "/opt", read_only=False),)
    assert spec.allocate_faults == AllocateFaults(delay=90.0, failure_rate=0.25, seed=3)
    (device,) = spec.devices
    assert (device.numa, device.health) == (1, UNHEALTHY)
    assert device.fault == Fault(unhealthy_after=0.25, flap_period=2.0)


def test_replicas_and_rename() -> None:
    config = parse("resources:\n- {type: a, model: b, replicas: 3, renameShared: true}\n" + DEVICE)
    (spec,) = config.resources
    assert spec.name == "ska-sdp.org/a-b.shared"
    assert [d.id for d in spec.devices] == ["a-b-x::1", "a-b-x::2", "a-b-x::3"]
    assert {d.replica_of for d in spec.devices} == {"a-b-x"}
    assert parse("resources:\n- {type: a, model: b, replicas: 3}\n" + DEVICE).resources[0].name == (
        "ska-sdp.org/a-b"
    )


def test_replica_ids_stay_within_63_characters() -> None:
    long = "x" * 63
    assert len(replica_id(long, 100)) == 63
    assert replica_id(long, 1) != replica_id(long, 2)


BAD = [
    ("replicas-zero", "resources:\n- {type: a, model: b, replicas: 0}\n" + DEVICE,
     "c.yml:2: resources[0].replicas: must be a whole number from 1 to 100, not a number (0)"),
    ("replicas-huge", "resources:\n- {type: a, model: b, replicas: 1000}\n" + DEVICE, "from 1 to 100"),
    ("policy", "resources:\n- {type: a, model: b, preferredAllocation: tight}\n" + DEVICE,
     "resources[0].preferredAllocation: must be one of none, packed, spread"),
    ("no-such-resource", "resources:\n- {type: z, model: b}\n" + DEVICE,
     "c.yml:2: resources[0]: no device has type 'z' and model 'b'"),
    ("twice", "resources:\n- {type: a, model: b}\n- {type: a, model: b}\n" + DEVICE,
     "c.yml:3: resources[1]: type 'a' with model 'b' is configured twice"),
    ("env-name", "resources:\n- {type: a, model: b, envs: {1BAD: x}}\n" + DEVICE,
     "resources[0].envs.1BAD: is not a valid environment variable name"),
    ("env-reserved", "resources:\n- {type: a, model: b, envs: {WIDGET_VISIBLE_DEVICES: x}}\n" + DEVICE,
     "is set by the plugin itself"),
    ("env-value", "resources:\n- {type: a, model: b, envs: {A: 1}}\n" + DEVICE,
     "resources[0].envs.A: value must be a string, not a number (1)"),
    ("annotation-key", "resources:\n- {type: a, model: b, annotations: {'bad key': x}}\n" + DEVICE,
     "is not a valid annotation key"),
    ("mount-relative", "resources:\n- {type: a, model: b, mounts: [{hostPath: opt, containerPath: /x}]}\n" + DEVICE,
     "resources[0].mounts[0].hostPath: must be an absolute path"),
    ("mount-missing", "resources:\n- {type: a, model: b, mounts: [{hostPath: /opt}]}\n" + DEVICE,
     "resources[0].mounts[0].containerPath: required field is missing"),
    ("failure-rate", "resources:\n- {type: a, model: b, allocate: {failureRate: 2}}\n" + DEVICE,
     "resources[0].allocate.failureRate: must be a number from 0 to 1, not a number (2)"),
    ("delay", "resources:\n- {type: a, model: b, allocate: {delay: soon}}\n" + DEVICE,
     "resources[0].allocate.delay: must be a duration such as 250ms"),
    ("delay-long", "resources:\n- {type: a, model: b, allocate: {delay: 1h}}\n" + DEVICE, "at most 300s"),
    ("cdi-bool", "resources:\n- {type: a, model: b, cdi: yes please}\n" + DEVICE,
     "resources[0].cdi: must be true or false"),
    ("health", "devices:\n- {type: a, model: b, device: /dev/x, health: Sick}\n",
     "c.yml:2: devices[0].health: must be Healthy or Unhealthy, not a string ('Sick')"),
    ("numa", "devices:\n- {type: a, model: b, device: /dev/x, numa: -1}\n",
     "devices[0].numa: must be a whole number from 0 to 1023"),
    ("fault-empty", "devices:\n- {type: a, model: b, device: /dev/x, faults: {}}\n",
     "devices[0].faults: must set at least one of"),
    ("fault-key", "devices:\n- {type: a, model: b, device: /dev/x, faults: {after: 1s}}\n",
     "devices[0].faults.after: unknown key"),
    ("flap-zero", "devices:\n- {type: a, model: b, device: /dev/x, faults: {flapPeriod: 0s}}\n",
     "devices[0].faults.flapPeriod: must be longer than 0s"),
    ("node-match", "nodes:\n- {devices: []}\n" + DEVICE, "c.yml:2: nodes[0].match: required field is missing"),
    ("node-mode", "nodes:\n- {match: '*', mode: merge}\n" + DEVICE, "nodes[0].mode: must be add or replace"),
    ("node-device", "nodes:\n- match: other\n  devices:\n  - {type: a, model: b}\n" + DEVICE,
     "c.yml:4: nodes[0].devices[0].device: required field is missing"),
    ("node-duplicate-path", "nodes:\n- match: n1\n  devices:\n  - {type: a, model: b, device: /dev/x}\n" + DEVICE,
     "c.yml:4: nodes[0].devices[0].device: '/dev/x' is already listed at devices[0] (line 6)"),
    # Rules within one `nodes` entry hold on every node, not only where the entry applies.
    ("other-node-duplicate-path", "nodes:\n- match: other\n  devices:\n  - {type: g, model: c, device: /dev/g}\n"
     "  - {type: g, model: c, device: /dev/g}\n" + DEVICE,
     "c.yml:5: nodes[0].devices[1].device: '/dev/g' is already listed at nodes[0].devices[0] (line 4)"),
    ("other-node-long-name", f"nodes:\n- match: other\n  devices:\n  - {{type: {'t' * 40}, model: {'m' * 30}, device: /dev/g}}\n" + DEVICE,
     f"c.yml:4: nodes[0].devices[0].type/model: resource 'ska-sdp.org/{'t' * 40}-{'m' * 30}': the name after the domain"),
    ("shared-name-too-long", f"resources:\n- {{type: {'t' * 30}, model: {'m' * 30}, replicas: 2, renameShared: true}}\n"
     f"devices:\n- {{type: {'t' * 30}, model: {'m' * 30}, device: /dev/x}}\n",
     f"resource 'ska-sdp.org/{'t' * 30}-{'m' * 30}.shared': the name after the domain, '{'t' * 30}-{'m' * 30}.shared', has 68 characters"),
    ("duplicate-id-with-replicas", "resources:\n- {type: a, model: b, replicas: 2}\n"
     "devices:\n- {type: a, model: b, device: /dev/x, id: same}\n- {type: a, model: b, device: /dev/y, id: same}\n",
     "c.yml:5: devices[1].id: device ID 'same' is used twice in resource 'ska-sdp.org/a-b'"),
    ("explicit-id-like-a-derived-one", "devices:\n- {type: a, model: b, device: /dev/x}\n- {type: a, model: b, device: /dev/y, id: a-b-x}\n",
     "c.yml:3: devices[1].id: device ID 'a-b-x' is used twice in resource 'ska-sdp.org/a-b'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_settings_are_reported_precisely(text: str, expected: str) -> None:
    assert expected in problems_of(text, node="n1")


PER_NODE = (
    "devices:\n- {type: a, model: b, device: /dev/x}\n"
    "nodes:\n"
    "- match: gpu-*\n  devices:\n  - {type: g, model: c, device: /dev/g0}\n"
    "  resources:\n  - {type: g, model: c, replicas: 2}\n"
    "- match: edge-*\n  mode: replace\n  devices:\n  - {type: e, model: d, device: /dev/e0}\n"
    "- match: '*-2'\n  devices:\n  - {type: a, model: b, device: /dev/y}\n"
)


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (None, {"ska-sdp.org/a-b": 1}),
        ("cpu-1", {"ska-sdp.org/a-b": 1}),
        ("gpu-1", {"ska-sdp.org/a-b": 1, "ska-sdp.org/g-c": 2}),
        ("gpu-2", {"ska-sdp.org/a-b": 2, "ska-sdp.org/g-c": 2}),
        ("edge-1", {"ska-sdp.org/e-d": 1}),
        ("edge-2", {"ska-sdp.org/e-d": 1, "ska-sdp.org/a-b": 1}),
    ],
)
def test_nodes_entries_add_or_replace(node: str | None, expected: dict[str, int]) -> None:
    config = parse(PER_NODE, node)
    assert {s.name: len(s.devices) for s in config.resources} == expected


def test_settings_for_a_type_this_node_drops_are_fine() -> None:
    text = (
        "resources:\n- {type: a, model: b, replicas: 2}\n"
        + DEVICE
        + "nodes:\n- match: edge-*\n  mode: replace\n  devices:\n  - {type: e, model: d, device: /dev/e}\n"
    )
    assert [s.name for s in parse(text, "edge-1").resources] == ["ska-sdp.org/e-d"]
    assert len(parse(text, "cpu-1").resources[0].devices) == 2
    node_only = "nodes:\n- match: gpu-*\n  devices:\n  - {type: g, model: c, device: /dev/g}\n"
    text = "resources:\n- {type: g, model: c, replicas: 2}\ndevices: []\n" + node_only
    assert parse(text, "cpu-1").resources == ()
    assert len(parse(text, "gpu-1").resources[0].devices) == 2


def test_a_node_entry_wrong_for_another_node_is_rejected_everywhere() -> None:
    text = PER_NODE + "- match: other\n  devices:\n  - {type: a, model: b, device: rel}\n"
    assert "nodes[3].devices[0].device: must be an absolute path" in problems_of(text, "gpu-1")


def test_per_node_example(examples: Path) -> None:
    gpu = load_config(examples / "per-node.yml", node_name="gpu-node-1")
    assert [s.name for s in gpu.resources] == ["ska-sdp.org/gizmo-mk2", "ska-sdp.org/snaffler-v1"]
    assert gpu.resources[0].preferred_policy == "packed"
    edge = load_config(examples / "per-node.yml", node_name="edge-7")
    assert [s.name for s in edge.resources] == ["ska-sdp.org/doohickey-a100"]
