"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from kubelet_standin import KubeletStandIn

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    """Return the path of an external tool (helm, prometheus, ...).

    Locally a missing tool skips the test (run `make tools`); in CI it fails, because
    `.ci/run` installs every tool and a skip there would hide a broken install step.
    """

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            message = f"{name} is not installed; run `make tools`"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        return path

    return find


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: unix socket paths must fit in 107 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="wdp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def plugin_dir(short_tmp: Path) -> Path:
    return short_tmp / "device-plugins"


@pytest.fixture
async def kubelet(plugin_dir: Path) -> AsyncIterator[KubeletStandIn]:
    standin = KubeletStandIn(plugin_dir)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
