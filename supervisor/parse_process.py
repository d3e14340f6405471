"""Config parsing in a child process: bounded in time and memory, never on the event loop.

Whoever can write the config can hand the parser a file that takes minutes of CPU
(a merge-key bomb) or gigabytes of memory. A thread would keep the event loop free
but could not stop such a parse, so `parse_config` runs in a long-lived child process
with an address-space limit, and a parse that misses its deadline is killed (and the
child replaced) and reported as a `ConfigError`. Owns the child's lifecycle and the
request/response protocol; what a valid config is stays `config`'s job.

A parse that outlives its deadline is interrupted inside the child (an interval
timer, whose handler runs between Python bytecodes, where ruamel's constructor spends
such a parse), so the child lives on. Only a child that dies, or does not answer even
a second later, is killed and replaced.

A child is forked when only Python's own threads run (at start-up, and in the CLI):
a fork costs milliseconds where re-executing the interpreter costs 100+ ms of imports.
Once native threads run that Python does not know of (gRPC's, after the first server
or channel), the child is spawned afresh instead: such a fork inherits locks those
threads hold, and gRPC skips its fork handlers while its threads are busy (seen as a
parse that never answered, in a test process that had used gRPC before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from supervisor.config import DEFAULT_DOMAIN, Config, parse_config
from supervisor.errors import ConfigError, Problem
from supervisor.gcpause import gc_paused

logger = logging.getLogger(__name__)

PARSE_DEADLINE = 2.0
"""Seconds a parse may take; a 10,000-device file takes about 0.1 s."""
BACKSTOP = 1.0
"""Seconds past the deadline after which a child that has not answered is killed."""
MEMORY_LIMIT = 300 * 1024 * 1024
"""How far the child's address space may grow past what it starts with, which bounds its
RSS; parsing 10,000 devices needs ~60 MB. On top of the start, not absolute: a child forked
from a process that ran threads inherits their reserved stacks and malloc arenas (64 MB of
address space each), which a fixed cap would already exceed."""


@dataclass(frozen=True, slots=True)
class _Request:
    data: bytes
    source: str
    default_domain: str
    node_name: str | None
    deadline: float
    fleet: bool = False


class _OutOfTimeError(Exception):
    pass


_armed = False
"""True while a parse runs: a timer signal handled after it ended is ignored."""


def _out_of_time(signum: int, frame: object) -> None:
    if _armed:
        raise _OutOfTimeError


def _serve(conn: Connection, memory_limit: int, parents: Connection | None = None) -> None:
    """The child: parse each request, answer with the config or the problems.

    `parents` is the supervisor's end of the pipe, which a forked child inherits: closed
    first, so that the supervisor's death (even by SIGKILL) ends the pipe and this child
    with it, instead of leaving it waiting forever on a pipe it holds open itself."""
    if parents is not None:
        parents.close()
    cap = _address_space() + memory_limit
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    signal.signal(signal.SIGALRM, _out_of_time)
    while True:
        try:
            request: _Request = conn.recv()
        except (EOFError, OSError):  # the supervisor is gone
            return
        conn.send(_answer(conn, request, memory_limit))


def _address_space() -> int:
    """This process's address space now, in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _answer(conn: Connection, request: _Request, memory_limit: int) -> tuple[str, Any]:
    def located_next(problems: list[Problem]) -> None:
        # Finding line numbers re-parses the file slowly: send what is known first,
        # so that a deadline during that step still names every problem.
        with _alarm_blocked():  # an answer cut in half would corrupt the pipe
            conn.send(("unlocated", problems))

    global _armed  # noqa: PLW0603 -- the signal handler's only way to know
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, request.deadline)
    try:
        config = parse_config(
            request.data,
            source=request.source,
            default_domain=request.default_domain,
            node_name=request.node_name,
            fleet=request.fleet,
            before_locating=located_next,
        )
    except _OutOfTimeError:
        return "timeout", None
    except ConfigError as error:
        return "error", error.problems
    except (MemoryError, SystemError):  # C extensions report a failed allocation as either
        limit = memory_limit // (1024 * 1024)
        return "error", [_problem(request.source, f"needs more than {limit} MB to parse")]
    except Exception as error:  # a parser bug must not take the supervisor down
        return "error", [_problem(request.source, f"cannot be parsed ({type(error).__name__})")]
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
    return "ok", config


@contextlib.contextmanager
def _alarm_blocked() -> Iterator[None]:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def only_python_threads() -> bool:
    """No native thread runs beside Python's own, so a fork is safe; see the module docstring.

    Every `threading` thread is one OS thread, so more OS threads than that are native
    ones. Where /proc is missing the answer is no (spawning is always safe).
    """
    try:
        os_threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return False
    return os_threads <= threading.active_count()


def _problem(source: str, message: str) -> Problem:
    return Problem(source, None, "", f"{message}; refusing it")


class ConfigParser:
    """Parses config bytes in a child process; one parse at a time, any number of callers."""

    def __init__(
        self, *, deadline: float = PARSE_DEADLINE, memory_limit: int = MEMORY_LIMIT
    ) -> None:
        self.deadline = deadline
        self.memory_limit = memory_limit
        self._fork = multiprocessing.get_context("fork")
        self._spawn = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def child_pid(self) -> int | None:
        """The parser child's pid, once one runs."""
        return None if self._process is None else self._process.pid

    def parse(
        self,
        data: bytes,
        *,
        source: str,
        default_domain: str = DEFAULT_DOMAIN,
        node_name: str | None = None,
        fleet: bool = False,
    ) -> Config:
        """The config, or ConfigError within `deadline` seconds, whatever `data` holds.

        Blocks the calling thread; `parse_async` runs it off the event loop.
        """
        with self._lock:
            conn = self._connection()
            try:
                conn.send(_Request(data, source, default_domain, node_name, self.deadline, fleet))
            except OSError:  # the child died while idle
                raise self._child_died(source) from None
            return self._wait(conn, source, time.monotonic() + self.deadline + BACKSTOP)

    async def parse_async(
        self,
        data: bytes,
        *,
        source: str,
        default_domain: str = DEFAULT_DOMAIN,
        node_name: str | None = None,
        fleet: bool = False,
    ) -> Config:
        if self._executor is None:  # one thread, kept: the thread count stays constant
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="config-parse")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            lambda: self.parse(
                data,
                source=source,
                default_domain=default_domain,
                node_name=node_name,
                fleet=fleet,
            ),
        )

    def close(self) -> None:
        with self._lock:
            self._stop_child()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @gc_paused  # unpickling a 10,000-device config would trigger full collections
    def _wait(self, conn: Connection, source: str, deadline: float) -> Config:
        unlocated: list[Problem] | None = None
        payload: Any
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                self._stop_child()  # stuck outside Python code: replace it
                kind, payload = "timeout", ()
            else:
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    raise self._child_died(source) from None
            if kind == "timeout":
                if unlocated is not None:
                    raise ConfigError(unlocated)
                raise ConfigError(
                    [_problem(source, f"took longer than {self.deadline:g} s to parse "
                              "(a merge-key or alias bomb?)")]
                )  # fmt: skip
            if kind == "ok":
                config: Config = payload
                return config
            if kind == "unlocated":
                unlocated = payload
                continue
            raise ConfigError(payload)

    def _child_died(self, source: str) -> ConfigError:
        code = self._stop_child()
        return ConfigError(
            [_problem(source, f"made the parser process exit (code {code}); most likely "
                      f"it needs more than {self.memory_limit >> 20} MB")]
        )  # fmt: skip

    def _connection(self) -> Connection:
        if self._conn is None or self._process is None or not self._process.is_alive():
            self._stop_child()
            context = self._fork if only_python_threads() else self._spawn
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(theirs, self.memory_limit, ours if context is self._fork else None),
                name="widget-config-parser",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._process, self._conn = process, ours
        return self._conn

    def _stop_child(self) -> int | None:
        """Kill the child (a parse may be running in it); its exit code, if it had one."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        if process.is_alive():
            process.kill()
        process.join(5)
        return process.exitcode
