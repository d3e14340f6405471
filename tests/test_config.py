"""Config loading and validation: every example loads, every bad input names file, line, field."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from supervisor.config import MAX_CONFIG_BYTES, load_config, parse_config
from supervisor.errors import ConfigError
from supervisor.resources import device_id

SEED = b"""devices:
- type: snaffler
  model: v1
  device: /dev/wibble1
- type: snaffler
  model: v1
  device: /dev/wibble2
- type: snaffler
  model: v2
  device: /dev/wibble3
"""


def parse(text: str | bytes) -> object:
    data = text.encode() if isinstance(text, str) else text
    return parse_config(data, source="c.yml")


def problems_of(text: str | bytes) -> str:
    with pytest.raises(ConfigError) as error:
        parse(text)
    return str(error.value)


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("config/examples/*.yml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_every_example_loads(path: Path) -> None:
    config = load_config(path)
    assert config.resources
    assert all(spec.devices for spec in config.resources)


def test_seed_format_groups_by_type_and_model(examples: Path) -> None:
    config = load_config(examples / "widget.yml")
    assert config.domain == "ska-sdp.org"
    assert [(s.name, [d.id for d in s.devices]) for s in config.resources] == [
        ("ska-sdp.org/snaffler-v1", ["snaffler-v1-wibble1", "snaffler-v1-wibble2"]),
        ("ska-sdp.org/snaffler-v2", ["snaffler-v2-wibble3"]),
    ]
    assert config.resources[0].env_prefix == "WIDGET_SNAFFLER_V1"


def test_domain_from_file_and_default() -> None:
    assert parse_config(b"domain: example.com\n" + SEED[0:0] + SEED, source="x").domain == (
        "example.com"
    )
    assert parse_config(SEED, source="x", default_domain="acme.io").resources[0].name == (
        "acme.io/snaffler-v1"
    )


BAD_CONFIGS = [
    ("empty", "", "c.yml: is empty"),
    ("comment-only", "# nothing\n", "c.yml: is empty"),
    ("not-yaml", "devices: [\n", "c.yml:2: not valid YAML"),
    ("scalar-top", "just text\n", "top level must be a mapping"),
    ("list-top", "- a\n- b\n", "top level must be a mapping"),
    ("no-devices", "domain: x.org\n",
     "c.yml: devices: required field is missing: a list of devices, each with type, model and device"),
    ("devices-not-list", "devices: {a: 1}\n", "c.yml:1: devices: must be a list"),
    ("unknown-top-key", "device:\n- {}\n", "c.yml:1: device: unknown key"),
    ("item-not-mapping", "devices:\n- /dev/x\n", "c.yml:2: devices[0]: must be a mapping"),
    ("missing-model", "devices:\n- type: a\n  device: /dev/x\n",
     "c.yml:2: devices[0].model: required field is missing"),
    ("missing-type-second", "devices:\n- {type: a, model: b, device: /dev/x}\n- {model: b, device: /dev/y}\n",
     "c.yml:3: devices[1].type: required field is missing"),
    ("model-number", "devices:\n- type: a\n  model: 2\n  device: /dev/x\n",
     'c.yml:3: devices[0].model: must be a non-empty string, not a number (2) (quote it: model: "2")'),
    ("type-null", "devices:\n- type:\n  model: v1\n  device: /dev/x\n",
     "c.yml:2: devices[0].type: must be a non-empty string, not null"),
    ("type-list", "devices:\n- type: [a]\n  model: v1\n  device: /dev/x\n",
     "c.yml:2: devices[0].type: must be a non-empty string, not a list"),
    ("unknown-device-key", "devices:\n- type: a\n  model: b\n  device: /dev/x\n  colour: red\n",
     "c.yml:5: devices[0].colour: unknown key"),
    ("relative-path", "devices:\n- type: a\n  model: b\n  device: dev/x\n",
     "c.yml:4: devices[0].device: must be an absolute path"),
    ("duplicate-path", "devices:\n- {type: a, model: b, device: /dev/x}\n- {type: c, model: d, device: /dev/x}\n",
     "c.yml:3: devices[1].device: '/dev/x' is already listed at devices[0] (line 2)"),
    ("duplicate-explicit-id", "devices:\n- {type: a, model: b, device: /dev/x, id: same}\n- {type: a, model: b, device: /dev/y, id: same}\n",
     "c.yml:3: devices[1].id: device ID 'same' is used twice"),
    ("bad-explicit-id", "devices:\n- {type: a, model: b, device: /dev/x, id: 'a b'}\n",
     "c.yml:2: devices[0].id: must be 1-63 characters of letters, digits, '-', '_' or '.', "
     "starting and ending with a letter or digit, not a string ('a b')"),
    ("id-ends-with-dash", "devices:\n- {type: gizmo, model: mk2, device: /dev/x, id: gizmo-}\n",
     "c.yml:2: devices[0].id: must be 1-63 characters of letters, digits, '-', '_' or '.', "
     "starting and ending with a letter or digit, not a string ('gizmo-')"),
    ("id-too-long", f"devices:\n- {{type: a, model: b, device: /dev/x, id: {'i' * 90}}}\n",
     f"c.yml:2: devices[0].id: must be 1-63 characters of letters, digits, '-', '_' or '.', "
     f"starting and ending with a letter or digit, not a string ('{'i' * 60}...')"),
    ("duplicate-key", "devices:\n- type: a\n  type: b\n  model: c\n  device: /dev/x\n",
     "c.yml:3: not valid YAML"),
    ("upper-case-type", "devices:\n- {type: Snaffler, model: v1, device: /dev/x}\n",
     "c.yml:2: devices[0].type: must be 1-61 lower-case letters, digits, '-', '_' or '.', starting "
     "and ending with a letter or digit (it names the resource <domain>/<type>-<model>), "
     "not a string ('Snaffler')"),
    ("upper-case-model", "devices:\n- type: snaffler\n  model: V1\n  device: /dev/x\n",
     "c.yml:3: devices[0].model: must be 1-61 lower-case letters"),
    ("bad-chars", "devices:\n- {type: 'snaf fler', model: v1, device: /dev/x}\n",
     "c.yml:2: devices[0].type: must be 1-61 lower-case letters, digits, '-', '_' or '.'"),
    ("type-too-long", f"devices:\n- {{type: {'a' * 62}, model: v1, device: /dev/x}}\n",
     "c.yml:2: devices[0].type: must be 1-61 lower-case letters"),
    ("too-long", f"devices:\n- {{type: {'a' * 61}, model: v1, device: /dev/x}}\n",
     f"c.yml:2: devices[0].type/model: resource 'ska-sdp.org/{'a' * 61}-v1': the name after the "
     f"domain, '{'a' * 61}-v1', has 64 characters; kubelet allows at most 63 (shorten the type "
     "or the model)"),
    ("kubernetes-io", "domain: kubernetes.io\ndevices:\n- {type: a, model: b, device: /dev/x}\n",
     "c.yml:1: domain: the kubernetes.io domain is reserved for native resources"),
    ("kubernetes-io-suffix", "domain: xkubernetes.io\ndevices:\n- {type: a, model: b, device: /dev/x}\n",
     "c.yml:1: domain: the kubernetes.io domain is reserved"),
    ("requests-domain", "domain: requests.example.org\ndevices:\n- {type: a, model: b, device: /dev/x}\n",
     "c.yml:1: domain: must not start with 'requests.'"),
    ("long-domain", f"domain: {'d' * 245}\ndevices:\n- {{type: a, model: b, device: /dev/x}}\n",
     "c.yml:1: domain: must consist of lower case alphanumeric characters, '-' or '.', and must "
     "start and end with an alphanumeric character (a DNS subdomain of at most 244 characters)"),
    ("bad-domain", "domain: Not_A_Domain\ndevices:\n- {type: a, model: b, device: /dev/x}\n",
     "c.yml:1: domain: must consist of lower case alphanumeric characters, '-' or '.'"),
    ("trailing-newline", "devices:\n- {type: \"snaffler\\n\", model: v1, device: /dev/x}\n",
     "c.yml:2: devices[0].type: must be 1-61 lower-case letters"),
    ("name-collision", "devices:\n- {type: a-b, model: c, device: /dev/x}\n- {type: a, model: b-c, device: /dev/y}\n",
     "c.yml:3: devices[1].type/model: resource 'ska-sdp.org/a-b-c' is also what devices[0] gives"),
    ("env-collision", "devices:\n- {type: a.b, model: c, device: /dev/x}\n- {type: a_b, model: c, device: /dev/y}\n",
     "c.yml:3: devices[1].type/model: resource 'ska-sdp.org/a_b-c' would share environment variables WIDGET_A_B_C_*"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])  # fmt: skip
def test_bad_config_is_reported_precisely(text: str, expected: str) -> None:
    assert expected in problems_of(text)


def test_all_problems_are_reported_at_once() -> None:
    text = "devices:\n- type: a\n  device: /dev/x\n- model: b\n  device: y\n"
    lines = problems_of(text).splitlines()
    assert lines == [
        "c.yml:2: devices[0].model: required field is missing",
        "c.yml:4: devices[1].type: required field is missing",
        "c.yml:5: devices[1].device: must be an absolute path, got 'y'",
    ]


def test_non_utf8_names_the_line() -> None:
    assert "c.yml:2: is not valid UTF-8" in problems_of(b"devices:\n- type: \xff\xfe\n")


def test_huge_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yml"
    path.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_config(path)


def test_alias_bomb_is_a_clear_error_not_a_blow_up() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    text = "\n".join(lines) + "\ndevices: *a11\n"
    message = problems_of(text)
    assert "devices[0]: must be a mapping" in message
    assert len(message) < 100_000


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("devices: " + "[" * 100_000 + "]" * 100_000, 1),
        ("devices:\n" + "{a: " * 70 + "x" + "}" * 70 + "\n", 2),
        ("devices:\n" + "- " * 70 + "x\n", 2),
    ],
    ids=["flow-lists", "flow-maps", "compact-block"],
)
def test_deep_nesting_is_refused_before_parsing(text: str, line: int) -> None:
    assert problems_of(text) == f"c.yml:{line}: nests deeper than 64 levels"


def test_alias_floods_are_refused_before_parsing() -> None:
    text = (
        "x: &x {type: a, model: b, device: /dev/c}\ndevices: [" + ", ".join(["*x"] * 1001) + "]\n"
    )
    assert problems_of(text) == "c.yml: uses 1001 aliases; at most 1000 are allowed"
    few = "base: &b /dev/x\ndevices:\n- {type: a, model: b, device: *b}\n"
    assert "base: unknown key" in problems_of(few)  # parsed normally: aliases are allowed


def test_brackets_in_quotes_and_comments_do_not_count() -> None:
    deep = "[" * 100
    text = f"# {deep}\ndevices: # {deep}\n- {{type: a, model: b, device: '/dev/{deep}'}}\n"
    config = parse_config(text.encode(), source="c.yml")
    assert config.resources[0].devices[0].path == f"/dev/{deep}"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file does not exist"):
        load_config(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, strict_perms=False)


def test_strict_perms_refuses_group_or_world_writable(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_bytes(SEED)
    path.chmod(0o664)
    with pytest.raises(
        ConfigError, match=r"writable by group or others \(mode 0664\).*--no-strict-perms"
    ):
        load_config(path)
    assert load_config(path, strict_perms=False).resources
    path.chmod(0o644)
    assert load_config(path).resources


def test_strict_perms_follows_symlinks_like_a_configmap(tmp_path: Path) -> None:
    real = tmp_path / "..data" / "config.yaml"
    real.parent.mkdir()
    real.write_bytes(SEED)
    real.chmod(0o666)
    link = tmp_path / "config.yaml"
    link.symlink_to("..data/config.yaml")
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(link)


@pytest.mark.root  # gives the file to another user
def test_strict_perms_refuses_a_file_owned_by_someone_else(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_bytes(SEED)
    os.chown(path, 12345, 12345)
    with pytest.raises(ConfigError, match="owned by uid 12345"):
        load_config(path)


def _ids(devices: list[tuple[str, str, str]]) -> dict[str, str]:
    text = "devices:\n" + "".join(
        f"- {{type: {t}, model: {m}, device: {d}}}\n" for t, m, d in devices
    )
    config = parse_config(text.encode(), source="x")
    return {d.path: d.id for spec in config.resources for d in spec.devices}


def test_device_ids_survive_reordering_and_insertion() -> None:
    devices = [("snaffler", "v1", f"/dev/wibble{i}") for i in range(10)]
    before = _ids(devices)
    shuffled = devices[:]
    random.Random(7).shuffle(shuffled)
    assert _ids(shuffled) == before
    inserted = [
        ("snaffler", "v1", "/dev/new"),
        *devices[:5],
        ("snaffler", "v1", "/dev/mid"),
        *devices[5:],
    ]
    after = _ids(inserted)
    assert {path: after[path] for path in before} == before
    assert len(set(after.values())) == len(after)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/dev/wibble1", "snaffler-v1-wibble1"),
        ("/dev/a/b", "snaffler-v1-a-b-"),
        ("/dev/a-b", "snaffler-v1-a-b"),
        ("/opt/x", "snaffler-v1-opt-x-"),
        ("/dev/" + "z" * 80, "snaffler-v1-zzz"),
    ],
    ids=["plain", "nested", "dash", "outside-dev", "long"],
)
def test_device_id_shapes(path: str, expected: str) -> None:
    ident = device_id("snaffler", "v1", path)
    assert ident.startswith(expected)
    assert len(ident) <= 63
    assert ident == device_id("snaffler", "v1", path)


def test_lossy_slugs_never_collide() -> None:
    assert device_id("a", "b", "/dev/x/y") != device_id("a", "b", "/dev/x-y")
    assert device_id("a", "b", "/dev/x y") != device_id("a", "b", "/dev/x_y")
