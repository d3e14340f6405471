"""Reload planning is pure: stop what went, start what came, update what changed."""

from __future__ import annotations

from dataclasses import replace

from plugin_worker.api import Device, ResourceSpec
from supervisor.reconcile import changes, plan


def spec(name: str, *ids: str) -> ResourceSpec:
    return ResourceSpec(
        name=name, devices=tuple(Device(i, f"/dev/{i}") for i in ids), env_prefix="WIDGET_X"
    )


def test_plan_stops_starts_updates_and_leaves_the_rest() -> None:
    running = {s.name: s for s in [spec("d/a", "1"), spec("d/b", "2"), spec("d/c", "3")]}
    desired = {s.name: s for s in [spec("d/a", "1"), spec("d/b", "2", "4"), spec("d/e", "5")]}
    steps = plan(desired, running)
    assert steps.stop == ("d/c",)
    assert [s.name for s in steps.start] == ["d/e"]
    assert [s.name for s in steps.update] == ["d/b"]
    assert steps.unchanged == ("d/a",)
    assert steps.summary() == "+1 resource, -1 resource, 1 updated, 1 unchanged"


def test_identical_config_is_an_empty_plan() -> None:
    running = {s.name: s for s in [spec("d/a", "1", "2")]}
    steps = plan(dict(running), running)
    assert (steps.stop, steps.start, steps.update) == ((), (), ())
    assert steps.summary() == "1 unchanged"


def test_first_start_and_full_stop() -> None:
    desired = {s.name: s for s in [spec("d/a", "1"), spec("d/b", "2")]}
    assert plan(desired, {}).summary() == "+2 resources, 0 unchanged"
    assert plan({}, desired).stop == ("d/a", "d/b")


def test_changes_say_what_changed_in_words() -> None:
    old = spec("a", "x")
    assert changes(old, spec("a", "x", "y")) == "device list (2 devices)"
    new = replace(old, preferred_policy="packed", cdi_kind="a", envs=(("K", "v"),))
    assert changes(old, new) == "preferred allocation none -> packed, CDI on, environment"
    assert changes(new, old) == "preferred allocation packed -> none, CDI off, environment"
    assert changes(old, replace(old, failing=True)) == "failing on"
