"""The ResourceSlice publisher against the API-server stand-in (real HTTP, lightkube):
generations, conflicts, throttling, slices others wrote or deleted, and deletion."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from apiserver_standin.server import ApiServer
from dra_driver.kube import make_client
from dra_driver.publisher import SlicePublisher
from tests.support import eventually

NODE, DRIVER = "node-a", "ska-sdp.org"


def devices(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "attributes": {"type": {"string": "t"}}} for n in names]


@contextlib.asynccontextmanager
async def publishing(api: ApiServer, tmp_path: Path) -> AsyncIterator[SlicePublisher]:
    client = make_client(api.kubeconfig(tmp_path / "kubeconfig"))
    writes: list[str] = []
    publisher = SlicePublisher(client, node=NODE, driver=DRIVER, on_write=writes.append)
    task = asyncio.create_task(publisher.run())
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def pool(api: ApiServer) -> list[dict[str, Any]]:
    return sorted(api.objects("resourceslices"), key=lambda s: s["metadata"]["name"])


async def in_sync(publisher: SlicePublisher) -> None:
    await asyncio.wait_for(publisher.wait_in_sync(), 10)


async def test_only_changed_resources_change_devices_and_the_generation_moves_together(
    api: ApiServer, tmp_path: Path
) -> None:
    async with publishing(api, tmp_path) as publisher:
        publisher.publish({"a": devices("a1"), "b": devices("b1")})
        await in_sync(publisher)
        first = {s["metadata"]["name"]: s for s in pool(api)}
        assert {s["spec"]["pool"]["generation"] for s in first.values()} == {1}
        publisher.publish({"a": devices("a1", "a2"), "b": devices("b1")})
        await in_sync(publisher)
        second = {s["metadata"]["name"]: s for s in pool(api)}
        assert second.keys() == first.keys(), "slices are updated in place, not replaced"
        assert {s["spec"]["pool"]["generation"] for s in second.values()} == {2}
        unchanged = [n for n in first if first[n]["spec"]["devices"] == devices("b1")]
        assert second[unchanged[0]]["spec"]["devices"] == devices("b1")
        publisher.publish({"a": devices("a1", "a2"), "b": devices("b1")})  # no change
        await in_sync(publisher)
        assert {s["metadata"]["resourceVersion"] for s in pool(api)} == {
            s["metadata"]["resourceVersion"] for s in second.values()
        }, "publishing the same devices writes nothing"


async def test_conflicts_and_throttling_are_retried(api: ApiServer, tmp_path: Path) -> None:
    async with publishing(api, tmp_path) as publisher:
        publisher.publish({"a": devices("a1")})
        await in_sync(publisher)
        api.fail_next("PUT", "/apis/resource.k8s.io/v1/resourceslices/*", 409)
        api.fail_next("PUT", "/apis/resource.k8s.io/v1/resourceslices/*", 429, retry_after=0.2)
        api.fail_next("PUT", "/apis/resource.k8s.io/v1/resourceslices/*", 500)
        publisher.publish({"a": devices("a1", "a2")})
        await eventually(lambda: [d["name"] for d in pool(api)[0]["spec"]["devices"]] ==
                         ["a1", "a2"], timeout=15, what="the update after 409, 429 and 500")  # fmt: skip
        statuses = [r.status for r in api.requests if r.method == "PUT"]
        assert statuses[:4] == [409, 429, 500, 200], statuses
        await in_sync(publisher)
        assert publisher.problem is None


async def test_slices_deleted_or_left_by_others_are_put_right(
    api: ApiServer, tmp_path: Path
) -> None:
    stray = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "left-over"},
        "spec": {"driver": DRIVER, "nodeName": NODE, "devices": devices("old"),
                 "pool": {"name": NODE, "generation": 7, "resourceSliceCount": 1}},
    }  # fmt: skip
    api.put_object(stray)
    async with publishing(api, tmp_path) as publisher:
        publisher.publish({"a": devices("a1")})
        await in_sync(publisher)
        (only,) = pool(api)
        assert only["metadata"]["name"] != "left-over", "a slice of our pool we did not write"
        assert only["spec"]["pool"]["generation"] == 8, "past the generation found"
        api.put_object({**only, "spec": {**only["spec"], "devices": devices("edited")}})
        await eventually(lambda: pool(api)[0]["spec"]["devices"] == devices("a1"),
                         what="an edited slice written back")  # fmt: skip
        await publisher.delete_all()
        assert pool(api) == []
