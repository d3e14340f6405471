"""DRA in the config: which API serves each resource, attributes and capacity, the names
DRA gives devices and classes, and the documents `dra_driver.objects` makes of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dra_driver.names import device_name, is_dns_label
from dra_driver.objects import (
    MAX_DEVICES_PER_SLICE,
    chunks,
    device_class,
    physical_devices,
    slice_device,
)
from plugin_worker.api import DEVICE_PLUGIN, DRA, ResourceSpec, Version
from supervisor.config import Config, parse_config
from supervisor.errors import ConfigError
from tests.test_cli import invoke


def load(text: str, node: str | None = None) -> Config:
    return parse_config(text.encode(), source="c.yml", node_name=node)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [str(p) for p in caught.value.problems]


def by_name(config: Config) -> dict[str, ResourceSpec]:
    return {spec.name: spec for spec in config.resources}


MIXED = """\
api: dra
devices:
- {type: snaffler, model: v1, device: /dev/w1, numa: 1,
   attributes: {cores: 128, fast: true, fw: {version: 1.2.3}, example.com/x: y},
   capacity: {memory: 40Gi}}
- {type: snaffler, model: v1, device: /dev/w2}
- {type: gizmo, model: mk2, device: /dev/g0, id: GPU_0}
resources:
- {type: gizmo, model: mk2, api: device-plugin}
- {type: snaffler, model: v1, replicas: 4, attributes: {cores: 64, family: ampere}}
nodes:
- match: edge-*
  resources:
  - {type: snaffler, model: v1}
  - {type: gizmo, model: mk2, api: dra}
"""


def test_top_level_api_and_per_resource_choice() -> None:
    specs = by_name(load(MIXED))
    assert specs["ska-sdp.org/snaffler-v1"].api == DRA
    assert specs["ska-sdp.org/gizmo-mk2"].api == DEVICE_PLUGIN
    # A nodes entry's settings replace the top level's for its nodes, api included.
    edge = by_name(load(MIXED, node="edge-7"))
    assert {s.api for s in edge.values()} == {DRA}
    assert load("devices: [{type: a, model: b, device: /x}]").resources[0].api == DEVICE_PLUGIN


def test_attributes_and_capacity_reach_the_slice_device() -> None:
    spec = by_name(load(MIXED))["ska-sdp.org/snaffler-v1"]
    assert spec.replicas == 4
    assert len(spec.devices) == 8
    first, second = physical_devices(spec)
    assert first.name == "snaffler-v1-w1"
    assert len(first.replica_ids) == 4
    assert dict(first.device.attributes)["fw"] == Version("1.2.3")
    entry = slice_device(spec, first)
    assert entry["attributes"] == {
        "cores": {"int": 128},  # the device's own value wins over the resource's
        "example.com/x": {"string": "y"},
        "family": {"string": "ampere"},
        "fast": {"bool": True},
        "fw": {"version": "1.2.3"},
        "model": {"string": "v1"},
        "numa": {"int": 1},
        "path": {"string": "/dev/w1"},
        "type": {"string": "snaffler"},
    }
    assert entry["allowMultipleAllocations"] is True
    assert entry["capacity"]["memory"] == {"value": "40Gi"}
    assert entry["capacity"]["shares"]["value"] == "4"
    assert entry["capacity"]["shares"]["requestPolicy"]["default"] == "1"
    plain = slice_device(spec, second)
    assert "numa" not in plain["attributes"]
    assert plain["attributes"]["cores"] == {"int": 64}


@pytest.mark.parametrize(
    ("ident", "expected"),
    [("snaffler-v1-w1", "snaffler-v1-w1"), ("GPU_0", None), ("a.b", None), ("x" * 63, "x" * 63)],
)
def test_device_names_are_dns_labels_from_the_id_alone(ident: str, expected: str | None) -> None:
    name = device_name(ident)
    assert is_dns_label(name)
    if expected is not None:
        assert name == expected
    else:  # changed: a digest of the ID keeps GPU_0 apart from gpu-0
        assert name != device_name(ident.lower().replace("_", "-").replace(".", "-"))


def test_device_names_do_not_move_when_devices_are_reordered_or_inserted() -> None:
    one = "devices:\n- {type: a, model: b, device: /d1}\n- {type: a, model: b, device: /d2}\n"
    two = "devices:\n- {type: a, model: b, device: /d0}\n- {type: a, model: b, device: /d2}\n" \
          "- {type: a, model: b, device: /d1}\napi: dra\n"  # fmt: skip
    before = {p.id: p.name for p in physical_devices(load(one + "api: dra\n").resources[0])}
    after = {p.id: p.name for p in physical_devices(load(two).resources[0])}
    assert all(after[ident] == name for ident, name in before.items())


def test_slices_hold_at_most_128_devices_in_order() -> None:
    devices = [{"name": f"d{i:04d}"} for i in range(300)]
    split = chunks(devices)
    assert [len(c) for c in split] == [MAX_DEVICES_PER_SLICE, MAX_DEVICES_PER_SLICE, 44]
    assert [d for c in split for d in c] == devices


def test_device_class_selects_the_resource_by_cel() -> None:
    spec = by_name(load(MIXED))["ska-sdp.org/snaffler-v1"]
    document = device_class(spec, "ska-sdp.org")
    assert document["metadata"]["name"] == "snaffler-v1.ska-sdp.org"
    assert document["spec"]["extendedResourceName"] == "ska-sdp.org/snaffler-v1"
    expression = document["spec"]["selectors"][0]["cel"]["expression"]
    assert 'device.driver == "ska-sdp.org"' in expression
    assert 'device.attributes["ska-sdp.org"].type == "snaffler"' in expression


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("api: grpc\ndevices: []\n", "c.yml:1: api: must be device-plugin or dra, not a string"),
        ("dra: {driver: Foo}\ndevices: []\n", "c.yml:1: dra.driver: must be a DNS subdomain"),
        ("devices: [{type: a, model: b, device: /x, attributes: {type: z}}]\n",
         "c.yml:1: devices[0].attributes.type: is set by the plugin itself"),
        ("devices: [{type: a, model: b, device: /x, attributes: {9a: 1}}]\n",
         "c.yml:1: devices[0].attributes.9a: is not a valid DRA attribute name"),
        ("devices: [{type: a, model: b, device: /x, attributes: {s: [1]}}]\n",
         "c.yml:1: devices[0].attributes.s: must be a string of at most 64 characters"),
        ("devices: [{type: a, model: b, device: /x, attributes: {v: {version: '1.2'}}}]\n",
         "c.yml:1: devices[0].attributes.v: must be a string of at most 64 characters"),
        ("devices: [{type: a, model: b, device: /x, capacity: {memory: -1Gi}}]\n",
         "c.yml:1: devices[0].capacity.memory: must be a Kubernetes quantity"),
        ("devices: [{type: a, model: b, device: /x, capacity: {shares: 2}}]\n",
         "c.yml:1: devices[0].capacity.shares: is set by the plugin itself"),
        ("api: dra\ndevices:\n- {type: a, model: b, device: /x, id: GPU-0}\n"
         "- {type: a, model: c, device: /y, id: GPU-0}\n",
         "c.yml:4: devices[1].id: DRA device name 'gpu-0-742563b1' (from ID 'GPU-0') is also"),
        ("api: dra\ndevices:\n- {type: a_b, model: c, device: /x}\n"
         "- {type: a-b, model: c, device: /y}\n",
         "c.yml:4: devices[1].type/model: resource 'ska-sdp.org/a-b-c' would have the "
         "DeviceClass 'a-b-c.ska-sdp.org' of 'ska-sdp.org/a_b-c'"),
        ("api: dra\ndevices:\n- type: a\n  model: b\n  device: /x\n  attributes: {"
         + ", ".join(f"a{i}: 1" for i in range(30)) + "}\n",
         "c.yml:6: devices[0].attributes: device 'a-b-x' would have 33 DRA attributes"),
        ("api: dra\ndomain: " + "a" * 64 + "\ndevices: [{type: a, model: b, device: /x}]\n",
         "c.yml: dra.driver: (default: the domain"),
        ("dra: {}\nresources: [{type: a, model: b, api: dra}]\nnodes: [{match: z-*, devices: "
         "[{type: a, model: b, device: /y}]}]\ndomain: " + "a" * 64 + "\ndevices: []\n",
         "c.yml: dra.driver: (default: the domain"),
        ("api: dra\ndevices: [{type: a, model: b, device: /" + "x" * 70 + "}]\n",
         "c.yml:2: devices[0].device: is 71 characters long: with api: dra the path"),
    ],
    ids=["api", "driver", "reserved-attribute", "attribute-name", "attribute-type",
         "version", "quantity", "shares", "device-name-clash", "class-clash", "too-many-attributes",
         "long-default-driver", "long-default-driver-elsewhere", "long-path"],
)  # fmt: skip
def test_dra_problems_name_the_field(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_cli_shows_the_api_and_prints_device_classes(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(MIXED)
    code, output = invoke("validate", "--config", str(path))
    assert code == 0, output
    assert "ska-sdp.org/snaffler-v1: 8 devices (api: dra, driver ska-sdp.org)" in output
    code, output = invoke("resources", "--config", str(path))
    assert "snaffler-v1-w1 (4 shares)" in output
    assert "device-plugin  GPU_0" in output
    code, output = invoke("resources", "--config", str(path), "-o", "dra")
    assert code == 0
    assert output.startswith("apiVersion: resource.k8s.io/v1\nkind: DeviceClass\n")
    assert "name: snaffler-v1.ska-sdp.org" in output
    assert "gizmo" not in output
