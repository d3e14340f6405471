"""`ApiServer`: the stand-in's lifecycle and its test hooks (recorded requests, injected
failures, direct reads and writes, compaction, a kubeconfig file).

Wires the store, the registry, the REST routes and the HTTP server; owns nothing else.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apiserver_standin import errors
from apiserver_standin.http_server import HttpServer, Request, Response, Stream
from apiserver_standin.registry import Registry
from apiserver_standin.resources import by_plural
from apiserver_standin.routes import Api, error_response
from apiserver_standin.store import Store

logger = logging.getLogger(__name__)
JSON = dict[str, Any]


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    time: float
    """time.monotonic() when the request arrived."""
    status: int


@dataclass
class _Failure:
    method: str
    pattern: str
    status: int
    remaining: int
    retry_after: float | None

    def matches(self, request: Request) -> bool:
        return self.method in ("*", request.method) and fnmatch.fnmatchcase(
            request.path, self.pattern
        )


@dataclass
class _Listener:
    host: str = "127.0.0.1"
    port: int = 0
    url: str = ""
    http: HttpServer | None = field(default=None, repr=False)


class ApiServer:
    """A Kubernetes API server stand-in over real HTTP, with in-memory storage.

    Data and the resourceVersion counter live as long as this object, across `stop()` and
    `start()`/`restart()`.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        watch_window: int = 1000,
        bookmark_interval: float = 60.0,
    ) -> None:
        self.token = token
        self.store = Store(watch_window)
        self.registry = Registry(self.store)
        self.api = Api(self.registry, token=token, bookmark_interval=bookmark_interval)
        self.requests: list[RequestRecord] = []
        self._failures: list[_Failure] = []
        self._listener = _Listener()

    @property
    def url(self) -> str:
        return self._listener.url

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0: a free port) and return the base URL."""
        if self._listener.http is not None:
            raise RuntimeError(f"the API server stand-in already serves {self.url}")
        http = HttpServer(self._handle)
        bound_host, bound_port = await http.start(host, port)
        self._listener = _Listener(host, bound_port, f"http://{bound_host}:{bound_port}", http)
        logger.info("API server stand-in listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Close the listener and every connection, watches included (like a crash)."""
        if self._listener.http is not None:
            await self._listener.http.stop()
            self._listener.http = None
            logger.info("API server stand-in on %s stopped", self.url)

    async def restart(self) -> None:
        """Stop, then serve again on the same port; data and resourceVersions are kept."""
        host, port = self._listener.host, self._listener.port
        await self.stop()
        await self.start(host, port)

    # -- request path --------------------------------------------------------------

    async def _handle(self, request: Request) -> Response | Stream:
        arrived = time.monotonic()
        injected = self._injected(request)
        response = injected if injected is not None else await self.api.handle(request)
        self.requests.append(
            RequestRecord(
                request.method, request.path, dict(request.query), arrived, response.status
            )
        )
        return response

    def _injected(self, request: Request) -> Response | None:
        try:
            self.api.authenticate(request)
        except errors.ApiError:
            return None  # authentication comes first; Api.handle answers 401
        for failure in self._failures:
            if failure.matches(request):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return error_response(errors.injected(failure.status, failure.retry_after))
        return None

    # -- test hooks ----------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `count` requests matching `method` ("*": any) and `path_pattern`
        (an fnmatch glob on the path, `*` crossing "/") with `status` and upstream's Status
        for it; `retry_after` adds a Retry-After header and details.retryAfterSeconds."""
        self._failures.append(_Failure(method.upper(), path_pattern, status, count, retry_after))

    def compact(self) -> None:
        """Forget all past events: resuming a watch or list from an older RV gets 410."""
        self.store.compact()

    def objects(self, plural: str) -> list[JSON]:
        """Copies of the stored objects of `plural` (`nodes`, `resourceclaims`, ...)."""
        rt = by_plural(plural)
        current = self.store.current(rt.qualified)
        return [copy.deepcopy(current[k]) for k in sorted(current)]

    def put_object(self, obj: JSON) -> JSON:
        """Create or replace an object as given (status included), bypassing every rule
        but identity: fills uid, creationTimestamp and a new resourceVersion; watchers see
        ADDED or MODIFIED."""
        return copy.deepcopy(self.registry.put(obj).obj)

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig for this server (with the bearer token, if any) to `path`."""
        if not self.url:
            raise RuntimeError("start() the API server stand-in before writing a kubeconfig")
        user: JSON = {"token": self.token} if self.token is not None else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "apiserver-standin",
            "clusters": [{"name": "apiserver-standin", "cluster": {"server": self.url}}],
            "users": [{"name": "apiserver-standin", "user": user}],
            "contexts": [
                {
                    "name": "apiserver-standin",
                    "context": {
                        "cluster": "apiserver-standin",
                        "user": "apiserver-standin",
                        "namespace": "default",
                    },
                }
            ],
        }
        path = Path(path)
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML: kubectl reads it
        path.chmod(0o600)
        return path
