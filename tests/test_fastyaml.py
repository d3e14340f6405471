"""The YAML fast path gives exactly what ``YAML(typ="safe")`` gives, or declines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from supervisor import fastyaml

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"


def reference(text: str) -> tuple[str, Any]:
    yaml = YAML(typ="safe")
    yaml.allow_duplicate_keys = False
    try:
        return "ok", yaml.load(text)
    except Exception as error:
        return "error", type(error).__name__


def fast(text: str) -> tuple[str, Any] | None:
    try:
        return "ok", fastyaml.load(text)
    except fastyaml.NotSimpleError:
        return None


def test_the_c_parser_is_there() -> None:
    # Without it every load falls back (still correct, only slow): catch that here.
    assert fastyaml.available()


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.name)
def test_examples_take_the_fast_path(example: Path) -> None:
    text = example.read_text()
    assert fast(text) == reference(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("# only a comment\n", None),
        ("--- a\n", "a"),
        ("a: yes\nb: tru\nc: v1\n", {"a": "yes", "b": "tru", "c": "v1"}),
        ("- a\n- 'b'\n- \"c\"\n", ["a", "b", "c"]),
        (
            '{"devices": [{"type": "x", "device": "/dev/x"}]}',
            {"devices": [{"type": "x", "device": "/dev/x"}]},
        ),
        ("a: |\n  two\n  lines\n", {"a": "two\nlines\n"}),
        ("a: '1'\nb: 'null'\n", {"a": "1", "b": "null"}),
        ("a: 1\nb: -0\nc: +12\nd: 0\n", {"a": 1, "b": 0, "c": 12, "d": 0}),
        (
            "a: true\nb: FALSE\nc: null\nd: ~\ne:\n",
            {"a": True, "b": False, "c": None, "d": None, "e": None},
        ),
        ("---\n", None),
    ],
    ids=[
        "empty",
        "comment",
        "bare-scalar",
        "yaml-1.2-strings",
        "quoting",
        "json",
        "literal",
        "quoted-non-strings",
        "decimal-integers",
        "booleans-and-nulls",
        "empty-document",
    ],
)
def test_plain_documents(text: str, expected: object) -> None:
    assert fast(text) == ("ok", expected) == reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1.5e3",
        "a: 1.",
        "a: .5",
        "a: 012",
        "a: 0o7",
        "1: a",
        "a: 0x1F",
        "a: 1_0",
        "a: .inf",
        "a: 2020-01-01",
        "<<: {a: b}",
        "a: =",
        "a: &x b\nc: *x",
        "a: !!str 1",
        "%YAML 1.1\n---\na: yes",
        "a: b\na: c",
        "? [a]\n: b",
        "a: b\n---\nc: d",
        "a: [b",
        "a: b\n c: d",
        "\t- a",
    ],
    ids=lambda text: repr(text)[:30],
)
def test_everything_else_is_declined(text: str) -> None:
    assert fast(text) is None


_scalars = st.one_of(
    st.sampled_from(["1", "0o7", "-2.5e3", "true", "True", "no", "null", "~", "", "<<", "=",
                     "2001-12-14", ".nan", "v1", "/dev/x", "a b", "yes", "-0", "+1", "007", "0",
                     "12", "1_0", "FALSE", "Null", "0.1", "-1.50", "1.", ".5", "1e3"]),
    st.text(alphabet="ab01.-_:/ #'\"~!&*", max_size=6),
)  # fmt: skip
_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_scalars, inner, max_size=3)
    ),
    max_leaves=8,
)


def _render(value: Any, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(value, list):
        return "".join(f"{pad}-\n{_render(v, indent + 2)}" for v in value) or f"{pad}[]\n"
    if isinstance(value, dict):
        return "".join(f"{pad}{k}:\n{_render(v, indent + 2)}" for k, v in value.items()) or (
            f"{pad}{{}}\n"
        )
    return f"{pad}{value}\n"


@settings(max_examples=300, deadline=None)
@given(_values)
def test_agrees_with_ruamel_whenever_it_answers(value: Any) -> None:
    text = _render(value)
    answer = fast(text)
    if answer is not None:
        assert answer == reference(text)


# -- the line path (the canonical layout) ------------------------------------------------


def lines(text: str) -> object:
    try:
        return fastyaml._lines(text, fastyaml._RESOLVERS or {})
    except fastyaml.NotSimpleError:
        return None


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yml")), ids=lambda p: p.name)
def test_line_path_agrees_on_examples(example: Path) -> None:
    text = example.read_text()
    answer = lines(text)
    assert answer is None or ("ok", answer) == reference(text)


def test_line_path_takes_the_canonical_layout() -> None:
    text = (
        "# devices\ndomain: ska-sdp.org\ndevices:\n"
        "- type: snaffler  \n  model: v1\n  device: /dev/wibble1\n  numa: 0\n\n"
        "- type: snaffler\n  model: v2\n  device: /dev/wibble_2.x-y\n  healthy: true\n"
        "other:\n  - a: b\n    c: 1.5\nlast: null\n"
    )
    assert ("ok", lines(text)) == reference(text)
    assert lines(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "devices:\n- type: a\n  model: v1\n    more\n",  # a multi-line plain scalar
        "devices:\n- type: a\n  model:\n    x: y\n",  # nesting
        "devices:\n- type: a # note\n",  # trailing comment
        "devices:\n- type: 'a'\n",  # quoted
        "devices:\n-\ttype: a\n",  # tab
        "devices:\r\n- type: a\r\n",  # CR
        "devices:\ndomain: x\n",  # ``devices:`` is null
        "devices:\n- type: a\n  type: b\n",  # duplicate key
        "a: b\na: c\n",  # duplicate top-level key
        "null: a\n",  # a key that is not a string
        "devices:\n- type: a\n - model: b\n",  # inconsistent indentation
        "devices:\n  - type: a\n- model: b\n",
        "a: b\n  c: d\n",
        "---\na: b\n",
        "a: b\n# é\n",
        "devices:\n- {type: a}\n",
        "",
    ],
    ids=lambda text: repr(text)[:40],
)
def test_line_path_declines_everything_else(text: str) -> None:
    assert lines(text) is None


_keys = st.sampled_from(["type", "model", "device", "id", "numa", "true", "null", "y", "_x", "N"])
_plain_values = st.sampled_from(
    ["v1", "/dev/x", "0", "12", "-0", "007", "1.5", "0x1F", "true", "False", "null", "yes",
     "a.b-c_d", "1_0", "2001-12-14", "_", "NULL", "Null", "1e3"]
)  # fmt: skip


@st.composite
def _canonical(draw: st.DrawFn) -> str:
    out = []
    for key in draw(st.lists(_keys, min_size=1, max_size=3)):
        if draw(st.booleans()):
            out.append(f"{key}: {draw(_plain_values)}")
            continue
        out.append(f"{key}:")
        pad = " " * draw(st.sampled_from([0, 2]))
        for item in draw(st.lists(st.lists(st.tuples(_keys, _plain_values), min_size=1,
                                           max_size=4), max_size=3)):  # fmt: skip
            for index, (k, v) in enumerate(item):
                out.append(f"{pad}{'- ' if index == 0 else '  '}{k}: {v}")
    return "\n".join(out) + "\n"


@settings(max_examples=300, deadline=None)
@given(_canonical())
def test_line_path_agrees_with_ruamel(text: str) -> None:
    answer = lines(text)
    if answer is not None:
        assert ("ok", answer) == reference(text)
        assert fast(text) == ("ok", answer)
