"""The chart refuses what the supervisor refuses: one table of invalid configs through both.

Each config goes through `widget-supervisor validate` (exit 1, the problem named) and through
`helm template` with it under `config:` (refused by the generated values.schema.json, naming the
value's path, or by templates/validate.yaml with the supervisor's own sentence).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_render import CHART_DIR, helm_template
from click.testing import CliRunner

from supervisor import schema_gen
from supervisor.cli import main
from supervisor.config import parse_config
from supervisor.errors import ConfigError
from supervisor.resources import device_id

SNAFFLER = {"type": "snaffler", "model": "v1", "device": "/dev/wibble1"}
W2 = {**SNAFFLER, "device": "/dev/wibble2"}


def devices(*items: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"devices": list(items), **top}


# (config, what helm's schema error names, what the supervisor says), for single values.
SCHEMA_RULES = [
    pytest.param(devices({**SNAFFLER, "type": "Snaffler"}), "config.devices.0.type",
                 "devices[0].type: must be 1-61 lower-case letters", id="upper-case-type"),
    pytest.param(devices({**SNAFFLER, "model": "V1"}), "config.devices.0.model",
                 "devices[0].model: must be 1-61 lower-case letters", id="upper-case-model"),
    pytest.param(devices({**SNAFFLER, "id": "gizmo-"}), "config.devices.0.id",
                 "devices[0].id: must be 1-63 characters", id="malformed-id"),
    pytest.param(devices({**SNAFFLER, "id": "i" * 90}), "config.devices.0.id",
                 "devices[0].id: must be 1-63 characters", id="id-over-63"),
    pytest.param(devices({**SNAFFLER, "device": "dev/wibble1"}), "config.devices.0.device",
                 "devices[0].device: must be an absolute path", id="relative-device-path"),
    pytest.param(devices(SNAFFLER, domain="kubernetes.io"), "config.domain",
                 "domain: the kubernetes.io domain is reserved", id="kubernetes-io-domain"),
    pytest.param(devices(SNAFFLER, resources=[{"type": "snaffler", "model": "v1", "replicas": 0}]),
                 "config.resources.0.replicas",
                 "resources[0].replicas: must be a whole number from 1 to 100", id="zero-replicas"),
    pytest.param(devices({**SNAFFLER, "type": "snaffler\n"}), "config.devices.0.type",
                 "devices[0].type: must be 1-61 lower-case letters", id="trailing-newline"),
]  # fmt: skip

# Rules the generated schema cannot carry (spanning several values, or x-maxSeconds): the same
# sentence from both.
CROSS_RULES = [
    pytest.param(devices(SNAFFLER, SNAFFLER), id="duplicate-device-path"),
    pytest.param(devices(SNAFFLER, {"type": "gizmo", "model": "mk2", "device": "/dev/wibble1"}),
                 id="same-path-two-resources"),
    pytest.param(devices({**SNAFFLER, "id": "same"}, {**W2, "id": "same"}), id="duplicate-id"),
    pytest.param(devices(SNAFFLER, {**W2, "id": "snaffler-v1-wibble1"}),
                 id="id-equal-to-a-derived-one"),
    pytest.param(devices({**SNAFFLER, "type": "a.b"}, {**W2, "type": "a_b"}),
                 id="colliding-environment-names"),
    pytest.param(devices({**SNAFFLER, "type": "a-b", "model": "c"},
                         {**W2, "type": "a", "model": "b-c"}), id="colliding-resource-names"),
    pytest.param(devices(SNAFFLER, resources=[{"type": "gizmo", "model": "mk2"}]),
                 id="settings-without-device"),
    pytest.param(devices(SNAFFLER, resources=[{"type": "snaffler", "model": "v1"}] * 2),
                 id="settings-twice"),
    pytest.param(devices({**SNAFFLER, "type": "t" * 40, "model": "m" * 30}),
                 id="name-part-over-63"),
    pytest.param(devices({**SNAFFLER, "type": "t" * 30, "model": "m" * 30},
                         resources=[{"type": "t" * 30, "model": "m" * 30, "replicas": 2,
                                     "renameShared": True}]), id="shared-name-part-over-63"),
    pytest.param(devices({**SNAFFLER, "id": "same"}, {**W2, "id": "same"},
                         resources=[{"type": "snaffler", "model": "v1", "replicas": 3,
                                     "renameShared": True}]), id="duplicate-id-shared"),
    pytest.param(devices(SNAFFLER, nodes=[{"match": "gpu-*", "devices": [W2, W2]}]),
                 id="duplicate-path-in-a-nodes-entry"),
    pytest.param(devices(SNAFFLER, nodes=[{"match": "gpu-*", "devices": [
        {**W2, "type": "t" * 40, "model": "m" * 30}]}]), id="long-name-in-a-nodes-entry"),
    # Durations as strings: the schema's x-maxSeconds, which draft-07 cannot carry.
    pytest.param(devices({**SNAFFLER, "faults": {"recoverAfter": "8784h1s"}}),
                 id="duration-string-over-366-days"),
    pytest.param(devices(SNAFFLER, resources=[{"type": "snaffler", "model": "v1",
                                               "allocate": {"delay": "5m0.5s"}}]),
                 id="delay-string-over-300s"),
    # DRA (dra_driver/names.py): the driver named after a long domain, a DeviceClass name.
    pytest.param(devices(SNAFFLER, api="dra", domain="d" * 64), id="dra-default-driver-over-63"),
    pytest.param(devices({**SNAFFLER, "type": "a._b"}, api="dra"), id="dra-device-class-name"),
    pytest.param(devices(SNAFFLER, {**W2, "type": "a_.b", "model": "c"},
                         resources=[{"type": "a_.b", "model": "c", "api": "dra"}]),
                 id="dra-device-class-name-of-one-resource"),
]  # fmt: skip


def _supervisor(tmp_path: Path, config: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["validate", "--config", str(path), "--node-name", "n1"])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _helm(helm: str, tmp_path: Path, config: dict[str, Any]) -> tuple[int, str]:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": config}))
    done = helm_template(helm, values=[values])
    return done.returncode, done.stderr


@pytest.mark.parametrize(("config", "helm_names", "supervisor_says"), SCHEMA_RULES)
def test_a_bad_value_is_refused_by_both(
    helm: str, tmp_path: Path, config: dict[str, Any], helm_names: str, supervisor_says: str
) -> None:
    code, output = _supervisor(tmp_path, config)
    assert code == 1, output
    assert supervisor_says in output
    code, stderr = _helm(helm, tmp_path, config)
    assert code != 0, f"helm accepted {config}"
    assert "values don't meet the specifications of the schema" in stderr, stderr
    assert f"- {helm_names}:" in stderr, stderr


def _sentences(config: dict[str, Any]) -> list[str]:
    """The supervisor's problems as `field: message`, without its "(line N)" references."""
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_dump(config).encode(), source="c.yml", node_name="n1")
    return [re.sub(r" \(line \d+\)", "", f"{p.field}: {p.message}") for p in error.value.problems]


@pytest.mark.parametrize("config", CROSS_RULES)
def test_a_rule_across_values_says_the_same_in_both(
    helm: str, tmp_path: Path, config: dict[str, Any]
) -> None:
    code, output = _supervisor(tmp_path, config)
    assert code == 1, output
    sentences = _sentences(config)
    code, stderr = _helm(helm, tmp_path, config)
    assert code != 0, f"helm accepted {config}"
    assert "validate.yaml" in stderr, stderr
    (said,) = re.findall(r"\n\n(config\..*)\n", stderr)
    assert said.removeprefix("config.") in sentences, (said, sentences)


@pytest.mark.parametrize(
    "path",
    ["/dev/wibble1", "/dev/a/b", "/opt/x y", "/dev/" + "z" * 80, "/dev/caf\u00e9", "//dev/x"],
)
def test_the_chart_derives_device_ids_as_the_supervisor_does(
    helm: str, tmp_path: Path, path: str
) -> None:
    """A device whose explicit ID is another's derived one is a duplicate only if both agree."""
    derived = device_id("snaffler", "v1", path)
    config = devices({**SNAFFLER, "device": path}, {**W2, "device": "/dev/other", "id": derived})
    code, stderr = _helm(helm, tmp_path, config)
    assert code != 0
    assert f"device ID '{derived}' is used twice" in stderr, (derived, stderr)


def test_the_committed_chart_schema_is_generated_from_the_config_schema() -> None:
    committed = (CHART_DIR / "values.schema.json").read_text()
    assert committed == schema_gen.render(CHART_DIR), "run `make schema`"
    assert schema_gen.main(["--chart", str(CHART_DIR), "--check"]) == 0


def test_the_chart_schema_is_draft_07_for_every_helm_3() -> None:
    generated = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(generated)
    text = json.dumps(generated)
    assert "$defs" not in text
    assert '"x-' not in text
    seed = generated["definitions"]["allocate"]["properties"]["seed"]
    assert seed["maximum"] == 2**53 - 1  # Helm's numbers are float64


def test_a_keyword_draft_07_lacks_is_refused() -> None:
    with pytest.raises(schema_gen.SchemaGenError, match="prefixItems"):
        schema_gen.draft07({"type": "array", "prefixItems": [{"type": "string"}]})
    wrapped = schema_gen.draft07({"$ref": "#/$defs/name", "maxLength": 5, "description": "d"})
    assert wrapped == {
        "description": "d",
        "allOf": [{"$ref": "#/definitions/name"}, {"maxLength": 5}],
    }
