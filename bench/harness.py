"""What every scenario needs: the real supervisor as a child process, configs, /proc readings.

Owns starting and always stopping child processes, writing configs the ways an operator
(or kubelet's ConfigMap volume) does, reading CPU time and RSS from /proc, and
percentiles. Scenarios (`bench.scenarios`) decide what to measure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubelet_standin import KubeletStandIn

DOMAIN = "ska-sdp.org"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Device = tuple[str, str, str]
"""(type, model, path) of one config entry."""


# -- configs -----------------------------------------------------------------------


def spread(resources: int, devices: int, *, tag: str = "") -> list[Device]:
    """`devices` entries spread evenly over `resources` resources ``bench-m<i>``."""
    return [
        ("bench", f"m{i % resources}", f"/dev/bench{tag}{i % resources}-{i // resources}")
        for i in range(max(devices, resources))
    ]


def resource_names(devices: Sequence[Device]) -> list[str]:
    return sorted({f"{DOMAIN}/{t}-{m}" for t, m, _ in devices})


def config_text(devices: Sequence[Device]) -> str:
    lines = ["devices:"]
    for type_, model, path in devices:
        lines += [f"- type: {type_}", f"  model: {model}", f"  device: {path}"]
    return "\n".join(lines) + "\n"


def write_in_place(config_dir: Path, devices: Sequence[Device]) -> Path:
    """An editor saving in place: same inode, truncated and rewritten."""
    target = config_dir / "config.yaml"
    with open(target, "w") as handle:
        handle.write(config_text(devices))
    return target


def write_rename(config_dir: Path, devices: Sequence[Device]) -> Path:
    """An atomic save: write a temporary file, rename it over the config."""
    target = config_dir / "config.yaml"
    temporary = config_dir / ".config.yaml.tmp"
    temporary.write_text(config_text(devices))
    os.rename(temporary, target)
    return target


def write_configmap(config_dir: Path, devices: Sequence[Device]) -> Path:
    """What kubelet does to a ConfigMap volume: a new timestamped dir, then swap ``..data``."""
    stamp = f"..{time.time_ns()}"
    (config_dir / stamp).mkdir()
    (config_dir / stamp / "config.yaml").write_text(config_text(devices))
    data = config_dir / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    os.symlink(stamp, config_dir / "..data_tmp")
    os.rename(config_dir / "..data_tmp", data)
    if not (config_dir / "config.yaml").is_symlink():
        os.symlink("..data/config.yaml", config_dir / "config.yaml")
    if old is not None:
        shutil.rmtree(config_dir / old)
    return config_dir / "config.yaml"


WRITERS = {"in-place": write_in_place, "rename": write_rename, "configmap": write_configmap}


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A short temp dir (unix socket paths must fit in 107 bytes), always removed."""
    path = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))
    try:
        (path / "etc").mkdir()
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`, from VmRSS in /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p50: fraction 0.5); exact for small sample counts."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- the supervisor process ------------------------------------------------------------


@dataclass
class Child:
    """A child process whose combined output is kept (the last lines) for error reports."""

    process: asyncio.subprocess.Process
    started: float
    tail: collections.deque[str]
    reader: asyncio.Task[None]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return "\n".join(self.tail)

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise RuntimeError(
                f"child exited with {self.process.returncode}; last lines:\n{self.log()}"
            )


async def _read_lines(process: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        tail.append(raw.decode(errors="replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def child(*args: str) -> AsyncIterator[Child]:
    """Run `python args...`; on exit SIGTERM it, wait, and kill it if it hangs."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=40)
    reader = asyncio.create_task(_read_lines(process, tail), name=f"bench-reader:{process.pid}")
    try:
        yield Child(process, started, tail, reader)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_TIMEOUT):
                await reader


def supervisor_args(config: Path, plugin_dir: Path) -> list[str]:
    """Defaults as on a node, but nothing outside the scratch dir: the pod-resources
    socket defaults to ``<plugin dir>/../pod-resources/``, and CDI specs go to the same
    scratch dir (none are written for the benchmark's configs anyway)."""
    return [
        "-m", "supervisor", "run", "--config", str(config), "--plugin-dir", str(plugin_dir),
        "--metrics-address", "127.0.0.1:0", "--log-level", "info",
        "--cdi-dir", str(plugin_dir.parent / "cdi"),
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def kubelet_standin(plugin_dir: Path) -> AsyncIterator[KubeletStandIn]:
    kubelet = KubeletStandIn(plugin_dir)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()


async def wait_registered(
    kubelet: KubeletStandIn, names: Sequence[str], proc: Child, timeout: float = START_TIMEOUT
) -> None:
    """`KubeletStandIn.wait_registered`, failing early (with the log) if the child died."""
    waiting = asyncio.create_task(kubelet.wait_registered(names, timeout=timeout))
    exited = asyncio.create_task(proc.process.wait())
    try:
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await exited
    if not waiting.done():
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        proc.check_alive()
    try:
        waiting.result()
    except TimeoutError:
        raise RuntimeError(f"not registered within {timeout} s; log:\n{proc.log()}") from None
