"""Test helpers: the real widget-supervisor as a child process, waiting on a condition with a
deadline, free ports, HTTP GET, metric samples, config files and sockets.

Every test waits through `eventually` (async) or `wait_until` (sync code and fixtures), never
with a bare sleep: both poll a condition until a deadline and fail saying what was awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
WAIT = 15.0
"""Default deadline (seconds) of `eventually` and `wait_until`: generous, as only a failing
test waits that long, on a 2-core machine shared with other work."""

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
        self.env: dict[str, str] | None = None
        """The process's environment (None: this one's)."""
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()
        self.metrics_url = ""

    async def start(self, *, wait_for_metrics: bool = True) -> SupervisorProcess:
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=self.env,
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
        answer = http_get(self.metrics_url + "/metrics")
        assert answer.status == 200, answer
        return answer.text


# -- waiting -------------------------------------------------------------------------


Describe = str | Callable[[], str]
"""What is awaited, for the failure message; a callable is called at the deadline, so that
the message can show the state then."""


def _timed_out(timeout: float, what: Describe, check: object, last: object) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"not true within {timeout} s: {text or check}; last: {last!r}")


async def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = WAIT,
    what: Describe = "",
    every: float = 0.05,
    ignore: tuple[type[Exception], ...] = (),
    thread: bool = False,
) -> T:
    """Poll `check()` until it returns something truthy and return that; fail after
    `timeout` seconds naming `what` (see `Describe`) and the last result. Exceptions in
    `ignore` count as "not yet" (a server not listening yet); any other one fails at once.
    `thread=True` runs the check in a thread, for blocking ones (HTTP) that must not stall
    the servers on this event loop (the kubelet stand-in)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            value = await asyncio.to_thread(check) if thread else check()
        except ignore as error:
            last = error
        else:
            if value:
                return value
            last = value
        if loop.time() >= deadline:
            raise _timed_out(timeout, what, check, last)
        await asyncio.sleep(every)  # the poll interval, not a wait for something to happen


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = WAIT,
    what: Describe = "",
    every: float = 0.05,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """`eventually` for synchronous tests and fixtures: blocks this thread while polling."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except ignore as error:
            last = error
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, check, last)
        time.sleep(every)  # the poll interval, not a wait for something to happen


# -- network -------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nobody listens on now, as the kernel picks one (bind to port 0).

    Only for programs that must be told a port up front (Prometheus, the chart's env): one
    that can bind port 0 itself and report it should, as the supervisor does."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class HTTPAnswer(NamedTuple):
    status: int
    content_type: str
    text: str


def http_get(url: str, *, method: str = "GET", timeout: float = 5.0) -> HTTPAnswer:
    """One HTTP request (GET unless told otherwise); any status is an answer, not an exception
    (4xx/5xx bodies say what was wrong). Connection errors raise OSError."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
            return HTTPAnswer(
                response.status, response.headers["Content-Type"] or "", body.decode()
            )
    except urllib.error.HTTPError as error:
        with error:
            return HTTPAnswer(
                error.code, error.headers["Content-Type"] or "", error.read().decode()
            )


def sample(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly these labels in Prometheus text format
    (parsed by prometheus_client's own parser), or None if there is none."""
    for family in text_string_to_metric_families(metrics_text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


# -- files ---------------------------------------------------------------------------


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
