"""The API server stand-in, driven by the real client the product uses (lightkube's
AsyncClient) and by raw HTTP for exact Status bodies and watch framing.

These tests also document how lightkube behaves against a Kubernetes API server: which
exception it raises for 404/409/410/429, what a watch does on a compacted resourceVersion.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import httpx2
import lightkube
import pytest
from lightkube import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import NodeSpec, NodeStatus, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.resource_v1 import DeviceClassSpec, ResourcePool, ResourceSliceSpec
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.core_v1 import NodeStatus as NodeStatusResource
from lightkube.resources.resource_v1 import DeviceClass, ResourceClaim, ResourceSlice
from lightkube.types import OnErrorAction, OnErrorResult, on_error_retry

from apiserver_standin import ApiServer
from tests.support import eventually

DRIVER = "widget.example.com"


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer(watch_window=100, bookmark_interval=0.2)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(apiserver: ApiServer, tmp_path: Path) -> AsyncIterator[lightkube.AsyncClient]:
    # KubeConfig.from_server() cannot be used: lightkube 1.0.1 then asserts "Missing user".
    config = lightkube.KubeConfig.from_file(apiserver.kubeconfig(tmp_path / "kubeconfig"))
    async with lightkube.AsyncClient(config=config) as kube:
        yield kube


@pytest.fixture
async def raw(apiserver: ApiServer) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=apiserver.url) as http:
        yield http


def meta(obj: Any) -> ObjectMeta:
    assert obj.metadata is not None
    result: ObjectMeta = obj.metadata
    return result


def node(name: str, **labels: str) -> Node:
    return Node(metadata=ObjectMeta(name=name, labels=labels or None))


def node_status(name: str, capacity: dict[str, str]) -> NodeStatusResource:
    return NodeStatusResource(
        metadata=ObjectMeta(name=name),
        status=NodeStatus(capacity=capacity, allocatable=capacity),
    )


def resource_slice(name: str, node_name: str, driver: str = DRIVER) -> ResourceSlice:
    pool = ResourcePool(name=node_name, generation=1, resourceSliceCount=1)
    spec = ResourceSliceSpec(driver=driver, pool=pool, nodeName=node_name)
    return ResourceSlice(metadata=ObjectMeta(name=name), spec=spec)


def status_of(response: httpx2.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


class Watcher:
    """A lightkube watch consumed by a task: (type, name, resourceVersion) as they come."""

    def __init__(self, events: Any) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(events))

    async def _run(self, events: Any) -> None:
        try:
            async for kind, obj in events:
                self.seen.append((kind, meta(obj).name or "", meta(obj).resourceVersion or ""))
        except Exception as error:
            self.error = error

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# -- create, get, list, selectors, pagination ------------------------------------------


async def test_create_get_and_list_with_label_and_field_selectors(
    client: lightkube.AsyncClient,
) -> None:
    created = await client.create(node("n1", pool="a", gpu="yes"))
    await client.create(node("n2", pool="b"))
    await client.create(node("n3"))
    assert meta(created).uid
    assert meta(created).creationTimestamp is not None
    assert meta(created).generation is None  # nodes do not track generation upstream
    assert meta(await client.get(Node, "n1")).resourceVersion == meta(created).resourceVersion

    async def names(**selectors: Any) -> list[str]:
        return [meta(n).name or "" async for n in client.list(Node, **selectors)]

    assert await names() == ["n1", "n2", "n3"]
    assert await names(labels={"pool": "a"}) == ["n1"]
    assert await names(labels={"pool": ("a", "b")}) == ["n1", "n2"]  # pool in (a,b)
    assert await names(labels={"gpu": lightkube.operators.exists()}) == ["n1"]
    assert await names(labels={"pool": lightkube.operators.not_exists()}) == ["n3"]
    assert await names(labels={"pool": lightkube.operators.not_equal("a")}) == ["n2", "n3"]
    assert await names(fields={"metadata.name": "n2"}) == ["n2"]

    for namespace, pod, on in (("default", "p1", "n1"), ("other", "p2", "n2"), ("other", "p3", "")):
        spec = PodSpec(containers=[{"name": "c", "image": "i"}], nodeName=on or None)  # type: ignore[list-item]
        await client.create(Pod(metadata=ObjectMeta(name=pod, namespace=namespace), spec=spec))
    everywhere = [meta(p).name async for p in client.list(Pod, namespace="*")]
    assert everywhere == ["p1", "p2", "p3"]
    assert [meta(p).name async for p in client.list(Pod, namespace="other")] == ["p2", "p3"]
    on_n1 = client.list(Pod, namespace="*", fields={"spec.nodeName": "n1"})
    assert [meta(p).name async for p in on_n1] == ["p1"]
    unscheduled = client.list(Pod, namespace="*", fields={"spec.nodeName": ""})
    assert [meta(p).name async for p in unscheduled] == ["p3"]
    first = await client.get(Pod, "p1", namespace="default")
    assert first.status is not None
    assert first.status.phase == "Pending"


async def test_resource_types_of_dra_and_coordination(client: lightkube.AsyncClient) -> None:
    await client.create(resource_slice("n1-widgets", "n1"))
    await client.create(resource_slice("n2-widgets", "n2"))
    await client.create(resource_slice("n1-other", "n1", driver="other.example.com"))
    by_node = client.list(ResourceSlice, fields={"spec.nodeName": "n1", "spec.driver": DRIVER})
    assert [meta(s).name async for s in by_node] == ["n1-widgets"]
    created = await client.create(
        DeviceClass(metadata=ObjectMeta(name="widget"), spec=DeviceClassSpec())
    )
    assert meta(created).generation == 1
    lease = Lease(
        metadata=ObjectMeta(name="supervisor", namespace="kube-node-lease"),
        spec=LeaseSpec(holderIdentity="me"),
    )
    stored = await client.create(lease)
    assert meta(stored).namespace == "kube-node-lease"
    with pytest.raises(ApiError) as unsupported:
        _ = [s async for s in client.list(ResourceSlice, fields={"spec.pool.name": "x"})]
    assert unsupported.value.status.code == 400
    assert unsupported.value.status.message == "field label not supported: spec.pool.name"


async def test_pagination_is_one_consistent_snapshot(
    client: lightkube.AsyncClient, apiserver: ApiServer, raw: httpx2.AsyncClient
) -> None:
    for i in range(5):
        await client.create(Lease(metadata=ObjectMeta(name=f"l{i}", namespace="default")))
    leases = [meta(x).name async for x in client.list(Lease, namespace="default", chunk_size=2)]
    assert leases == ["l0", "l1", "l2", "l3", "l4"]
    pages = [r for r in apiserver.requests if r.path.endswith("/leases") and r.method == "GET"]
    assert [r.query.get("limit") for r in pages] == ["2", "2", "2"]
    assert ["continue" in r.query for r in pages] == [False, True, True]

    first = (await raw.get("/apis/coordination.k8s.io/v1/leases", params={"limit": 2})).json()
    assert first["kind"] == "LeaseList"
    assert first["apiVersion"] == "coordination.k8s.io/v1"
    assert first["metadata"]["remainingItemCount"] == 3
    await client.create(Lease(metadata=ObjectMeta(name="l00", namespace="default")))
    await client.delete(Lease, "l3", namespace="default")
    rest = await raw.get(
        "/apis/coordination.k8s.io/v1/leases", params={"continue": first["metadata"]["continue"]}
    )
    # The snapshot of the first page: l00 (created since) absent, l3 (deleted since) present.
    assert [i["metadata"]["name"] for i in rest.json()["items"]] == ["l2", "l3", "l4"]
    assert rest.json()["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_a_continue_token_older_than_the_history_is_410_expired(
    client: lightkube.AsyncClient, apiserver: ApiServer, raw: httpx2.AsyncClient
) -> None:
    for name in ("n1", "n2", "n3"):
        await client.create(node(name))
    first = (await raw.get("/api/v1/nodes", params={"limit": 1})).json()
    await client.create(node("n4"))
    apiserver.compact()
    answer = await raw.get("/api/v1/nodes", params={"continue": first["metadata"]["continue"]})
    body = status_of(answer)
    assert answer.status_code == 410
    assert (body["reason"], body["code"]) == ("Expired", 410)
    assert body["message"].startswith("The provided continue parameter is too old")
    # The "inconsistent" token continues at the latest revision, n4 included.
    rest = await raw.get("/api/v1/nodes", params={"continue": body["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest.json()["items"]] == ["n2", "n3", "n4"]
    exact = await raw.get(
        "/api/v1/nodes", params={"resourceVersion": "1", "resourceVersionMatch": "Exact"}
    )
    assert exact.status_code == 410
    assert status_of(exact)["message"] == "The resourceVersion for the provided list is too old."


# -- watch -------------------------------------------------------------------------------


async def test_watch_from_a_resource_version_sends_later_events_in_order(
    client: lightkube.AsyncClient,
) -> None:
    first = await client.create(node("n1"))
    await client.create(node("n2"))
    await client.apply(
        node_status("n1", {"example.com/widget": "2"}), "n1", field_manager="test", force=True
    )
    watcher = Watcher(client.watch(Node, resource_version=meta(first).resourceVersion))
    try:
        await client.delete(Node, "n1")
        await eventually(lambda: len(watcher.seen) >= 3, what=lambda: f"3 events: {watcher.seen}")
    finally:
        await watcher.close()
    assert watcher.seen == [("ADDED", "n2", "2"), ("MODIFIED", "n1", "3"), ("DELETED", "n1", "4")]


async def test_watch_without_resource_version_starts_with_the_current_state(
    client: lightkube.AsyncClient,
) -> None:
    await client.create(node("n1", pool="a"))
    await client.create(node("n2", pool="b"))
    watcher = Watcher(client.watch(Node, labels={"pool": "a"}))
    try:
        await eventually(lambda: watcher.seen, what="the initial ADDED event")
        # Leaving the selector is a DELETED event, entering it an ADDED one.
        await client.patch(Node, "n1", {"metadata": {"labels": {"pool": "c"}}})
        await client.patch(Node, "n2", {"metadata": {"labels": {"pool": "a"}}})
        await eventually(lambda: len(watcher.seen) >= 3, what=lambda: f"{watcher.seen}")
    finally:
        await watcher.close()
    assert [(kind, name) for kind, name, _ in watcher.seen] == [
        ("ADDED", "n1"),
        ("DELETED", "n1"),
        ("ADDED", "n2"),
    ]


async def test_watch_resumes_from_its_last_resource_version_after_a_restart(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    start = meta(await client.create(node("n1"))).resourceVersion

    def retry(error: Exception, count: int) -> OnErrorResult:
        return OnErrorResult(OnErrorAction.RETRY, sleep=0.2)

    watcher = Watcher(client.watch(Node, resource_version=start, on_error=retry))
    try:
        await client.create(node("n2"))
        await eventually(lambda: len(watcher.seen) == 1, what=lambda: f"n2: {watcher.seen}")
        await apiserver.restart()  # the stream breaks; data and resourceVersions are kept
        await client.create(node("n3"))
        await eventually(lambda: len(watcher.seen) == 2, what=lambda: f"n3: {watcher.seen}")
    finally:
        await watcher.close()
    assert watcher.error is None
    assert watcher.seen == [("ADDED", "n2", "2"), ("ADDED", "n3", "3")]
    watches = [r for r in apiserver.requests if r.query.get("watch") == "true"]
    assert [r.query.get("resourceVersion") for r in watches] == [start, "2"]


async def test_watch_from_a_compacted_resource_version_is_410_expired(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    old = meta(await client.create(node("n1"))).resourceVersion
    await client.create(node("n2"))
    apiserver.compact()
    # lightkube raises the ERROR event's Status as an ApiError (by default) ...
    with pytest.raises(ApiError) as expired:
        async for _ in client.watch(Node, resource_version=old):
            pass
    assert (expired.value.status.code, expired.value.status.reason) == (410, "Expired")
    assert expired.value.status.message == "too old resource version: 1 (2)"
    # ... and with on_error_retry starts over without a resourceVersion: the current state.
    watcher = Watcher(client.watch(Node, resource_version=old, on_error=on_error_retry))
    try:
        await eventually(lambda: len(watcher.seen) == 2, what=lambda: f"{watcher.seen}")
    finally:
        await watcher.close()
    assert watcher.seen == [("ADDED", "n1", "1"), ("ADDED", "n2", "2")]


async def test_watch_framing_is_one_json_event_per_chunk_with_bookmarks(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    await client.create(node("n1"))
    query = "watch=1&resourceVersion=0&allowWatchBookmarks=true"
    head, chunks = await raw_exchange(apiserver, f"/api/v1/nodes?{query}", chunks_wanted=2)
    assert head.status_code == 200
    headers = {k.decode().lower(): v.decode() for k, v in head.headers}
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "application/json"
    assert all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)
    added, mark = (json.loads(c) for c in chunks)
    assert added["type"] == "ADDED"
    assert added["object"]["metadata"]["name"] == "n1"
    assert mark["type"] == "BOOKMARK"  # every bookmark_interval (0.2 s here)
    assert (mark["object"]["kind"], mark["object"]["metadata"]) == (
        "Node",
        {"resourceVersion": "1"},
    )
    # timeoutSeconds ends the stream cleanly; the connection serves the next request.
    head, chunks = await raw_exchange(
        apiserver, "/api/v1/nodes?watch=true&resourceVersion=1&timeoutSeconds=1", "/healthz"
    )
    assert head.status_code == 200
    assert chunks == [b"ok"]


async def raw_exchange(
    apiserver: ApiServer, *targets: str, chunks_wanted: int = 0
) -> tuple[h11.Response, list[bytes]]:
    """GETs on one kept-alive connection: the last response head and its body chunks (read
    to the end of the body, or until `chunks_wanted` chunks came)."""
    host, port = apiserver.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    head: h11.Response | None = None
    chunks: list[bytes] = []
    try:
        for target in targets:
            writer.write(
                conn.send(h11.Request(method="GET", target=target, headers=[("Host", host)])) or b""
            )
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            chunks = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                    if chunks_wanted and len(chunks) >= chunks_wanted:
                        return head, chunks  # type: ignore[return-value]
                elif isinstance(event, h11.EndOfMessage):
                    break
            conn.start_next_cycle()
    finally:
        writer.close()
    assert head is not None
    return head, chunks


async def test_connections_are_kept_alive(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    await client.create(node("n1"))
    head, chunks = await raw_exchange(apiserver, "/version", "/api/v1/nodes/n1", "/readyz")
    assert head.status_code == 200
    assert b"".join(chunks) == b"ok"
    assert [r.path for r in apiserver.requests[-3:]] == ["/version", "/api/v1/nodes/n1", "/readyz"]


# -- writes: conflicts, generation, status subresource ----------------------------------


async def test_update_with_a_stale_resource_version_is_409_conflict(
    client: lightkube.AsyncClient,
) -> None:
    stale = await client.create(node("n1"))
    fresh = await client.get(Node, "n1")
    meta(fresh).labels = {"a": "1"}
    updated = await client.replace(fresh)
    assert int(meta(updated).resourceVersion or 0) > int(meta(stale).resourceVersion or 0)
    meta(stale).labels = {"a": "2"}
    with pytest.raises(ApiError) as conflict:
        await client.replace(stale)
    assert (conflict.value.status.code, conflict.value.status.reason) == (409, "Conflict")
    assert conflict.value.status.message == (
        'Operation cannot be fulfilled on nodes "n1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    meta(stale).resourceVersion = None  # no precondition: the update goes through
    assert meta(await client.replace(stale)).labels == {"a": "2"}


async def test_generation_and_the_status_subresource(
    client: lightkube.AsyncClient, raw: httpx2.AsyncClient
) -> None:
    created = await client.create(resource_slice("s", "n1"))
    assert meta(created).generation == 1
    meta(created).labels = {"only": "metadata"}
    assert meta(await client.replace(created)).generation == 1
    changed = await client.get(ResourceSlice, "s")
    assert changed.spec is not None
    changed.spec.pool.generation = 2
    assert meta(await client.replace(changed)).generation == 2

    await client.create(
        Node(
            metadata=ObjectMeta(name="n1"),
            spec=NodeSpec(),
            status=NodeStatus(capacity={"cpu": "1"}),
        )
    )
    live = (await raw.get("/api/v1/nodes/n1")).json()
    live["status"]["capacity"] = {"cpu": "8"}
    live["spec"] = {"unschedulable": True}
    main = (await raw.put("/api/v1/nodes/n1", json=live)).json()
    assert main["status"]["capacity"] == {"cpu": "1"}
    assert main["spec"]["unschedulable"]
    live = main | {"spec": {}, "status": {"capacity": {"cpu": "8"}}}
    status = (await raw.put("/api/v1/nodes/n1/status", json=live)).json()
    assert status["status"]["capacity"] == {"cpu": "8"}
    assert status["spec"]["unschedulable"]

    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c"},
        "spec": {"devices": {}},
        "status": {"allocation": {"devices": {"results": []}}},
    }
    path = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims"
    created_claim = (await raw.post(path, json=claim)).json()
    assert created_claim["status"] == {}  # PrepareForCreate drops a client's status


async def test_a_write_that_changes_nothing_keeps_the_resource_version(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    await client.create(node("n1"))
    first = await client.apply(node_status("n1", {"cpu": "2"}), "n1", field_manager="m")
    again = await client.apply(node_status("n1", {"cpu": "2"}), "n1", field_manager="m")
    assert meta(again).resourceVersion == meta(first).resourceVersion
    same = await client.replace(await client.get(Node, "n1"))
    assert meta(same).resourceVersion == meta(first).resourceVersion
    assert apiserver.store.rv == int(meta(first).resourceVersion or 0)


# -- server-side apply -------------------------------------------------------------------


async def test_server_side_apply_tracks_field_ownership_per_manager(
    client: lightkube.AsyncClient,
) -> None:
    await client.create(node("n1"))

    async def apply(
        manager: str, capacity: dict[str, str], force: bool = False
    ) -> NodeStatusResource:
        return await client.apply(
            node_status("n1", capacity), "n1", field_manager=manager, force=force
        )

    await apply("widget-supervisor", {"example.com/a": "2", "example.com/b": "1"})
    both = await apply("kubelet", {"cpu": "4"})
    assert both.status is not None
    assert both.status.capacity == {"cpu": "4", "example.com/a": "2", "example.com/b": "1"}
    entry = next(m for m in meta(both).managedFields or [] if m.manager == "widget-supervisor")
    assert (entry.operation, entry.subresource, entry.fieldsType) == ("Apply", "status", "FieldsV1")
    assert entry.fieldsV1 == {
        "f:status": {
            "f:allocatable": {"f:example.com/a": {}, "f:example.com/b": {}},
            "f:capacity": {"f:example.com/a": {}, "f:example.com/b": {}},
        }
    }

    # Leaving a key out of the next apply removes it; the other manager's key stays.
    dropped = await apply("widget-supervisor", {"example.com/b": "1"})
    assert dropped.status is not None
    assert dropped.status.capacity == {"cpu": "4", "example.com/b": "1"}
    assert dropped.status.allocatable == {"cpu": "4", "example.com/b": "1"}

    with pytest.raises(ApiError) as conflict:
        await apply("kubelet", {"cpu": "4", "example.com/b": "9"})
    status = conflict.value.status
    assert (status.code, status.reason) == (409, "Conflict")
    owner = '"widget-supervisor" with subresource "status"'
    assert status.message == (
        f"Apply failed with 2 conflicts: conflicts with {owner}:\n"
        "- .status.allocatable.example.com/b\n- .status.capacity.example.com/b"
    )
    assert status.details is not None
    assert status.details.causes is not None
    assert [(c.reason, c.field, c.message) for c in status.details.causes] == [
        ("FieldManagerConflict", ".status.allocatable.example.com/b", f"conflict with {owner}"),
        ("FieldManagerConflict", ".status.capacity.example.com/b", f"conflict with {owner}"),
    ]
    forced = await apply("kubelet", {"cpu": "4", "example.com/b": "9"}, force=True)
    assert forced.status is not None
    assert forced.status.capacity == {
        "cpu": "4",
        "example.com/b": "9",
    }
    managers = {m.manager for m in meta(forced).managedFields or []}
    assert managers == {"kubelet"}  # widget-supervisor owns nothing now; the creator never did


async def test_server_side_apply_creates_and_requires_a_field_manager(
    client: lightkube.AsyncClient, raw: httpx2.AsyncClient
) -> None:
    created = await client.apply(node("n1", pool="a"), field_manager="me")
    assert meta(created).labels == {"pool": "a"}
    answer = await raw.patch(
        "/api/v1/nodes/n1",
        content='{"apiVersion":"v1","kind":"Node"}',
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert answer.status_code == 422  # upstream: PatchOptions validation, not a 400
    assert status_of(answer)["message"] == (
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
        "is required for apply patch"
    )
    bad = await raw.patch("/api/v1/nodes/n1", content="{}", headers={"Content-Type": "text/plain"})
    assert bad.status_code == 415
    assert status_of(bad)["reason"] == "UnsupportedMediaType"


# -- failures, exact Status bodies, auth, hooks ------------------------------------------


async def test_injected_429_carries_retry_after(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    await client.create(node("n1"))
    apiserver.fail_next("GET", "/api/v1/nodes/*", 429, retry_after=2)
    with pytest.raises(ApiError) as throttled:
        await client.get(Node, "n1")
    assert (throttled.value.status.code, throttled.value.status.reason) == (429, "TooManyRequests")
    assert throttled.value.response.headers["Retry-After"] == "2"
    assert throttled.value.status.details is not None
    assert throttled.value.status.details.retryAfterSeconds == 2
    assert meta(await client.get(Node, "n1")).name == "n1"
    assert [r.status for r in apiserver.requests if r.path == "/api/v1/nodes/n1"] == [429, 200]
    apiserver.fail_next("*", "/api/v1/nodes*", 500)
    with pytest.raises(ApiError) as broken:
        _ = [n async for n in client.list(Node)]
    assert broken.value.status.reason == "InternalError"


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "expected"),
    [
        (
            "GET",
            "/api/v1/nodes/missing",
            None,
            404,
            {
                "message": 'nodes "missing" not found',
                "reason": "NotFound",
                "details": {"name": "missing", "kind": "nodes"},
            },
        ),
        (
            "DELETE",
            "/apis/resource.k8s.io/v1/resourceslices/gone",
            None,
            404,
            {
                "message": 'resourceslices.resource.k8s.io "gone" not found',
                "reason": "NotFound",
                "details": {"name": "gone", "group": "resource.k8s.io", "kind": "resourceslices"},
            },
        ),
        (
            "POST",
            "/api/v1/nodes",
            {"metadata": {"name": "n1"}},
            409,
            {
                "message": 'nodes "n1" already exists',
                "reason": "AlreadyExists",
                "details": {"name": "n1", "kind": "nodes"},
            },
        ),
        (
            "POST",
            "/api/v1/nodes",
            {"metadata": {}},
            422,
            {
                "message": 'Node "" is invalid: metadata.name: Required value: name or generateName is required',
                "reason": "Invalid",
                "details": {
                    "name": "",
                    "kind": "Node",
                    "causes": [
                        {
                            "reason": "FieldValueRequired",
                            "field": "metadata.name",
                            "message": "Required value: name or generateName is required",
                        }
                    ],
                },
            },
        ),
        (
            "GET",
            "/api/v1/widgets",
            None,
            404,
            {
                "message": "the server could not find the requested resource",
                "reason": "NotFound",
                "details": {},
            },
        ),
        (
            "POST",
            "/api/v1/nodes?dryRun=All",
            {"metadata": {"name": "n2"}},
            400,
            {
                "message": "dryRun is not supported by the API server stand-in",
                "reason": "BadRequest",
            },
        ),
    ],
    ids=[
        "not-found",
        "not-found-grouped",
        "already-exists",
        "invalid",
        "unknown-resource",
        "dry-run-refused",
    ],
)
async def test_failures_are_upstream_status_objects(
    raw: httpx2.AsyncClient,
    method: str,
    path: str,
    body: Any,
    code: int,
    expected: dict[str, Any],
) -> None:
    await raw.post("/api/v1/nodes", json={"metadata": {"name": "n1"}})
    answer = await raw.request(method, path, json=body)
    assert answer.status_code == code
    assert status_of(answer) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        **expected,
        "code": code,
    }


async def test_delete_answers_like_upstream_and_generate_name(raw: httpx2.AsyncClient) -> None:
    made = (await raw.post("/api/v1/nodes", json={"metadata": {"generateName": "node-"}})).json()
    name = made["metadata"]["name"]
    assert name.startswith("node-")
    assert len(name) == len("node-") + 5
    gone = (await raw.delete(f"/api/v1/nodes/{name}")).json()
    assert gone == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": "nodes", "uid": made["metadata"]["uid"]},
    }
    path = "/apis/resource.k8s.io/v1/resourceslices"
    await raw.post(path, json={"metadata": {"name": "s"}, "spec": {"driver": DRIVER}})
    assert (await raw.delete(f"{path}/s")).json()["kind"] == "ResourceSlice"  # the object


async def test_finalizers_json_patch_and_delete_preconditions(
    raw: httpx2.AsyncClient, apiserver: ApiServer
) -> None:
    node_path = "/api/v1/nodes/n1"
    body = {"metadata": {"name": "n1", "finalizers": ["example.com/keep"]}}
    made = (await raw.post("/api/v1/nodes", json=body)).json()
    stale = {"preconditions": {"resourceVersion": "999"}}
    refused = await raw.request("DELETE", node_path, json=stale)
    assert refused.status_code == 409
    assert status_of(refused)["message"] == (
        'Operation cannot be fulfilled on nodes "n1": Precondition failed: ResourceVersion in '
        f"precondition: 999, ResourceVersion in object meta: {made['metadata']['resourceVersion']}"
    )
    pending = (await raw.delete(node_path)).json()
    assert pending["metadata"]["deletionTimestamp"]  # kept until its finalizers are gone
    patch = [{"op": "remove", "path": "/metadata/finalizers"}]
    headers = {"Content-Type": "application/json-patch+json"}
    done = await raw.patch(node_path, content=json.dumps(patch), headers=headers)
    assert done.status_code == 200
    assert (await raw.get(node_path)).status_code == 404
    assert apiserver.objects("nodes") == []


async def test_a_token_is_required_when_set(tmp_path: Path) -> None:
    server = ApiServer(token="s3cret")
    await server.start()
    try:
        async with httpx2.AsyncClient(base_url=server.url) as http:
            denied = await http.get("/api/v1/nodes")
            assert denied.status_code == 401
            assert status_of(denied)["reason"] == "Unauthorized"
            assert (await http.get("/version")).json()["gitVersion"] == "v1.36.0"
        config = lightkube.KubeConfig.from_file(server.kubeconfig(tmp_path / "kubeconfig"))
        async with lightkube.AsyncClient(config=config) as kube:
            assert [n async for n in kube.list(Node)] == []
    finally:
        await server.stop()


async def test_put_object_seeds_state_that_clients_read(
    client: lightkube.AsyncClient, apiserver: ApiServer
) -> None:
    allocation = {
        "devices": {
            "results": [{"request": "widget", "driver": DRIVER, "pool": "n1", "device": "widget-0"}]
        }
    }
    seeded = apiserver.put_object(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "claim", "namespace": "default"},
            "spec": {"devices": {}},
            "status": {"allocation": allocation},
        }
    )
    claim = await client.get(ResourceClaim, "claim", namespace="default")
    assert meta(claim).uid == seeded["metadata"]["uid"]
    assert claim.status is not None
    assert claim.status.allocation is not None
    assert apiserver.objects("resourceclaims")[0]["status"]["allocation"] == allocation


async def test_module_runs_standalone_and_prints_its_url() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "apiserver_standin",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 15)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with httpx2.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).text == "ok"
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) in (0, -15)
