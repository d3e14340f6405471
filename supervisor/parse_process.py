"""Config parsing in a child process: bounded in time and memory, never on the event loop.

Whoever can write the config can hand the parser a file that takes minutes of CPU
(a merge-key bomb) or gigabytes of memory. A thread would keep the event loop free
but could not stop such a parse, so `parse_config` runs in a long-lived child process
with an address-space limit, and a parse that misses its deadline is killed (and the
child replaced) and reported as a `ConfigError`. Owns the child's lifecycle and the
request/response protocol; what a valid config is stays `config`'s job.

The child is forked (not spawned: re-executing the interpreter fails where the
supervisor's user may not exec it, and costs 100+ ms of imports). The first child is
forked at start-up, before gRPC runs any thread; a replacement for a killed child is
forked from the running process, and only ever runs the parser, which needs no lock
another thread could hold (and a child that hung anyway would meet the deadline).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import threading
import time
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
MEMORY_LIMIT = 300 * 1024 * 1024
"""The child's address space, which bounds its RSS; parsing 10,000 devices needs ~60 MB."""


@dataclass(frozen=True, slots=True)
class _Request:
    data: bytes
    source: str
    default_domain: str
    node_name: str | None


def _serve(conn: Connection, memory_limit: int) -> None:
    """The child: parse each request, answer with the config or the problems."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        try:
            request: _Request = conn.recv()
        except (EOFError, OSError):  # the supervisor is gone
            return
        conn.send(_answer(conn, request, memory_limit))


def _answer(conn: Connection, request: _Request, memory_limit: int) -> tuple[str, Any]:
    def located_next(problems: list[Problem]) -> None:
        # Finding line numbers re-parses the file slowly: send what is known first,
        # so that a deadline during that step still names every problem.
        conn.send(("unlocated", problems))

    try:
        config = parse_config(
            request.data,
            source=request.source,
            default_domain=request.default_domain,
            node_name=request.node_name,
            before_locating=located_next,
        )
    except ConfigError as error:
        return "error", error.problems
    except (MemoryError, SystemError):  # C extensions report a failed allocation as either
        limit = memory_limit // (1024 * 1024)
        return "error", [_problem(request.source, f"needs more than {limit} MB to parse")]
    except Exception as error:  # a parser bug must not take the supervisor down
        return "error", [_problem(request.source, f"cannot be parsed ({type(error).__name__})")]
    return "ok", config


def _problem(source: str, message: str) -> Problem:
    return Problem(source, None, "", f"{message}; refusing it")


class ConfigParser:
    """Parses config bytes in a child process; one parse at a time, any number of callers."""

    def __init__(
        self, *, deadline: float = PARSE_DEADLINE, memory_limit: int = MEMORY_LIMIT
    ) -> None:
        self.deadline = deadline
        self.memory_limit = memory_limit
        self._context = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def parse(
        self,
        data: bytes,
        *,
        source: str,
        default_domain: str = DEFAULT_DOMAIN,
        node_name: str | None = None,
    ) -> Config:
        """The config, or ConfigError within `deadline` seconds, whatever `data` holds.

        Blocks the calling thread; `parse_async` runs it off the event loop.
        """
        with self._lock:
            conn = self._connection()
            conn.send(_Request(data, source, default_domain, node_name))
            return self._wait(conn, source, time.monotonic() + self.deadline)

    async def parse_async(
        self,
        data: bytes,
        *,
        source: str,
        default_domain: str = DEFAULT_DOMAIN,
        node_name: str | None = None,
    ) -> Config:
        if self._executor is None:  # one thread, kept: the thread count stays constant
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="config-parse")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            lambda: self.parse(
                data, source=source, default_domain=default_domain, node_name=node_name
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
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                self._stop_child()
                if unlocated is not None:
                    raise ConfigError(unlocated)
                raise ConfigError(
                    [_problem(source, f"took longer than {self.deadline:g} s to parse "
                              "(a merge-key or alias bomb?)")]
                )  # fmt: skip
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                code = self._stop_child()
                raise ConfigError(
                    [_problem(source, f"made the parser process exit (code {code}); most "
                              f"likely it needs more than {self.memory_limit >> 20} MB")]
                ) from None  # fmt: skip
            if kind == "ok":
                config: Config = payload
                return config
            if kind == "unlocated":
                unlocated = payload
                continue
            raise ConfigError(payload)

    def _connection(self) -> Connection:
        if self._conn is None or self._process is None or not self._process.is_alive():
            self._stop_child()
            ours, theirs = self._context.Pipe()
            process = self._context.Process(
                target=_serve,
                args=(theirs, self.memory_limit),
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
