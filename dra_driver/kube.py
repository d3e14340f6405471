"""Access to the Kubernetes API for DRA mode, through lightkube.

Why lightkube (and not kubernetes_asyncio): an asyncio client with typed signatures,
watches that resume from the last resourceVersion, server-side apply and a small import
(kubernetes_asyncio's generated package costs ~100 MB of RSS and seconds of import on a
node agent). The resource.k8s.io objects are used as generic (dict) resources, so a field
newer than the installed models (e.g. ``allowMultipleAllocations``) is never dropped.

Owns the client's construction (``--kubeconfig``, else the pod's service account, else
``$KUBECONFIG``/``~/.kube/config``), the resource types, and how API errors are read
(retryable or not, how long to wait). Knows nothing of slices or claims.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.client import FieldSelector, LabelSelector
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

logger = logging.getLogger(__name__)

FIELD_MANAGER = "widget-supervisor"

ResourceSlice = create_global_resource("resource.k8s.io", "v1", "ResourceSlice", "resourceslices")
ResourceClaim = create_namespaced_resource(
    "resource.k8s.io", "v1", "ResourceClaim", "resourceclaims"
)
DeviceClass = create_global_resource("resource.k8s.io", "v1", "DeviceClass", "deviceclasses")


def plain(obj: object) -> dict[str, Any]:
    """A generic resource as the API server's JSON (it is a dict already)."""
    assert isinstance(obj, dict), type(obj)
    return dict(obj)


CONFLICT = 409
GONE = 410


def make_client(kubeconfig: Path | None = None) -> AsyncClient:
    config = KubeConfig.from_file(kubeconfig) if kubeconfig is not None else KubeConfig.from_env()
    return AsyncClient(config=config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(10.0))


def status_code(error: BaseException) -> int | None:
    """The HTTP status of an API error; None for a connection failure or timeout."""
    if isinstance(error, ApiError):
        code = error.status.code
        return int(code) if code is not None else None
    return None


def describe(error: BaseException) -> str:
    """One line for a log or /readyz: what the API server said, or why it could not."""
    if isinstance(error, ApiError):
        return f"{error.status.code} {error.status.reason}: {error.status.message}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


API_ERRORS = (httpx2.HTTPError, OSError)
"""What a request to the API server can raise that is not a bug of ours."""


async def follow(
    client: AsyncClient,
    resource: Any,
    *,
    on_list: Callable[[list[Any]], None],
    on_event: Callable[[str, Any], None],
    on_error: Callable[[BaseException], None],
    namespace: str | None = None,
    labels: LabelSelector | None = None,
    fields: FieldSelector | None = None,
) -> None:
    """Keep a view of `resource`, as an informer does, until cancelled: list it (every
    object to `on_list`), then watch from that list's resourceVersion (each event to
    `on_event`). A watch that expires (410) lists again at once; any other failure goes
    to `on_error` and is retried with backoff; a watch that ends is resumed by lightkube."""
    backoff = Backoff()
    while True:
        try:
            listing = client.list(resource, namespace=namespace, labels=labels, fields=fields)
            on_list([obj async for obj in listing])
            backoff.reset()
            async for kind, obj in client.watch(
                resource, namespace=namespace, labels=labels, fields=fields,
                resource_version=listing.resourceVersion,
            ):  # fmt: skip
                on_event(kind, obj)
        except API_ERRORS as error:
            if status_code(error) == GONE:
                logger.info("the watch of %s expired; listing again", resource.__name__)
                continue
            on_error(error)
            await asyncio.sleep(backoff.delay(error))


@dataclass
class Backoff:
    """Exponential backoff with jitter, as client-go's (0.5 s doubling to 30 s); an API
    server's Retry-After (a 429's, or a Status' retryAfterSeconds) wins when given."""

    initial: float = 0.5
    cap: float = 30.0
    _next: float = field(default=0.0, init=False)

    def delay(self, error: BaseException | None = None) -> float:
        after = _retry_after(error)
        self._next = min(self.cap, self._next * 2) if self._next else self.initial
        if after is not None:
            return after
        return self._next * random.uniform(0.8, 1.2)  # jitter, not crypto

    def reset(self) -> None:
        self._next = 0.0


def _retry_after(error: BaseException | None) -> float | None:
    if not isinstance(error, ApiError):
        return None
    details = error.status.details
    if details is not None and details.retryAfterSeconds:
        return float(details.retryAfterSeconds)
    response: httpx2.Response | None = error.response  # None for a watch's ERROR event
    header = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(header) if header else None
    except ValueError:
        return None
