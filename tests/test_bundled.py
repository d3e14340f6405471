"""The bundled examples: the package's copy is config/examples/, and the CLI shows them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from supervisor import bundled
from supervisor.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"


def test_the_package_ships_exactly_config_examples() -> None:
    assert bundled.example_names() == sorted(p.name for p in EXAMPLES.glob("*.yml"))
    for name in bundled.example_names():
        assert bundled.example_text(name) == (EXAMPLES / name).read_text()


def test_examples_lists_each_with_what_it_shows() -> None:
    result = CliRunner().invoke(main, ["examples"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.output.splitlines() if " " in line)
    assert lines["multi.yml"] == "Several kinds of mock device on one node."
    assert lines["topology.yml"] == "NUMA topology and preferred allocation."


def test_examples_prints_one_verbatim() -> None:
    result = CliRunner().invoke(main, ["examples", "widget.yml"])
    assert result.exit_code == 0
    assert result.output == (EXAMPLES / "widget.yml").read_text()


def test_an_unknown_example_is_a_usage_error_naming_the_real_ones() -> None:
    result = CliRunner().invoke(main, ["examples", "nope.yml"])
    assert result.exit_code == 2
    assert "no bundled example 'nope.yml'" in result.output
    assert "multi.yml" in result.output
