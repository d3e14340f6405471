"""The collector is paused only while the wrapped call runs, and always restored."""

from __future__ import annotations

import gc

import pytest

from supervisor.gcpause import gc_paused


@gc_paused
def _state() -> bool:
    return gc.isenabled()


@gc_paused
def _fail() -> None:
    raise ValueError("boom")


def test_paused_inside_restored_after() -> None:
    assert gc.isenabled()
    assert _state() is False
    assert gc.isenabled()


def test_restored_after_an_error() -> None:
    with pytest.raises(ValueError, match="boom"):
        _fail()
    assert gc.isenabled()


def test_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        assert _state() is False
        assert not gc.isenabled()
    finally:
        gc.enable()
