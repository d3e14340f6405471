"""The config's JSON Schema: one source of its rules, checked fast and explained by jsonschema."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_worker.api import HEALTHY, PREFERRED_POLICIES, UNHEALTHY, AllocateFaults, Mount
from plugin_worker.k8s_names import extended_resource_name_problems
from supervisor import config_schema
from supervisor.config import parse_config
from supervisor.config_document import read_sections
from supervisor.errors import ConfigError
from supervisor.resources import DeviceEntry, ResourceSettings
from supervisor.schema_check import UnsupportedSchemaError, compile_pattern, compile_schema

EXAMPLES = sorted((Path(__file__).parent.parent / "config" / "examples").glob("*.yml"))
SCHEMA = config_schema.schema()
DEFS = SCHEMA["$defs"]


def jsonschema_says(tree: Any) -> bool:
    """The verdict of jsonschema itself, with our type checker and regex dialect."""
    return not list(config_schema._validator_class(skip_valid=False)(SCHEMA).iter_errors(tree))


def fast_says(tree: Any) -> bool:
    return config_schema._is_valid(None)(tree)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_choices_match_what_the_plugin_understands() -> None:
    assert DEFS["resource"]["properties"]["preferredAllocation"]["enum"] == list(PREFERRED_POLICIES)
    assert DEFS["device"]["properties"]["health"]["enum"] == [HEALTHY, UNHEALTHY]


def _defaults(schema: Any) -> dict[str, Any]:
    return {k: v["default"] for k, v in schema["properties"].items() if "default" in v}


def test_the_schemas_defaults_are_what_a_missing_key_gives() -> None:
    """Defaults live in the reading code; the schema's "default" annotations document them."""
    device = {"type": "a", "model": "b", "device": "/dev/x"}
    resource = {"type": "a", "model": "b"}
    mount = {"hostPath": "/h", "containerPath": "/c"}
    node = {"match": "n", "devices": [device]}
    tree = {"devices": [device], "resources": [{**resource, "mounts": [mount], "allocate": {}}]}
    explicit = {
        "devices": [{**device, **_defaults(DEFS["device"])}],
        "resources": [
            {
                **resource,
                **_defaults(DEFS["resource"]),
                "mounts": [{**mount, **_defaults(DEFS["mount"])}],
                "allocate": _defaults(DEFS["allocate"]),
            }
        ],
        "nodes": [{**node, **_defaults(DEFS["node"])}],
    }
    assert fast_says(explicit)
    assert read_sections(explicit)[0] == read_sections({**tree, "nodes": [node]})[0]
    assert read_sections(explicit)[1] == read_sections({**tree, "nodes": [node]})[1]
    (settings_,) = read_sections(tree)[0].settings
    assert settings_.mounts == (Mount("/c", "/h", read_only=True),)
    assert settings_.allocate_faults == AllocateFaults()
    assert read_sections(tree)[0].entries[0] == DeviceEntry(
        "a", "b", "/dev/x", None, ("devices", 0)
    )
    assert (
        ResourceSettings("a", "b").replicas == DEFS["resource"]["properties"]["replicas"]["default"]
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_both_checks(path: Path) -> None:
    tree = yaml.safe_load(path.read_text())
    assert fast_says(tree)
    assert jsonschema_says(tree)


# -- the fast check and jsonschema agree ------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2000),
    st.floats(-2, 400, allow_nan=False),
    st.sampled_from(
        ["", " ", "a", "A", "snaffler", "Snaffler", "v1", "a-", "-a", "a.b", "a_b", "x\n", "/dev/x",
         "dev/x", "/dev/\x00", "0s", "0", "1s", "250ms", "1m30s", "5m", "1h", "1000h", "30 s",
         "Healthy", "Unhealthy", "packed", "spread", "none", "add", "replace", "kubernetes.io",
         "example.org", "requests.x", "MODE", "1BAD", "WIDGET_VISIBLE_DEVICES", "a b",
         "example.com/key", "k" * 64, "a" * 62, "/" + "p" * 4100]
    ),
)  # fmt: skip


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    tree = copy.deepcopy(yaml.safe_load(draw(st.sampled_from(EXAMPLES)).read_text()))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(tree)))
        if not path:
            continue
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["set", "delete", "add-key"]))
        if action == "set":
            parent[path[-1]] = draw(st.one_of(SCALARS, st.just({}), st.just([]), st.just([{}])))
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(["colour", "type", "1", "WIDGET_X", "a b"]))] = (
                draw(SCALARS)
            )
    return tree


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_the_fast_check_agrees_with_jsonschema(tree: Any) -> None:
    assert fast_says(tree) == jsonschema_says(tree)


def test_the_fast_check_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(UnsupportedSchemaError, match="uniqueItems"):
        compile_schema({"type": "array", "uniqueItems": True})
    with pytest.raises(UnsupportedSchemaError, match="local references"):
        compile_schema({"$ref": "https://example.org/other.json"})


def test_patterns_end_at_the_end_as_in_json_schema_and_go() -> None:
    assert compile_pattern("^a$").search("a\n") is None
    assert compile_pattern("^[$]$").search("$") is not None
    assert compile_pattern(r"\S").search("\u00a0") is not None  # ASCII classes, as in RE2
    assert re.search("^a$", "a\n")  # what Python alone would do


# -- what the schema guarantees ---------------------------------------------------------------

NAMES = st.from_regex(re.compile(r"[a-z0-9]([-a-z0-9_.]{0,59}[a-z0-9])?", re.ASCII), fullmatch=True)
DOMAINS = st.from_regex(
    re.compile(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?){0,3}"),
    fullmatch=True,
)


@settings(max_examples=300, deadline=None)
@given(domain=DOMAINS, type_=NAMES, model=NAMES, shared=st.booleans())
def test_schema_valid_parts_make_a_name_kubelet_accepts_unless_too_long(
    domain: str, type_: str, model: str, shared: bool
) -> None:
    """The schema checks domain, type and model; what is left for the composed name is only the
    length of its name part, which `resources` checks (so no other kubelet rule can fail)."""
    assert not config_schema.problems(type_, "name")
    assert not config_schema.problems(model, "name")
    if config_schema.problems(domain, "domain"):
        return
    part = f"{type_}-{model}" + (".shared" if shared else "")
    problems = extended_resource_name_problems(f"{domain}/{part}")
    assert problems == ([] if len(part) <= 63 else ["name part must be no more than 63 characters"])


# -- messages ---------------------------------------------------------------------------------


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config(text.encode(), source="c.yml", node_name="n1")
    return str(error.value).splitlines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("devices:\n- {type: a, model: b, device: /dev/x, faults: {flapPeriod: soon}}\n",
         "c.yml:2: devices[0].faults.flapPeriod: must be a duration such as 250ms, 30s or 5m "
         "(at most 366 days), not a string ('soon')"),
        ("devices:\n- {type: a, model: b, device: /dev/x, faults: {recoverAfter: 367d}}\n",
         "c.yml:2: devices[0].faults.recoverAfter: must be a duration such as 250ms"),
        ("devices:\n- {type: a, model: b, device: /dev/x, faults: {recoverAfter: 8785h}}\n",
         "c.yml:2: devices[0].faults.recoverAfter: must be a duration such as 250ms, 30s or 5m "
         "(at most 366 days), not a string ('8785h')"),
        ("devices:\n- {type: a, model: b, device: \"/dev/\\0\"}\n",
         "c.yml:2: devices[0].device: is not a usable path (too long or contains NUL)"),
        ("resources:\n- {type: a, model: b, envs: {1: x}}\n"
         "devices:\n- {type: a, model: b, device: /dev/x}\n",
         "c.yml:2: resources[0].envs.1: must be a string"),
        ("resources:\n- {type: a, model: b, allocate: {seed: true}}\n"
         "devices:\n- {type: a, model: b, device: /dev/x}\n",
         "c.yml:2: resources[0].allocate.seed: must be a whole number from 0 to "
         "9223372036854775807, not a boolean (true)"),
        ("devices:\n- {type: a, model: b, device: /dev/x, numa: 1.0}\n",
         "c.yml:2: devices[0].numa: must be a whole number from 0 to 1023, not a number (1.0)"),
        ("nodes:\n- {match: ' '}\ndevices: []\n",
         "c.yml:2: nodes[0].match: must be a non-empty string, not a string (' ')"),
        ("devices: []\nextra: 1\n", "c.yml:2: extra: unknown key; expected one of: domain, "
         "api, dra, devices, resources, nodes"),
    ],
    ids=["bad-flap", "day-unit", "duration-over-max", "nul", "int-env-key", "bool-seed",
         "float-numa", "blank-match", "unknown-top-key"],
)  # fmt: skip
def test_one_clear_sentence_per_field(text: str, expected: str) -> None:
    lines = problems_of(text)
    assert any(line.startswith(expected) for line in lines), lines
    fields = [line.split(": ")[1] for line in lines]
    assert len(fields) == len(set(fields)), lines


def test_a_huge_value_is_described_not_printed() -> None:
    """jsonschema's own messages repr() the value; an alias-built list can be billions long."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    text = "\n".join(lines) + "\ndevices:\n- type: *a11\n  model: b\n  device: /dev/x\n"
    assert "devices[0].type: must be a non-empty string, not a list" in "\n".join(problems_of(text))


def _explained(tree: Any, *, skip_valid: bool) -> list[tuple[Any, str]]:
    validator = config_schema._validator_class(skip_valid=skip_valid)(SCHEMA)
    return sorted(
        (str(path), message)
        for error in validator.iter_errors(tree)
        for path, message in config_schema._explain(error)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_skipping_the_items_the_fast_check_accepts_finds_the_same_errors(tree: Any) -> None:
    assert _explained(tree, skip_valid=True) == _explained(tree, skip_valid=False)
