"""Test helpers: the real widget-supervisor as a child process, and small HTTP/file tools."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import stat
import sys
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

_METRICS_LINE = re.compile(r"metrics on http://([^:]+):(\d+)/metrics")


class SupervisorProcess:
    """`python -m supervisor run ...` with its stderr collected line by line."""

    def __init__(self, config: Path, plugin_dir: Path, *extra: str) -> None:
        self.args = [
            sys.executable, "-m", "supervisor", "run",
            "--config", str(config), "--plugin-dir", str(plugin_dir),
            "--metrics-address", "127.0.0.1:0", "--log-level", "debug", *extra,
        ]  # fmt: skip
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()
        self.metrics_url = ""

    async def start(self, *, wait_for_metrics: bool = True) -> SupervisorProcess:
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        if wait_for_metrics:
            line = await self.wait_for_log(_METRICS_LINE.pattern)
            match = _METRICS_LINE.search(line)
            assert match is not None
            self.metrics_url = f"http://{match[1]}:{match[2]}"
        return self

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
        self._new_line.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_log(self, pattern: str, *, timeout: float = 10.0, after: int = 0) -> str:
        """The first line (from index `after`) matching `pattern`; fails with the whole log."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines[after:]:
                        if regex.search(line):
                            return line
                    if self.process is not None and self.process.returncode is not None:
                        break
                    self._new_line.clear()
                    await self._new_line.wait()
        except TimeoutError:
            pass
        raise AssertionError(f"no log line matches {pattern!r}; log:\n{self.output}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.signal(signal.SIGTERM)
        try:
            return await self.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise

    def metrics(self) -> str:
        return http_get(self.metrics_url + "/metrics")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None if absent."""
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if found == labels:
            return float(match[3])
    return None


def write_config(path: Path, devices: Sequence[tuple[str, str, str]], domain: str = "") -> None:
    """Write a config file in place (same inode), as an editor saving in place would."""
    lines = [f"domain: {domain}"] if domain else []
    lines.append("devices:")
    for type_, model, device in devices:
        lines += [f"- type: {type_}", f"  model: {model}", f"  device: {device}"]
    text = "\n".join(lines) + "\n"
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o644)


def sockets_in(directory: Path) -> set[str]:
    with contextlib.suppress(FileNotFoundError):
        return {
            e.name for e in os.scandir(directory)
            if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode)
        }  # fmt: skip
    return set()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `check()` holds (polling, for state only visible over HTTP)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
