"""List and watch queries: which objects a request selects, at which resourceVersion, in
which page, and the watch event stream.

Semantics of API Concepts ("Resource versions", "Retrieving large results sets in chunks",
"Efficient detection of changes", "Watch bookmarks", "Streaming lists"):

* list: `resourceVersion` unset = most recent; "0" = any (served current); N = not older
  than N (waits up to 3 s for N, then 504); with `resourceVersionMatch=Exact`, the state at
  exactly N (410 Expired if compacted). `limit` pages through one consistent snapshot;
  `continue` tokens (base64 JSON like upstream's: `{"v","rv","start"}`) resume it; a token
  older than the history window answers 410 Expired with an "inconsistent" token (rv -1)
  that continues at the latest revision. `remainingItemCount` only without selectors.
* watch: unset or "0" resourceVersion starts with ADDED events for every object;
  N resumes after N (a compacted N is an ERROR event with a 410 Expired Status);
  `sendInitialEvents=true` sends the state then a BOOKMARK annotated
  `k8s.io/initial-events-end`; with `allowWatchBookmarks`, a BOOKMARK every bookmark
  interval and 2 s before `timeoutSeconds` ends the watch. An object that stops matching a
  selector is a DELETED event, one that starts matching an ADDED event (the watch cache's
  rule).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from apiserver_standin import errors
from apiserver_standin.resources import ResourceType
from apiserver_standin.selectors import Matcher, matchers
from apiserver_standin.store import Event, Key, Store

JSON = dict[str, Any]
MIN_REQUEST_TIMEOUT = 1800  # kube-apiserver --min-request-timeout: watches last 1800-3600 s

_EXPIRED_LIST = "The resourceVersion for the provided list is too old."
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


@dataclass(frozen=True)
class Query:
    """The list/watch options of one request, parsed and validated."""

    rt: ResourceType
    namespace: str | None  # None: every namespace
    labels: Matcher
    fields: Matcher
    resource_version: str = ""
    match: str = ""  # resourceVersionMatch
    limit: int = 0
    continue_token: str = ""
    timeout: float | None = None
    bookmarks: bool = False
    initial_events: bool | None = None
    selective: bool = False
    """A label or field selector was given (then no remainingItemCount, as upstream)."""

    @classmethod
    def parse(cls, rt: ResourceType, namespace: str | None, params: dict[str, str]) -> Query:
        labels, fields = matchers(
            params.get("labelSelector", ""), params.get("fieldSelector", ""), rt.field_names()
        )
        try:
            limit = int(params.get("limit") or 0)
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        except ValueError as error:
            raise errors.bad_request(f"invalid query parameter: {error}") from None
        initial = params.get("sendInitialEvents")
        return cls(
            rt,
            namespace,
            labels,
            fields,
            params.get("resourceVersion", ""),
            params.get("resourceVersionMatch", ""),
            max(limit, 0),
            params.get("continue", ""),
            timeout,
            _true(params.get("allowWatchBookmarks", "")),
            None if initial is None else _true(initial),
            bool(params.get("labelSelector") or params.get("fieldSelector")),
        )

    def selects(self, obj: JSON) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(self.rt.selectable(obj))


def _true(value: str) -> bool:
    return value in ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool


def _rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise errors.bad_request(f"invalid resource version: {text!r}") from None
    if value < 0:
        raise errors.bad_request(f"invalid resource version: {text!r}")
    return value


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if raw.get("v") == "meta.k8s.io/v1":
            return int(raw["rv"]), str(raw["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        pass
    raise errors.bad_request(
        "continue key is not valid: incorrect encoded start resourceVersion "
        "(version meta.k8s.io/v1)"
    )


def _sort_key(key: Key) -> str:
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


async def list_objects(store: Store, query: Query) -> JSON:
    rt = query.rt
    start = ""
    if query.continue_token:
        if query.resource_version not in ("", "0"):
            raise errors.bad_request(
                "specifying resource version is not allowed when using continue"
            )
        rv, start = decode_continue(query.continue_token)
        if rv == -1:
            rv = store.rv
        elif rv < store.floor:
            raise errors.expired(_CONTINUE_EXPIRED, continue_token=encode_continue(-1, start))
    elif query.match == "Exact":
        rv = _rv(query.resource_version)
        await store.wait_for(rv)
        if rv < store.floor:
            raise errors.expired(_EXPIRED_LIST)
    else:
        if query.resource_version not in ("", "0"):
            await store.wait_for(_rv(query.resource_version))
        rv = store.rv
    state = store.snapshot(rt.qualified, rv)
    assert state is not None  # rv >= floor was checked (or rv is current)
    ordered = sorted(((_sort_key(k), v) for k, v in state.items()), key=lambda kv: kv[0])
    matching = [(k, v) for k, v in ordered if k >= start and query.selects(v)]
    page = matching[: query.limit] if query.limit else matching
    metadata: JSON = {"resourceVersion": str(rv)}
    if query.limit and len(matching) > len(page):
        metadata["continue"] = encode_continue(rv, page[-1][0] + "\x00")
        if not query.selective:
            metadata["remainingItemCount"] = len(matching) - len(page)
    return {
        "kind": rt.list_kind,
        "apiVersion": rt.api_version,
        "metadata": metadata,
        "items": [v for _, v in page],
    }


# -- watch -----------------------------------------------------------------------------


def event_line(kind: str, obj: JSON) -> bytes:
    """One watch event: a JSON object on its own line (one chunk of the stream)."""
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def _translate(query: Query, event: Event) -> tuple[str, JSON] | None:
    """cacheWatcher.convertToWatchEvent: selector transitions become ADDED / DELETED."""
    now_passes = event.type != "DELETED" and query.selects(event.obj)
    before_passes = event.prev is not None and query.selects(event.prev)
    if now_passes:
        return ("MODIFIED" if before_passes else "ADDED"), event.obj
    if before_passes:
        if event.type == "DELETED":
            return "DELETED", event.obj
        assert event.prev is not None
        gone = {
            **event.prev,
            "metadata": {**event.prev["metadata"], "resourceVersion": str(event.rv)},
        }
        return "DELETED", gone
    return None


def bookmark(rt: ResourceType, rv: int, *, initial_events_end: bool = False) -> JSON:
    metadata: JSON = {"resourceVersion": str(rv)}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": metadata, **rt.empty}


async def watch_stream(
    store: Store, query: Query, *, bookmark_interval: float
) -> AsyncIterator[bytes]:
    """The lines of one watch response, until its timeout or until the caller closes it."""
    loop = asyncio.get_running_loop()
    timeout = query.timeout
    if timeout is None:
        timeout = MIN_REQUEST_TIMEOUT * (1 + random.random())
    deadline = loop.time() + timeout
    lines, since = await _beginning(store, query)
    for line in lines:
        yield line
    if since is None:
        return
    backlog, queue = store.subscribe(query.rt.qualified, since)
    try:
        for event in backlog:
            if (translated := _translate(query, event)) is not None:
                yield event_line(*translated)
        async for line in _follow(store, query, queue, deadline, bookmark_interval):
            yield line
    finally:
        store.unsubscribe(queue)


async def _beginning(store: Store, query: Query) -> tuple[list[bytes], int | None]:
    """The first lines of a watch, and the revision it follows from (None: it ends)."""
    text = query.resource_version
    since = 0
    if text not in ("", "0"):
        since = _rv(text)
        try:
            await store.wait_for(since)
        except errors.ApiError as error:
            return [event_line("ERROR", error.status())], None
    if query.initial_events or (text in ("", "0") and query.initial_events is None):
        state = store.current(query.rt.qualified)
        ordered = sorted(((_sort_key(k), v) for k, v in state.items()), key=lambda kv: kv[0])
        lines = [event_line("ADDED", obj) for _, obj in ordered if query.selects(obj)]
        if query.initial_events and query.bookmarks:
            end = bookmark(query.rt, store.rv, initial_events_end=True)
            lines.append(event_line("BOOKMARK", end))
        return lines, store.rv
    if text in ("", "0"):
        return [], store.rv
    if since < store.floor:
        message = f"too old resource version: {since} ({store.floor})"
        return [event_line("ERROR", errors.expired(message).status())], None
    return [], since


async def _follow(
    store: Store, query: Query, queue: asyncio.Queue[Event], deadline: float, interval: float
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()

    def next_bookmark() -> float:
        # Periodic, and one 2 s before the deadline (cacheWatcher.nextBookmarkTime).
        at = min(loop.time() + interval, deadline - 2)
        return at if at > loop.time() else deadline + 1

    bookmark_at = next_bookmark() if query.bookmarks else deadline + 1
    while (now := loop.time()) < deadline:
        try:
            async with asyncio.timeout(min(deadline, bookmark_at) - now):
                event = await queue.get()
        except TimeoutError:
            if loop.time() >= bookmark_at and queue.empty():
                yield event_line("BOOKMARK", bookmark(query.rt, store.rv))
                bookmark_at = next_bookmark()
            continue
        if (translated := _translate(query, event)) is not None:
            yield event_line(*translated)
