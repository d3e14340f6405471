"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest

from apiserver_standin.server import ApiServer
from kubelet_standin import KubeletStandIn

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
IS_ROOT = os.geteuid() == 0


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and not IS_ROOT:
        pytest.skip("needs root")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI a skip is a failure: `.ci/run` installs every tool and runs as root, so a skip
    there hides a broken install step or a test that silently stopped running. The one
    legitimate skip is a `root` test when CI is not root."""
    report = yield
    legitimate = item.get_closest_marker("root") is not None and not IS_ROOT
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") and not legitimate:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"
    return report


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    """Return the path of an external tool (helm, prometheus, ...).

    A missing tool skips the test (run `make tools`); under CI that skip is a failure
    (see `pytest_runtest_makereport`)."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            pytest.skip(f"{name} is not installed; run `make tools`")
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


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    """The Kubernetes API-server stand-in, over real HTTP on a free port."""
    server = ApiServer()
    await server.start()
    yield server
    await server.stop()
