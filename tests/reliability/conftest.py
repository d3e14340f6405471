"""Fixtures and probes for the fault suite: configs and what a process holds (waiting on a
condition is `tests.support.eventually`)."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import write_config

V1 = "ska-sdp.org/snaffler-v1"
V2 = "ska-sdp.org/snaffler-v2"
STAY = [
    ("snaffler", "v1", "/dev/wibble1"),
    ("snaffler", "v1", "/dev/wibble2"),
    ("snaffler", "v2", "/dev/wibble3"),
    ("snaffler", "v2", "/dev/wibble4"),
]


@pytest.fixture
def config_dir(short_tmp: Path) -> Path:
    path = short_tmp / "etc"
    path.mkdir()
    return path


@pytest.fixture
def config(config_dir: Path) -> Path:
    path = config_dir / "config.yaml"
    write_config(path, STAY)
    return path


def replace_config(path: Path, devices: list[tuple[str, str, str]]) -> None:
    """Atomic replace by rename, as deploy tools and editors with backups do."""
    temporary = path.with_name(f".{path.name}.tmp")
    write_config(temporary, devices)
    os.rename(temporary, path)


@dataclass(frozen=True)
class Resources:
    """What one process holds, from /proc."""

    fds: int
    threads: int
    sockets: int

    @classmethod
    def of(cls, pid: int) -> Resources:
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = 0
        for fd in fds:
            with contextlib.suppress(FileNotFoundError):
                sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        return cls(len(fds), len(os.listdir(f"/proc/{pid}/task")), sockets)


def copy_example(examples: Path, name: str, target: Path) -> Path:
    shutil.copy(examples / name, target)
    os.chmod(target, 0o644)
    return target
